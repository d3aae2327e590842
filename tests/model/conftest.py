import pytest
import torch
from PIL import Image

from modeling_ivt import IVTConfig, IVTModel, create_processor

TINY_IMAGE_SIZE = (48, 32)


def tiny_config(**overrides) -> IVTConfig:
    settings = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=TINY_IMAGE_SIZE,
        patch_size=16,
        patch_stride=8,
        vocab_size=30522,
        max_position_embeddings=512,
    )
    settings.update(overrides)
    return IVTConfig(**settings)


@pytest.fixture
def config():
    return tiny_config()


@pytest.fixture
def model(config):
    torch.manual_seed(0)
    return IVTModel(config).eval()


@pytest.fixture(scope="session")
def processor():
    return create_processor(image_size=TINY_IMAGE_SIZE)


@pytest.fixture
def captions():
    return [
        "A young woman in a red coat and black trousers, carrying a white handbag.",
        "The man wears a blue shirt.",
        "a child with short hair, a green backpack and grey shoes walking to the left",
    ]


@pytest.fixture
def images():
    return [
        Image.new("RGB", (64, 160), (200, 30, 30)),
        Image.new("RGB", (40, 90), (30, 30, 200)),
        Image.new("RGB", (128, 384), (30, 160, 30)),
    ]
