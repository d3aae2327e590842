"""A tiny random IVT saved to disk, a second one with other weights, a tiny generated benchmark and a photo folder."""

from pathlib import Path

import pytest
import torch

from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
from modeling_ivt import IVTModel, create_processor
from tests.model.conftest import TINY_IMAGE_SIZE, tiny_config


def save_tiny_model(folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    IVTModel(tiny_config()).save_pretrained(folder)
    create_processor(image_size=TINY_IMAGE_SIZE).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-ivt", seed=0)


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
