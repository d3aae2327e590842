import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from transformers import AutoModel, AutoProcessor

from modeling_ivt.convert_irra_checkpoint import convert_irra_checkpoint, convert_irra_state_dict, main

from .irra_reference import float_state_dict, irra_image_features, irra_text_features, random_irra_checkpoint

CAPTIONS = [
    "A woman in a RED coat, black trousers and white sneakers; she carries a bag.",
    "the man wears a grey hoodie",
    " ".join(["a tall man with a long dark overcoat"] * 20),
]


def _images():
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 256, (160, 70, 3), dtype=np.uint8)), Image.new("L", (40, 100), 90)]


@pytest.mark.parametrize("stride, ddp", [(16, True), (12, False)])
def test_converted_checkpoint_gives_irra_s_embeddings(tmp_path, stride, ddp):
    state_dict = random_irra_checkpoint(vision_width=128, text_width=64, depth=2, embed=32, stride=stride, ddp=ddp)
    path = tmp_path / "best.pth"
    torch.save({"model": state_dict, "optimizer": {"state": {}}, "epoch": 60, "num_classes": 11}, path)

    model, ignored = convert_irra_checkpoint(path, tmp_path / "out", source="https://example.org/irra.zip", license="mit")
    vision, text = model.config.vision_config, model.config.text_config
    assert (vision.patch_stride, vision.hidden_size, vision.num_attention_heads, vision.num_hidden_layers) == (
        stride, 128, 2, 2,
    )
    assert vision.patch_grid == {16: (24, 8), 12: (31, 10)}[stride] and tuple(vision.image_size) == (384, 128)
    assert (text.hidden_size, text.num_attention_heads, text.vocab_size, text.max_position_embeddings) == (64, 1, 49408, 77)
    assert model.config.projection_dim == 32
    prefix = "module." if ddp else ""
    assert {key.removeprefix(prefix).split(".")[0] for key in ignored} == {
        "classifier", "cross_attn", "cross_modal_transformer", "ln_pre_t", "ln_pre_i", "ln_post", "mlm_head",
    }

    folder = tmp_path / "out"
    with safe_open(folder / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float32}
    card = (folder / "README.md").read_text()
    assert "best.pth" in card and "https://example.org/irra.zip" in card and "license: mit" in card
    assert "mlm_head" in card

    loaded = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    batch = processor(text=CAPTIONS, images=_images())
    raw = float_state_dict(state_dict)
    with torch.no_grad():
        out = loaded(**batch)
        reference_image = irra_image_features(raw, batch["pixel_values"], stride)
        reference_text = irra_text_features(raw, batch["input_ids"])
    torch.testing.assert_close(out.vision_model_output.pooler_output, reference_image, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.text_model_output.pooler_output, reference_text, atol=1e-4, rtol=1e-4)


def test_missing_misshaped_and_foreign_tensors_are_reported():
    state_dict = random_irra_checkpoint(depth=2)
    del state_dict["base_model.transformer.resblocks.1.mlp.c_proj.bias"]
    state_dict["base_model.visual.proj"] = torch.zeros(64, 31, dtype=torch.float16)
    with pytest.raises(ValueError) as error:
        convert_irra_state_dict(state_dict)
    message = str(error.value)
    assert "\n" not in message
    assert "missing base_model.transformer.resblocks.1.mlp.c_proj.bias (64,)" in message
    assert "base_model.text_projection has shape (64, 32), expected (64, 31)" in message

    fork = random_irra_checkpoint(depth=1)
    fork["visul_emb_layer.fc.weight"] = torch.zeros(32, 64)
    with pytest.raises(ValueError, match="1 tensors are outside IRRA's layout \\(visul_emb_layer.fc.weight\\)"):
        convert_irra_state_dict(fork)
    _, ignored = convert_irra_state_dict(fork, allow_unknown_modules=True)
    assert "visul_emb_layer.fc.weight" in ignored

    with pytest.raises(KeyError, match="base_model.visual.conv1.weight"):
        convert_irra_state_dict({"encoder_vl.cls_token": torch.zeros(1)})
    odd_grid = random_irra_checkpoint(depth=1)
    odd_grid["base_model.visual.positional_embedding"] = torch.zeros(100, 64)
    with pytest.raises(ValueError, match="100 positions, which matches no patch stride"):
        convert_irra_state_dict(odd_grid)


def test_cli_keeps_fp16_on_request(tmp_path, capsys):
    good = tmp_path / "best.pth"
    torch.save({"model": random_irra_checkpoint(depth=1, ddp=True), "epoch": 3}, good)
    main(["--checkpoint", str(good), "--output", str(tmp_path / "fp16"), "--dtype", "float16"])
    printed = capsys.readouterr().out
    assert "stride 16, grid 24 x 8" in printed and "in float16" in printed
    assert "cross_modal_transformer (2)" in printed and "classifier (2)" in printed
    with safe_open(tmp_path / "fp16" / "model.safetensors", "pt") as weights:
        assert {weights.get_tensor(name).dtype for name in weights.keys()} == {torch.float16}
    assert json.loads((tmp_path / "fp16" / "config.json").read_text())["dtype"] == "float16"
    assert AutoModel.from_pretrained(tmp_path / "fp16").dtype == torch.float16

    for args, message in [
        (["--checkpoint", str(tmp_path / "absent.pth"), "--output", str(tmp_path / "o")], "absent.pth: no such checkpoint file"),
        (["--checkpoint", str(good), "--output", str(tmp_path / "fp16")], "already exists"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(args)
        assert message in exit_info.value.code and "\n" not in exit_info.value.code
    assert not (tmp_path / "o").exists()


def test_cli_reports_a_broken_checkpoint_in_one_line(tmp_path):
    broken = random_irra_checkpoint(depth=1)
    del broken["base_model.visual.ln_post.bias"]
    torch.save({"model": broken}, tmp_path / "broken.pth")
    result = subprocess.run(
        [sys.executable, "-m", "modeling_ivt.convert_irra_checkpoint", "--checkpoint", str(tmp_path / "broken.pth"),
         "--output", str(tmp_path / "out")],
        capture_output=True, text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{tmp_path / 'broken.pth'}: cannot convert the checkpoint: missing base_model.visual.ln_post.bias (64,)"
    ]
    assert not (tmp_path / "out").exists()


def test_docs_python_example_runs_on_a_converted_folder(tmp_path):
    import re
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs" / "irra.md"
    example = re.search(r"## Use it from Python.*?```python\n(.*?)```", docs.read_text(encoding="utf-8"), re.DOTALL).group(1)
    checkpoint = tmp_path / "best.pth"
    torch.save({"model": random_irra_checkpoint(depth=1)}, checkpoint)
    folder = re.search(r'from_pretrained\("([^"]+)"', example).group(1)
    convert_irra_checkpoint(checkpoint, tmp_path / folder)
    _images()[0].save(tmp_path / "a.jpg")
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"tensor\(\[\[-?\d\.\d+\]\]\)", result.stdout)
