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


TINY_IRRA_IMAGE_SIZE = (48, 32)


def tiny_irra_config(patch_stride=16, **overrides):
    """Two narrow towers of two layers each (one head per 16 channels) on 48 x 32 images, CLIP's real vocabulary."""
    from modeling_ivt import IRRAConfig

    settings = dict(
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        vision_config=dict(
            hidden_size=48,
            num_hidden_layers=2,
            num_attention_heads=3,
            intermediate_size=96,
            image_size=TINY_IRRA_IMAGE_SIZE,
            patch_stride=patch_stride,
        ),
        projection_dim=24,
    )
    settings.update(overrides)
    return IRRAConfig(**settings)


@pytest.fixture
def irra_model():
    from modeling_ivt import IRRAModel

    torch.manual_seed(0)
    return IRRAModel(tiny_irra_config()).eval()


@pytest.fixture(scope="session")
def irra_processor():
    from modeling_ivt import create_irra_processor

    return create_irra_processor(tiny_irra_config())
