import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from modeling_ivt import IVTProcessor, create_processor, minilm_dir

from .conftest import TINY_IMAGE_SIZE


def test_processor_uses_the_real_uncased_bert_vocabulary(processor):
    vocabulary = (minilm_dir() / "vocab.txt").read_text().splitlines()
    assert len(vocabulary) == 30522 and processor.tokenizer.vocab_size == 30522
    ids = processor(text=["A Woman in a RED Coat"])["input_ids"][0].tolist()
    tokens = processor.tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "a", "woman", "in", "a", "red", "coat", "[SEP]"]
    assert ids[0] == vocabulary.index("[CLS]") and ids[-1] == vocabulary.index("[SEP]")


def test_text_and_images_together(processor, captions, images):
    batch = processor(text=captions, images=images)
    assert set(batch) == {"input_ids", "attention_mask", "pixel_values"}
    assert batch["input_ids"].shape == batch["attention_mask"].shape and batch["input_ids"].shape[0] == 3
    assert batch["pixel_values"].shape == (3, 3, *TINY_IMAGE_SIZE)
    assert batch["pixel_values"].dtype == torch.float32
    red = batch["pixel_values"][0]
    # mean/std 0.5: a pure (200, 30, 30) image becomes 200/255*2-1 etc.
    torch.testing.assert_close(red[:, 5, 5], torch.tensor([200, 30, 30]) / 255 * 2 - 1, atol=1e-3, rtol=0)


def test_base_processor_resizes_to_384_by_128():
    processor = create_processor()
    out = processor(images=Image.new("RGB", (50, 70)))
    assert out["pixel_values"].shape == (1, 3, 384, 128)
    assert processor.image_processor.resample == 2  # bilinear


def test_awkward_images_work(processor):
    rgba = Image.new("RGBA", (20, 40), (10, 200, 10, 0))
    gray = Image.new("L", (64, 32), 128)
    palette = Image.new("P", (30, 60))
    palette.putpalette([255, 0, 0] * 256)
    tiny = Image.new("RGB", (1, 2), (0, 0, 255))
    array = np.zeros((100, 50, 3), dtype=np.uint8)
    out = processor(images=[rgba, gray, palette, tiny, array])["pixel_values"]
    assert out.shape == (5, 3, *TINY_IMAGE_SIZE) and torch.isfinite(out).all()
    torch.testing.assert_close(out[2][:, 0, 0], torch.tensor([1.0, -1.0, -1.0]))


def test_long_captions_are_truncated_and_never_exceed_512(processor):
    caption = " ".join(["pedestrian"] * 2000)
    assert processor(text=caption)["input_ids"].shape == (1, 100)
    assert processor(text=caption, max_length=40)["input_ids"].shape == (1, 40)
    assert processor(text=caption, max_length=5000)["input_ids"].shape == (1, 512)
    with pytest.raises(ValueError, match="max_length"):
        create_processor(max_length=600)


def test_processor_needs_some_input(processor):
    with pytest.raises(ValueError, match="text=, images="):
        processor()


def test_processor_round_trip(tmp_path, processor, captions, images):
    configured = create_processor(image_size=TINY_IMAGE_SIZE, max_length=24)
    configured.save_pretrained(tmp_path)
    reloaded = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(reloaded, IVTProcessor) and reloaded.max_length == 24
    first, second = configured(text=captions, images=images), reloaded(text=captions, images=images)
    for key in first:
        torch.testing.assert_close(first[key], second[key])
