import pytest
import torch

from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
from modeling_ivt import IVTConfig, IVTModel, create_processor

TINY_IMAGE_SIZE = (48, 32)
TINY_BENCHMARK = GeneratorSettings(num_train_ids=2, num_val_ids=1, num_test_ids=5, images_per_id=3, captions_per_image=2)


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory):
    """A built generated benchmark whose test split has 5 people x 3 images x 2 captions."""
    output_dir = tmp_path_factory.mktemp("benchmark") / "drawn-pedestrians"
    ensure_generated_benchmark(output_dir, TINY_BENCHMARK, num_workers=1)
    return output_dir


@pytest.fixture(scope="session")
def tiny_model_dir(request, tmp_path_factory):
    """A randomly initialised tiny IVT (or, with the param "irra", a tiny IRRA) saved with its processor."""
    if getattr(request, "param", "ivt") == "irra":
        from tests.search.conftest import save_tiny_model

        return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny-irra", seed=0, model_type="irra")
    config = IVTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=TINY_IMAGE_SIZE,
        patch_stride=8,
    )
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("model") / "tiny-ivt"
    IVTModel(config).save_pretrained(model_dir)
    create_processor(image_size=TINY_IMAGE_SIZE).save_pretrained(model_dir)
    return model_dir
