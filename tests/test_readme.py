"""The README's Python example runs as written, in a fresh process, against a saved model folder."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from modeling_ivt import IVTModel, create_processor
from tests.model.conftest import TINY_IMAGE_SIZE, tiny_config

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_python_examples() -> list[str]:
    section = README.read_text(encoding="utf-8").split("## Use it from Python", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


def readme_python_example() -> str:
    return readme_python_examples()[0]


@pytest.mark.parametrize("with_pipelines", [False, True], ids=["example", "example-then-pipelines"])
def test_readme_python_example_ranks_the_gallery(tmp_path, with_pipelines):
    """The example as written; then the pipelines snippet that follows it, in the same session."""
    example = "\n".join(readme_python_examples()[:2]) if with_pipelines else readme_python_example()
    model_dir = re.search(r'model_dir = "([^"]+)"', example).group(1)
    gallery_paths = re.findall(r'"(gallery/[^"]+)"', example)
    torch.manual_seed(0)
    IVTModel(tiny_config()).save_pretrained(tmp_path / model_dir)
    create_processor(image_size=TINY_IMAGE_SIZE).save_pretrained(tmp_path / model_dir)
    (tmp_path / "gallery").mkdir()
    for index, path in enumerate(gallery_paths):
        Image.new("RGB", (64 + index, 160), (40 * index, 90, 200)).save(tmp_path / path)

    result = subprocess.run(
        [sys.executable, "-c", example], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )

    assert result.returncode == 0, result.stderr
    ranked = re.findall(r"^(\d+)\. (gallery/\S+)  cosine (-?[\d.]+)$", result.stdout, re.MULTILINE)
    assert [int(rank) for rank, _, _ in ranked] == list(range(1, len(gallery_paths) + 1))
    assert sorted(path for _, path, _ in ranked) == sorted(gallery_paths)
    scores = [float(score) for _, _, score in ranked]
    assert scores == sorted(scores, reverse=True)
    if with_pipelines:
        labels = re.findall(r"'label': '([^']+)'", result.stdout)
        assert sorted(labels) == ["a man in a blue shirt", "a woman in a red coat"], result.stdout


def test_readme_python_example_before_training_says_what_to_do(tmp_path):
    """Pasted before the main job has run, the example stops with one line naming the missing folder."""
    result = subprocess.run(
        [sys.executable, "-c", readme_python_example()], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    model_dir = re.search(r'model_dir = "([^"]+)"', readme_python_example()).group(1)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert model_dir in line and "training" in line
