"""`python -m modeling_ivt.export_onnx` writes two graphs that onnxruntime runs like PyTorch at any batch and length."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

onnxruntime = pytest.importorskip("onnxruntime", reason='the ONNX test needs the extra: pip install -e ".[onnx]"')

from modeling_ivt.export_onnx import IMAGE_FILE, TEXT_FILE, main  # noqa: E402

DOCS = Path(__file__).resolve().parents[2] / "docs" / "onnx.md"


@pytest.mark.parametrize("family", ["ivt", "irra"])
def test_both_towers_export_with_dynamic_batch_and_length(tmp_path, family, request, captions, images, capsys):
    prefix = "" if family == "ivt" else "irra_"
    model, processor = request.getfixturevalue(f"{prefix}model"), request.getfixturevalue(f"{prefix}processor")
    folder = tmp_path / "ivt"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    output = tmp_path / "outputs" / "ivt-onnx"

    assert main(["--model", str(folder), "--output", str(output)]) == 0
    report = json.loads((output / "onnx_export.json").read_text())
    assert set(report["graphs"]) == {IMAGE_FILE, TEXT_FILE}

    image_session = onnxruntime.InferenceSession(str(output / IMAGE_FILE), providers=["CPUExecutionProvider"])
    text_session = onnxruntime.InferenceSession(str(output / TEXT_FILE), providers=["CPUExecutionProvider"])
    assert [i.name for i in text_session.get_inputs()] == ["input_ids", "attention_mask"]
    assert all(isinstance(dim, str) for dim in text_session.get_inputs()[0].shape), "batch and length are dynamic"
    assert isinstance(image_session.get_inputs()[0].shape[0], str)

    from transformers import AutoProcessor

    exported_processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    for batch in (captions[:1], captions, captions + ["a person " * 60]):
        text = exported_processor(text=batch, padding=True, return_tensors="np")
        (onnx_embeds,) = text_session.run(None, {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"]})
        with torch.no_grad():
            expected = model(**processor(text=batch, padding=True)).text_embeds
        assert (torch.from_numpy(onnx_embeds) - expected).abs().max() <= 1e-4
    for batch in (images[:1], images * 3):
        pixel_values = exported_processor(images=batch, return_tensors="np")["pixel_values"]
        (onnx_embeds,) = image_session.run(None, {"pixel_values": pixel_values})
        with torch.no_grad():
            expected = model(**processor(images=batch)).image_embeds
        assert (torch.from_numpy(onnx_embeds) - expected).abs().max() <= 1e-4

    assert main(["--model", str(folder), "--output", str(output)]) == 2
    assert "exists: pass --overwrite" in capsys.readouterr().err
    if family == "irra":
        return

    example = re.search(r"## Use.*?```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.DOTALL).group(1)
    (tmp_path / "gallery").mkdir()
    for path, image in zip(re.findall(r'"(gallery/[^"]+)"', example), images, strict=False):
        image.save(tmp_path / path)
    result = subprocess.run([sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert sorted(re.findall(r"\d+", result.stdout)) == ["0", "1"]
