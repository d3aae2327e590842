"""A tiny random model saved to disk (IVT, or IRRA where a test asks for `model_dir` with the param "irra"), a second
IVT with other weights, a tiny generated benchmark and a photo folder."""

from pathlib import Path

import pytest
import torch

from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
from modeling_ivt import IRRAModel, IVTModel, create_irra_processor, create_processor
from tests.model.conftest import TINY_IMAGE_SIZE, tiny_config, tiny_irra_config

# Tests that run on a tiny model of each type: `@pytest.mark.parametrize("model_dir", MODEL_TYPES, indirect=True)`.
MODEL_TYPES = ["ivt", "irra"]


def save_tiny_model(folder: Path, seed: int, model_type: str = "ivt") -> Path:
    torch.manual_seed(seed)
    if model_type == "irra":
        config = tiny_irra_config()
        IRRAModel(config).save_pretrained(folder)
        create_irra_processor(config).save_pretrained(folder)
    else:
        IVTModel(tiny_config()).save_pretrained(folder)
        create_processor(image_size=TINY_IMAGE_SIZE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(request, tmp_path_factory):
    model_type = getattr(request, "param", "ivt")
    return save_tiny_model(tmp_path_factory.mktemp("models") / f"tiny-{model_type}", seed=0, model_type=model_type)


@pytest.fixture(scope="session")
def other_model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "other-ivt", seed=1)


@pytest.fixture(scope="session")
def benchmark_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark") / "drawn-pedestrians"
    ensure_generated_benchmark(
        folder, GeneratorSettings(num_train_ids=1, num_val_ids=1, num_test_ids=4, images_per_id=2), num_workers=1
    )
    return folder


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory, benchmark_dir):
    """Six test images of the benchmark as JPEG files in `<person_id>/<name>.jpg` folders, one level nested deeper."""
    import datasets

    test = datasets.load_from_disk(str(benchmark_dir))["test"]
    folder = tmp_path_factory.mktemp("photos")
    for row in range(6):
        example = test[row]
        target = folder / "camera" / str(example["person_id"]) / f"photo_{row}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        example["image"].save(target, quality=95)
    (folder / "notes.txt").write_text("not an image")
    return folder
