"""MLA text levels, the MLA batch layout and the train augmentation."""

import inspect
import random

import pytest
import torch
from PIL import Image

from training.augmentation import TrainAugmentation, random_erasing
from training.ivt_training import IVTTrainingCollator
from training.text_levels import (
    attribute_phrases_from_caption,
    chunk_candidates,
    phrase_candidates,
    phrase_level,
    word_level,
)

CAPTION = "A Woman with long hair, wearing a red shirt and blue jeans. She carries a black bag, and white shoes."


def test_phrase_candidates_follow_the_released_rule():
    candidates = phrase_candidates(CAPTION)
    # sentence 1: chunks "a woman with long hair" | " wearing a red shirt and blue jeans" -> longest, rest
    # sentence 2: " she carries a black bag" | " and white shoes" -> longest, rest; the empty tail is dropped
    assert candidates == [
        "wearing a red shirt and blue jeans",
        "a woman with long hair",
        "she carries a black bag",
        "and white shoes",
    ]
    assert all(text == text.lower() for text in candidates)
    assert phrase_level(CAPTION, random.Random(0)) in candidates
    assert phrase_level("Hi.", random.Random(0)) == "hi."


def test_the_length_test_comes_before_stripping_and_only_spaces_are_stripped():
    # " a hat" has 6 characters as it stands: kept, then stripped to "a hat" (5 characters)
    assert phrase_candidates("A tall woman in a long red dress, a hat.") == ["a tall woman in a long red dress", "a hat"]
    # the re-joined rest ", grey trousers, " loses its end commas only where they are at the very end: the trailing
    # space keeps the last one, and stripping spaces afterwards leaves it
    assert phrase_candidates("A man with a backpack, grey trousers, .") == ["a man with a backpack", "grey trousers,"]
    # the rest re-joined around the longest chunk keeps its inner comma
    assert phrase_candidates("red cap, a man in a long black coat, blue jeans") == [
        "a man in a long black coat",
        "red cap, blue jeans",
    ]
    # end periods, then brackets are stripped, then the split at "." (here the period inside the bracket); " a cap"
    # has 6 characters as it stands, while " bag" (4) is dropped and " flats" (6) kept
    assert chunk_candidates("[A woman wearing a white top, black shorts, and sandals, a cap.]") == [
        "a woman wearing a white top",
        "black shorts",
        "and sandals",
        "a cap",
    ]
    assert chunk_candidates("A girl in a pink skirt, bag, flats.") == ["a girl in a pink skirt", "flats"]


def test_word_level_uses_attribute_phrases_or_the_chunker():
    attributes = ["red shirt", "blue jeans", "black bag", "white shoes"]
    rng = random.Random(1)
    for cap, counts in ((None, {1, 2, 3, 4}), (3, {1, 2, 3})):
        seen_counts = set()
        for _ in range(100):
            text = word_level(CAPTION, attributes, rng, max_phrases=cap, mode="attributes")
            parts = text.split(", ")
            assert set(parts) <= set(attributes) and len(parts) == len(set(parts))
            seen_counts.add(len(parts))
        assert seen_counts == counts  # released: k uniform in 1..the number of phrases

    phrases = attribute_phrases_from_caption(CAPTION)
    assert {"long hair", "red shirt", "blue jeans", "black bag", "white shoes"} <= set(phrases)
    text = word_level(CAPTION, [], random.Random(2), max_phrases=2, mode="attributes")
    assert set(text.split(", ")) <= set(phrases)

    chunk = word_level(CAPTION, attributes, random.Random(3), max_phrases=3, mode="chunk")
    assert chunk in chunk_candidates(CAPTION)


def test_collator_concatenates_levels_and_pads_each_level_separately():
    from modeling_ivt import create_processor

    tokenizer = create_processor().tokenizer
    items = [
        {
            "pixel_values": torch.full((3, 3, 8, 4), float(i)),
            "texts": [CAPTION, "red shirt and blue jeans", "bag"],
            "person_id": pid,
        }
        for i, pid in enumerate([5, 9])
    ]
    batch = IVTTrainingCollator(tokenizer, max_length=64)(items)
    assert batch["person_ids"].tolist() == [5, 9, 5, 9, 5, 9]
    assert batch["pixel_values"].shape == (6, 3, 8, 4)
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [0, 1, 0, 1, 0, 1]
    lengths = [level["input_ids"].shape for level in batch["text_levels"]]
    assert lengths[0][0] == 2 and lengths[0][1] > lengths[1][1] > lengths[2][1] == 3  # [CLS] bag [SEP]


def test_augmentation_is_a_function_of_the_generator_and_differs_between_views():
    image = Image.linear_gradient("L").convert("RGB").resize((40, 100))
    augmentation = TrainAugmentation((48, 16), pad=3)
    first = augmentation(image, torch.Generator().manual_seed(4))
    again = augmentation(image, torch.Generator().manual_seed(4))
    assert first.shape == (3, 48, 16)
    torch.testing.assert_close(first, again)
    generator = torch.Generator().manual_seed(4)
    views = [augmentation(image, generator) for _ in range(6)]
    assert any(not torch.equal(views[0], view) for view in views[1:])

    plain = TrainAugmentation((48, 16), enabled=False)(image, torch.Generator())
    assert plain.min() >= -1 and plain.max() <= 1


def test_flip_and_padded_crop_and_erasing():
    image = Image.new("RGB", (16, 48), (255, 255, 255))
    image.paste((0, 0, 0), (0, 0, 8, 48))  # left half black
    flip_only = TrainAugmentation((48, 16), pad=0, flip_prob=1.0, erasing_prob=0.0)
    flipped = flip_only(image, torch.Generator().manual_seed(0))
    assert flipped[:, :, :8].min() == 1.0 and flipped[:, :, 8:].max() == -1.0

    padded = TrainAugmentation((48, 16), pad=6, flip_prob=0.0, erasing_prob=0.0)
    white = Image.new("RGB", (16, 48), (255, 255, 255))
    crops = [padded(white, torch.Generator().manual_seed(seed)) for seed in range(20)]
    assert any(crop.min() == -1.0 for crop in crops), "padding is zero (black) and shows in some crops"
    assert all(crop.shape == (3, 48, 16) for crop in crops)

    erased = random_erasing(torch.zeros(3, 48, 16), torch.Generator().manual_seed(1), probability=1.0)
    changed = (erased != 0).any(dim=0)
    assert 0.02 * 48 * 16 * 0.5 <= changed.sum() <= 0.33 * 48 * 16 * 1.5
    assert torch.equal(random_erasing(torch.zeros(3, 8, 8), torch.Generator(), probability=0.0), torch.zeros(3, 8, 8))
    defaults = inspect.signature(random_erasing).parameters
    assert (defaults["scale"].default, defaults["ratio"].default) == ((0.02, 1 / 3), (0.3, 1 / 0.3))  # timm's bounds


def test_bad_augmentation_settings_are_rejected():
    with pytest.raises(ValueError, match="flip_prob"):
        TrainAugmentation((48, 16), flip_prob=1.5)
    with pytest.raises(ValueError, match="pad"):
        TrainAugmentation((48, 16), pad=-1)
