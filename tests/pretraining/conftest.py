import json

import pytest
import torch
from PIL import Image

from modeling_ivt import IVTForPreTraining, create_processor
from tests.model.conftest import TINY_IMAGE_SIZE, tiny_config
from training.augmentation import TrainAugmentation
from training.pretraining_data import PretrainingCollator

COLOURS = ["red", "blue", "green", "yellow", "black", "white", "purple", "orange"]
RGB = {
    "red": (200, 30, 30),
    "blue": (30, 30, 200),
    "green": (30, 160, 30),
    "yellow": (230, 210, 40),
    "black": (20, 20, 20),
    "white": (240, 240, 240),
    "purple": (130, 50, 160),
    "orange": (240, 130, 20),
}


def tiny_pretraining_config(**overrides):
    settings = dict(patch_stride=16, fusion_num_hidden_layers=2, token_drop_ratio=0.0)
    settings.update(overrides)
    return tiny_config(**settings)


@pytest.fixture
def pretraining_model():
    torch.manual_seed(0)
    return IVTForPreTraining(tiny_pretraining_config()).eval()


@pytest.fixture(scope="session")
def processor():
    return create_processor(image_size=TINY_IMAGE_SIZE)


def caption_for(index: int) -> str:
    top, bottom = COLOURS[index % len(COLOURS)], COLOURS[(index * 3 + 1) % len(COLOURS)]
    return f"A person wearing a {top} jacket, and {bottom} trousers; walking-away from the camera."


def make_collator(processor, **options):
    """Test-time image preprocessing, so that batches are exactly reproducible from the pairs."""
    return PretrainingCollator(processor.tokenizer, TrainAugmentation(TINY_IMAGE_SIZE, enabled=False), **options)


@pytest.fixture
def pairs():
    return [
        {"image": Image.new("RGB", (24 + 4 * i, 64), RGB[COLOURS[i % 8]]), "caption": caption_for(i), "pair_id": i}
        for i in range(6)
    ]


@pytest.fixture
def json_corpus(tmp_path):
    """An ALBEF-style JSON corpus of 16 drawn pairs (dataset_scripts.pretraining source (a))."""
    records = []
    for index in range(16):
        name = f"images/{index:03d}.png"
        (tmp_path / "images").mkdir(exist_ok=True)
        image = Image.new("RGB", (32, 48), RGB[COLOURS[index % 8]])
        image.paste(RGB[COLOURS[(index * 3 + 1) % 8]], (0, 24, 32, 48))
        image.save(tmp_path / name)
        records.append({"image": name, "caption": caption_for(index)})
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(records))
    return path
