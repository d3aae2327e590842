import logging

import pytest
import torch

from modeling_ivt import inference


def test_bf16_on_a_cpu_without_native_bf16_warns(monkeypatch, caplog):
    monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: False)
    with caplog.at_level(logging.WARNING, logger=inference.__name__):
        assert inference.inference_dtype(True, "cpu") == torch.bfloat16
    assert "lacks native bf16" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=inference.__name__):
        assert inference.inference_dtype(False, "cpu") == torch.float32
        monkeypatch.setattr(inference, "cpu_has_native_bf16", lambda: True)
        assert inference.inference_dtype(True, "cpu") == torch.bfloat16
    assert caplog.text == ""


def test_cpu_flags_are_read(tmp_path):
    flags = inference.cpu_has_native_bf16()
    if flags is None:
        pytest.skip("no /proc/cpuinfo on this system")
    with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
        text = cpuinfo.read()
    assert flags == any(f" {flag}" in text for flag in inference.NATIVE_BF16_CPU_FLAGS)


def test_bf16_weights_run_in_bf16_close_to_fp32(model, processor, captions, images):
    def embed(ivt):
        with torch.inference_mode():
            text = ivt.get_text_features(**processor(text=captions)).pooler_output
            image = ivt.get_image_features(**processor(images=images)).pooler_output
        return text, image

    fp32 = embed(model.eval())
    bf16 = embed(model.to(torch.bfloat16))
    for reference, low_precision in zip(fp32, bf16, strict=True):
        assert low_precision.dtype == torch.bfloat16
        cosine = torch.nn.functional.cosine_similarity(reference, low_precision.float(), dim=-1)
        assert cosine.min() > 0.99
