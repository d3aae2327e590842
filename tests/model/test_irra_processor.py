import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, CLIPTokenizer

from modeling_ivt import IRRAImageProcessor, clip_vocabulary_file, create_irra_processor

from .clip_tokenizer_reference import ReferenceTokenizer
from .conftest import TINY_IRRA_IMAGE_SIZE

AWKWARD_CAPTIONS = [
    "A WOMAN in a RED Coat, Black Trousers and WHITE sneakers.",
    "The man\twears a blue\t\tshirt;\n\nhe carries  a   backpack.",
    "Une femme très élégante: café-au-lait jacket, naïve Zoë's crème scarf, Ångström-grey shoes.",
    "穿着红色外套的女人，背着一个黑色的包。 She is walking 向左.",
    "She&#39;s wearing &amp;quot;light&amp;quot; jeans &amp; a “curly-quoted” top… 👟 size 42",
    "he's wearing a t-shirt, they're 2 friends; it'll rain, we've 3 bags, i'd say 100% cotton",
    " ".join(f"pedestrian{i} wears item{i % 17} and colour{i % 5}" for i in range(80)),
    "",
    "   ",
    "a <|mask|> in a coat",
]


@pytest.fixture(scope="module")
def reference():
    return ReferenceTokenizer(clip_vocabulary_file())


def test_vocabulary_layout(irra_processor):
    tokenizer = irra_processor.tokenizer
    assert isinstance(tokenizer, CLIPTokenizer) and len(tokenizer) == 49408
    assert (tokenizer.mask_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (49405, 49406, 49407)
    assert tokenizer.convert_ids_to_tokens([0, 255, 256, 511, 512]) == ["!", "Ń", "!</w>", "Ń</w>", "in"]


@pytest.mark.parametrize("caption", AWKWARD_CAPTIONS)
def test_ids_equal_an_independent_transcription_of_clip_tokenization(irra_processor, reference, caption):
    ids = irra_processor(text=[caption])["input_ids"][0].tolist()
    assert ids == reference.encode(caption)


def test_fixed_length_padding_and_truncation(irra_processor, reference):
    long_caption = AWKWARD_CAPTIONS[6]
    batch = irra_processor(text=["a man", long_caption])
    assert batch["input_ids"].shape == (2, 77)
    short, long = batch["input_ids"].tolist()
    assert short[:4] == [49406, 320, 786, 49407] and short[4:] == [0] * 73
    assert batch["attention_mask"][0].tolist() == [1] * 4 + [0] * 73
    full = reference.encode(long_caption, length=1000)
    assert long == full[:76] + [49407] and full[76] != 49407
    assert batch["attention_mask"][1].min() == 1


def test_a_2000_word_caption_and_an_empty_one(irra_processor, irra_model):
    caption = " ".join(["a tall man in a long dark overcoat"] * 250)
    batch = irra_processor(text=[caption, ""])
    assert batch["input_ids"].shape == (2, 77) and batch["input_ids"][:, -1].tolist() == [49407, 0]
    assert batch["input_ids"][1, :2].tolist() == [49406, 49407]
    with torch.no_grad():
        embeds = irra_model.get_text_features(**batch).pooler_output
    assert torch.isfinite(embeds).all()


def test_longest_padding_is_the_same_ids_trimmed(irra_processor):
    captions = AWKWARD_CAPTIONS[:3]
    fixed = irra_processor(text=captions)["input_ids"]
    longest = irra_processor(text=captions, padding=True)["input_ids"]
    assert longest.shape[1] < 77
    assert torch.equal(fixed[:, : longest.shape[1]], longest) and fixed[:, longest.shape[1] :].eq(0).all()


def reference_pixels(image: Image.Image, size) -> torch.Tensor:
    """IRRA's test transform: PIL RGB conversion, PIL bilinear resize, /255, CLIP mean/std."""
    height, width = size
    array = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    mean = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
    std = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
    return torch.from_numpy(((array - mean) / std).transpose(2, 0, 1))


def awkward_images():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (150, 61, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 256, (90, 40, 4), dtype=np.uint8), "RGBA")
    return {
        "photo": photo,
        "grayscale": photo.convert("L"),
        "rgba": rgba,
        "palette": photo.convert("P", palette=Image.ADAPTIVE, colors=16),
        "tiny": Image.new("RGB", (1, 2), (250, 10, 99)),
        "large": photo.resize((700, 1800)),
    }


@pytest.mark.parametrize("name", list(awkward_images()))
def test_images_are_preprocessed_as_irra(irra_processor, name):
    image = awkward_images()[name]
    pixels = irra_processor(images=[image])["pixel_values"][0]
    assert pixels.shape == (3, *TINY_IRRA_IMAGE_SIZE) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels, reference_pixels(image, TINY_IRRA_IMAGE_SIZE), atol=1e-5, rtol=0)


def test_default_processor_is_384_by_128_bilinear_with_clip_statistics():
    processor = create_irra_processor()
    image_processor = processor.image_processor
    assert isinstance(image_processor, IRRAImageProcessor) and image_processor.resample == Image.BILINEAR
    assert dict(image_processor.size) == {"height": 384, "width": 128} and processor.max_length == 77
    image = awkward_images()["photo"]
    torch.testing.assert_close(
        processor(images=image)["pixel_values"][0], reference_pixels(image, (384, 128)), atol=1e-5, rtol=0
    )


def test_processor_round_trips_through_auto_processor(irra_processor, tmp_path):
    import modeling_ivt  # noqa: F401  (registers "irra")

    irra_processor.save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "irra"}')
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is type(irra_processor) and isinstance(loaded.image_processor, IRRAImageProcessor)
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(loaded(text=AWKWARD_CAPTIONS)[key], irra_processor(text=AWKWARD_CAPTIONS)[key])
    image = awkward_images()["rgba"]
    assert torch.equal(loaded(images=image)["pixel_values"], irra_processor(images=image)["pixel_values"])


def test_bad_calls_are_refused(irra_processor):
    with pytest.raises(ValueError, match="needs text=, images= or both"):
        irra_processor()
    with pytest.raises(TypeError, match="unexpected arguments: truncation_side"):
        irra_processor(text=["a man"], truncation_side="left")
