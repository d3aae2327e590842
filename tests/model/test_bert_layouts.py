"""BERT initialises the IVT text side fully in every layout it is published in."""

import itertools
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, BertForMaskedLM, BertForPreTraining, BertModel

from modeling_ivt import IVTConfig
from modeling_ivt.conversion_utils import load_state_dict_file
from modeling_ivt.convert_vit_bert import initialize_from_vit_and_bert

DEPTH = 2
CLASSES = {"BertModel": BertModel, "BertForMaskedLM": BertForMaskedLM, "BertForPreTraining": BertForPreTraining}


def _legacy_names(state_dict: dict) -> dict:
    """The original release's LayerNorm names (`gamma` / `beta`), as the Hub's bert-base-uncased files have them."""
    return {
        re.sub(r"LayerNorm\.weight$", "LayerNorm.gamma", re.sub(r"LayerNorm\.bias$", "LayerNorm.beta", key)): value
        for key, value in state_dict.items()
    }


@pytest.fixture(scope="module")
def bert_checkpoints(tmp_path_factory):
    """
    One BERT saved by each class (its own key layout), then rewritten in each LayerNorm naming and each file format:
    folder name -> (class, naming, format). Every parameter is random, LayerNorms included, so a tensor left at its
    init cannot pass for a loaded one.
    """
    root = tmp_path_factory.mktemp("berts")
    config = BertConfig(hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64, vocab_size=30522)
    torch.manual_seed(0)
    source = BertForPreTraining(config)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_()
    for name, cls in CLASSES.items():
        model = cls(config) if cls is not BertModel else BertModel(config)
        model.load_state_dict(
            source.bert.state_dict() if cls is BertModel else source.state_dict(), strict=cls is not BertForMaskedLM
        )
        model.save_pretrained(root / name)
    folders = {}
    for name, naming, file_format in itertools.product(CLASSES, ("weight_bias", "gamma_beta"), ("safetensors", "bin")):
        state_dict = load_file(root / name / "model.safetensors")
        if naming == "gamma_beta":
            state_dict = _legacy_names(state_dict)
        folder = root / f"{name}-{naming}-{file_format}"
        folder.mkdir()
        if file_format == "safetensors":
            save_file(state_dict, folder / "model.safetensors")
        else:
            torch.save(state_dict, folder / "pytorch_model.bin", _use_new_zipfile_serialization=False)
        folders[folder.name] = folder
    return source.bert, folders


LAYOUTS = [f"{c}-{n}-{f}" for c, n, f in itertools.product(CLASSES, ("weight_bias", "gamma_beta"), ("safetensors", "bin"))]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_text_tensor_loads_from_each_bert_layout(bert_checkpoints, layout):
    bert, folders = bert_checkpoints
    state_dict = load_state_dict_file(folders[layout])
    config = IVTConfig(hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64)
    model, report = initialize_from_vit_and_bert(config, None, state_dict)

    embeddings, source = model.text_embeddings, bert.embeddings
    torch.testing.assert_close(embeddings.word_embeddings.weight, source.word_embeddings.weight)
    torch.testing.assert_close(embeddings.position_embeddings.weight, source.position_embeddings.weight)
    torch.testing.assert_close(embeddings.token_type_embeddings.weight, source.token_type_embeddings.weight)
    torch.testing.assert_close(embeddings.layer_norm.weight, source.LayerNorm.weight)
    torch.testing.assert_close(embeddings.layer_norm.bias, source.LayerNorm.bias)
    for index in range(DEPTH):
        text_mlp, layer = model.encoder.layers[index].text_mlp, bert.encoder.layer[index]
        torch.testing.assert_close(text_mlp.fc1.weight, layer.intermediate.dense.weight)
        torch.testing.assert_close(text_mlp.fc1.bias, layer.intermediate.dense.bias)
        torch.testing.assert_close(text_mlp.fc2.weight, layer.output.dense.weight)
        torch.testing.assert_close(text_mlp.fc2.bias, layer.output.dense.bias)
    assert len(report.loaded) == 5 + 4 * DEPTH and set(report.loaded.values()) == {"bert"}
    assert not [key for key in report.not_loaded if key.startswith("text_") or ".text_mlp." in key]


def test_a_tensor_the_bert_lacks_is_an_error_naming_it(bert_checkpoints, tmp_path):
    _, folders = bert_checkpoints
    state_dict = load_state_dict_file(folders["BertForPreTraining-gamma_beta-bin"])
    del state_dict["bert.embeddings.LayerNorm.gamma"]
    del state_dict["bert.encoder.layer.1.output.dense.bias"]
    config = IVTConfig(hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ValueError, match="lacks 2 tensor") as error:
        initialize_from_vit_and_bert(config, None, state_dict)
    assert "embeddings.LayerNorm.weight" in str(error.value)
    assert "encoder.layer.1.output.dense.bias" in str(error.value)

    deeper = IVTConfig(hidden_size=32, num_hidden_layers=DEPTH + 1, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ValueError, match=r"\(2 layers\) lacks 4 tensor.*encoder\.layer\.2\.intermediate\.dense\.weight"):
        initialize_from_vit_and_bert(deeper, None, load_state_dict_file(folders["BertModel-weight_bias-safetensors"]))


def test_a_deeper_bert_reports_its_unused_layers(bert_checkpoints):
    _, folders = bert_checkpoints
    shallow = IVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    _, report = initialize_from_vit_and_bert(shallow, None, load_state_dict_file(folders["BertForMaskedLM-gamma_beta-bin"]))
    assert report.unused == ["bert layers 1..1 (deeper than the IVT's 1)"]


def test_shared_from_bert_maps_the_post_norm_attention_and_layer_norms_into_the_pre_norm_encoder(bert_checkpoints):
    bert, folders = bert_checkpoints
    state_dict = load_state_dict_file(folders["BertForMaskedLM-gamma_beta-bin"])
    config = IVTConfig(hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=2, intermediate_size=64)
    model, report = initialize_from_vit_and_bert(config, None, state_dict, shared_from_bert=True)

    for index in range(DEPTH):
        ivt_layer, layer = model.encoder.layers[index], bert.encoder.layer[index]
        attention = layer.attention.self
        for kind in ("weight", "bias"):
            parts = [getattr(getattr(attention, name), kind) for name in ("query", "key", "value")]
            torch.testing.assert_close(getattr(ivt_layer.self_attn.qkv, kind), torch.cat(parts))
            torch.testing.assert_close(
                getattr(ivt_layer.self_attn.out_proj, kind), getattr(layer.attention.output.dense, kind)
            )
            torch.testing.assert_close(
                getattr(ivt_layer.layer_norm2, kind), getattr(layer.attention.output.LayerNorm, kind)
            )
            next_norm = model.encoder.layers[index + 1].layer_norm1 if index + 1 < DEPTH else model.final_layer_norm
            torch.testing.assert_close(getattr(next_norm, kind), getattr(layer.output.LayerNorm, kind))
    first_norm = model.encoder.layers[0].layer_norm1
    torch.testing.assert_close(first_norm.weight, torch.ones(32))
    torch.testing.assert_close(first_norm.bias, torch.zeros(32))
    assert len(report.loaded) == 5 + 4 * DEPTH + 8 * DEPTH and set(report.loaded.values()) == {"bert"}

    with pytest.raises(ValueError, match="without a ViT"):
        initialize_from_vit_and_bert(config, {"cls_token": torch.zeros(1)}, state_dict, shared_from_bert=True)
