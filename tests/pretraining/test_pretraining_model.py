"""Saving and loading the pre-training model, initialising it, and carrying its encoder over to fine-tuning."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModel, BertConfig, BertForPreTraining, BertModel

from modeling_ivt import IVTForPreTraining, IVTModel
from modeling_ivt.conversion_utils import load_state_dict_file, resize_position_grid
from modeling_ivt.convert_pretraining import encoder_from_pretraining, pretraining_from_ivt
from modeling_ivt.convert_pretraining import main as convert_main
from modeling_ivt.convert_vit_bert import initialize_from_vit_and_bert
from tests.model.conftest import tiny_config
from tests.pretraining.conftest import make_collator

LOAD_WITHOUT_PACKAGE = textwrap.dedent(
    """
    import importlib.util, os, sys
    sys.path[:] = [p for p in sys.path if not os.path.isdir(os.path.join(p or ".", "modeling_ivt"))]
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in f.__module__.lower()]
    assert importlib.util.find_spec("modeling_ivt") is None, "the package must not be importable here"
    import torch
    from transformers import AutoModel, AutoModelForPreTraining
    batch = torch.load({batch!r}, weights_only=True)
    model = AutoModelForPreTraining.from_pretrained({folder!r}, trust_remote_code=True).eval()
    encoder = AutoModel.from_pretrained({folder!r}, trust_remote_code=True).eval()
    with torch.no_grad():
        out = model(batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
        mlm = model.masked_language_modeling_logits(
            batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"], out.image_last_hidden_state, None
        )
        text = encoder.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    result = {{"text_embeds": out.text_embeds, "image_embeds": out.image_embeds, "mlm_logits": mlm, "text": text}}
    torch.save({{**result, "classes": [type(model).__name__, type(encoder).__name__]}}, {result!r})
    """
)


@pytest.fixture
def batch(processor, pairs):
    return make_collator(processor, seed=0)(pairs)


def test_save_and_reload_with_trust_remote_code_in_a_fresh_process(tmp_path, pretraining_model, batch):
    folder = tmp_path / "pretrained"
    pretraining_model.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_ivt.IVTConfig",
        "AutoModel": "modeling_ivt.IVTModel",
        "AutoModelForPreTraining": "modeling_ivt_pretraining.IVTForPreTraining",
    }
    reloaded = IVTForPreTraining.from_pretrained(folder).eval()
    assert reloaded.mlm_head.decoder.weight is reloaded.ivt.text_embeddings.word_embeddings.weight
    inputs = (batch["input_ids"], batch["pixel_values"], batch["attention_mask"])
    with torch.no_grad():
        local, again = pretraining_model(*inputs), reloaded(*inputs)
        local_mlm, again_mlm = (
            model.masked_language_modeling_logits(
                batch["mlm_input_ids"], batch["attention_mask"], batch["mlm_labels"], out.image_last_hidden_state, None
            )
            for model, out in ((pretraining_model, local), (reloaded, again))
        )
    torch.testing.assert_close(again_mlm, local_mlm)
    for name in ("text_embeds", "image_embeds", "text_last_hidden_state", "image_last_hidden_state"):
        torch.testing.assert_close(getattr(again, name), getattr(local, name))

    torch.save(dict(batch), tmp_path / "batch.pt")
    script = LOAD_WITHOUT_PACKAGE.format(
        folder=str(folder), batch=str(tmp_path / "batch.pt"), result=str(tmp_path / "result.pt")
    )
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path, timeout=300)
    remote = torch.load(tmp_path / "result.pt", weights_only=True)
    assert remote["classes"] == ["IVTForPreTraining", "IVTModel"]
    torch.testing.assert_close(remote["text_embeds"], local.text_embeds)
    torch.testing.assert_close(remote["image_embeds"], local.image_embeds)
    torch.testing.assert_close(remote["mlm_logits"], local_mlm)
    with torch.no_grad():
        text = pretraining_model.ivt.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
    torch.testing.assert_close(remote["text"], text)


def test_same_stride_encoder_loads_into_ivt_model_directly(tmp_path, pretraining_model, batch):
    pretraining_model.save_pretrained(tmp_path / "pretrained")
    encoder = AutoModel.from_pretrained(tmp_path / "pretrained").eval()
    assert type(encoder) is IVTModel
    for key, value in pretraining_model.ivt.state_dict().items():
        torch.testing.assert_close(encoder.state_dict()[key], value, msg=key)


def test_encoder_moves_to_the_fine_tuning_stride_with_resized_grid_embeddings(
    tmp_path, pretraining_model, processor, capsys, batch
):
    folder = tmp_path / "pretrained"
    pretraining_model.save_pretrained(folder)
    processor.save_pretrained(folder)
    old = pretraining_model.ivt.state_dict()
    assert pretraining_model.config.patch_grid == (3, 2)

    encoder, report = encoder_from_pretraining(folder, patch_stride=8)
    assert encoder.config.patch_stride == 8 and encoder.config.patch_grid == (5, 3)
    new = encoder.state_dict()
    for key in ("image_embeddings.position_embedding", "image_embeddings.type_embedding"):
        assert new[key].shape == (1, 16, 32)
        torch.testing.assert_close(new[key], resize_position_grid(old[key], (3, 2), (5, 3)))
        torch.testing.assert_close(new[key][:, 0], old[key][:, 0])  # [CLS] entry kept
    for key, value in old.items():
        if "position_embedding" not in key and "type_embedding" not in key:
            torch.testing.assert_close(new[key], value, msg=key)
    assert report.not_loaded == [] and len(report.loaded) == len(old)
    assert any("type_embedding resized from grid (3, 2) (stride 16) to (5, 3) (stride 8)" in n for n in report.notes)
    assert not any(key.startswith(("fusion_encoder", "mlm_head", "itm_head")) for key in report.loaded)
    with torch.no_grad():
        assert encoder.eval().get_image_features(batch["pixel_values"]).pooler_output.shape == (6, 32)

    convert_main([str(folder), "--output", str(tmp_path / "finetune-init"), "--patch-stride", "8"])
    printed = capsys.readouterr().out
    assert "position_embedding resized from grid (3, 2) (stride 16) to (5, 3) (stride 8)" in printed
    saved = IVTModel.from_pretrained(tmp_path / "finetune-init")
    assert saved.config.patch_stride == 8
    config = json.loads((tmp_path / "finetune-init" / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_ivt.IVTConfig",
        "AutoModel": "modeling_ivt.IVTModel",
        "AutoModelForZeroShotImageClassification": "modeling_ivt.IVTModel",
    }
    torch.testing.assert_close(
        saved.state_dict()["image_embeddings.type_embedding"], new["image_embeddings.type_embedding"]
    )


def test_encoder_refuses_a_config_change_that_does_not_fit(pretraining_model):
    with pytest.raises(
        ValueError,
        match=r"does not fit the new config:\n  image_embeddings.cls_token: pre-trained \(1, 1, 32\), new config \(1, 1, 64\)",
    ):
        encoder_from_pretraining(pretraining_model, hidden_size=64, num_attention_heads=4)


def test_fusion_layers_and_mlm_head_start_from_bert_as_released(tmp_path):
    """Fusion layer i from BERT layer i and the MLM head from cls.predictions, read from the Hub's gamma/beta .bin."""
    torch.manual_seed(0)
    config = BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)
    bert = BertForPreTraining(config)
    with torch.no_grad():
        for parameter in bert.parameters():
            parameter.normal_()
    source = bert.state_dict()
    legacy = {
        key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
        for key, value in source.items()
        if not key.startswith("cls.predictions.decoder.")
    }
    torch.save(legacy, tmp_path / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    ivt, _ = initialize_from_vit_and_bert(tiny_config(patch_stride=16), None, load_state_dict_file(tmp_path))
    model, report = pretraining_from_ivt(ivt, load_state_dict_file(tmp_path), fusion_num_hidden_layers=2)
    fused = model.state_dict()
    for index in (0, 1):
        prefix, layer = f"fusion_encoder.layers.{index}.", f"bert.encoder.layer.{index}."
        for target, name in (
            ("self_attn.q_proj.weight", "attention.self.query.weight"),
            ("self_attn.v_proj.bias", "attention.self.value.bias"),
            ("self_attn.out_proj.weight", "attention.output.dense.weight"),
            ("self_attn_layer_norm.weight", "attention.output.LayerNorm.weight"),
            ("self_attn_layer_norm.bias", "attention.output.LayerNorm.bias"),
            ("fc1.weight", "intermediate.dense.weight"),
            ("fc2.bias", "output.dense.bias"),
            ("final_layer_norm.weight", "output.LayerNorm.weight"),
        ):
            torch.testing.assert_close(fused[prefix + target], source[layer + name])
    for target, name in (
        ("mlm_head.dense.weight", "cls.predictions.transform.dense.weight"),
        ("mlm_head.layer_norm.weight", "cls.predictions.transform.LayerNorm.weight"),
        ("mlm_head.layer_norm.bias", "cls.predictions.transform.LayerNorm.bias"),
        ("mlm_head.decoder.bias", "cls.predictions.bias"),
        ("mlm_head.decoder.weight", "bert.embeddings.word_embeddings.weight"),
    ):
        torch.testing.assert_close(fused[target], source[name])
    random_fusion = {key.split(".", 3)[3] for key in report.not_loaded if key.startswith("fusion_encoder.")}
    assert random_fusion == {f"cross_attn{part}" for part in (
        ".q_proj.weight", ".q_proj.bias", ".k_proj.weight", ".k_proj.bias", ".v_proj.weight", ".v_proj.bias",
        ".out_proj.weight", ".out_proj.bias", "_layer_norm.weight", "_layer_norm.bias")}
    assert not [key for key in report.not_loaded if key.startswith(("mlm_head.", "ivt."))]
    for key, value in ivt.state_dict().items():
        torch.testing.assert_close(fused["ivt." + key], value)

    with pytest.raises(ValueError, match=r"\(3 layers\) lacks 16 tensor.*encoder\.layer\.3\.attention\.self\.query\.weight"):
        pretraining_from_ivt(ivt, source, fusion_num_hidden_layers=4)
    bare = BertModel(config)
    with pytest.raises(ValueError, match="lacks 5 tensor.*: cls.predictions.transform.dense.weight"):
        pretraining_from_ivt(ivt, bare.state_dict(), fusion_num_hidden_layers=2)
