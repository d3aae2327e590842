import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from transformers import AutoModel, AutoProcessor

from dataset_scripts import views
from local_hub import LocalHub
from modeling_ivt.embedding import embed_captions, embed_images
from training.evaluate import main
from training.metrics import full_sort_retrieval_metrics
from tests.search.conftest import MODEL_TYPES
from training.retrieval import evaluate_split

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    model = AutoModel.from_pretrained(tiny_model_dir).eval()
    return model, AutoProcessor.from_pretrained(tiny_model_dir)


def test_embeddings_are_normalised_and_independent_of_batching(loaded, tiny_benchmark):
    model, processor = loaded
    test_split = datasets.load_from_disk(str(tiny_benchmark))["test"]
    captions, _ = views.queries(test_split)
    gallery = views.gallery(test_split)

    text_embeds = embed_captions(model, processor, captions, batch_size=4)
    image_embeds = embed_images(model, processor, gallery, batch_size=4)
    assert text_embeds.shape == (30, 32) and image_embeds.shape == (15, 32)
    assert text_embeds.dtype == image_embeds.dtype == torch.float32 and text_embeds.device.type == "cpu"
    torch.testing.assert_close(text_embeds.norm(dim=1), torch.ones(30))

    with torch.no_grad():
        single = model.get_text_features(**processor(text=[captions[7]])).pooler_output[0]
    torch.testing.assert_close(text_embeds[7], torch.nn.functional.normalize(single, dim=0), atol=1e-5, rtol=1e-5)
    pil_images = [gallery[index]["image"] for index in range(len(gallery))]
    torch.testing.assert_close(
        embed_images(model, processor, pil_images, batch_size=64), image_embeds, atol=1e-5, rtol=1e-5
    )
    assert not model.training


def test_embeddings_are_fp32_under_a_mixed_precision_accelerator(loaded, tiny_benchmark):
    """A bf16 training run still evaluates in fp32, as the released evaluation does."""
    from accelerate import Accelerator

    model, processor = loaded
    test_split = datasets.load_from_disk(str(tiny_benchmark))["test"]
    captions, _ = views.queries(test_split)
    gallery = views.gallery(test_split)
    fp32_text = embed_captions(model, processor, captions, batch_size=8)
    fp32_images = embed_images(model, processor, gallery, batch_size=8)
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    text = embed_captions(model, processor, captions, batch_size=8, accelerator=accelerator)
    images = embed_images(model, processor, gallery, batch_size=8, accelerator=accelerator)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        pixel_values = processor(images=[gallery[index]["image"] for index in range(8)])["pixel_values"]
        bf16_images = model.get_image_features(pixel_values).pooler_output
    torch.testing.assert_close(text, fp32_text, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(images, fp32_images, atol=1e-6, rtol=1e-6)
    assert (torch.nn.functional.normalize(bf16_images.float(), dim=-1) - fp32_images[:8]).abs().max() > 1e-4


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_evaluate_split_scores_queries_against_the_gallery(loaded, tiny_benchmark):
    model, processor = loaded
    test_split = datasets.load_from_disk(str(tiny_benchmark))["test"]
    captions, query_person_ids = views.queries(test_split)
    gallery = views.gallery(test_split)
    expected = full_sort_retrieval_metrics(
        embed_captions(model, processor, captions),
        embed_images(model, processor, gallery),
        query_person_ids,
        torch.tensor(gallery["person_id"]),
    )
    assert evaluate_split(model, processor, test_split, batch_size=8) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("tiny_model_dir", MODEL_TYPES, indirect=True)
def test_cli_prints_the_table_and_writes_json(tiny_model_dir, tiny_benchmark, tmp_path, capsys, loaded):
    output = tmp_path / "results" / "metrics.json"
    assert main(["--model", str(tiny_model_dir), "--dataset", str(tiny_benchmark), "--output", str(output)]) == 0
    printed = capsys.readouterr().out
    written = json.loads(output.read_text())
    model, processor = loaded
    test_split = datasets.load_from_disk(str(tiny_benchmark))["test"]
    assert written["metrics"] == pytest.approx(evaluate_split(model, processor, test_split), abs=1e-4)
    assert (written["split"], written["num_queries"], written["num_gallery"]) == ("test", 30, 15)
    assert "| R@1 | R@5 | R@10 | mAP | mINP |" in printed
    assert f"{written['metrics']['mAP']:.2f}" in printed
    assert not list(output.parent.glob("*.partial"))


def test_cli_bf16_loads_bfloat16_weights(tiny_model_dir, tiny_benchmark, tmp_path, loaded):
    output = tmp_path / "bf16.json"
    assert main(["--model", str(tiny_model_dir), "--dataset", str(tiny_benchmark), "--output", str(output), "--bf16"]) == 0
    written = json.loads(output.read_text())
    model, processor = loaded
    fp32 = evaluate_split(model, processor, datasets.load_from_disk(str(tiny_benchmark))["test"])
    assert written["dtype"] == "bfloat16"
    assert written["metrics"]["mAP"] == pytest.approx(fp32["mAP"], abs=5.0)  # a few of 30 queries may swap a rank


def test_cli_names_a_missing_split_and_a_non_benchmark_folder(tiny_model_dir, tiny_benchmark, tmp_path):
    with pytest.raises(SystemExit, match=r"--split dev: .* has the splits \['test', 'train', 'validation'\]"):
        main(["--model", str(tiny_model_dir), "--dataset", str(tiny_benchmark), "--split", "dev"])
    with pytest.raises(SystemExit, match="not a built benchmark"):
        main(["--model", str(tiny_model_dir), "--dataset", str(tmp_path)])


def test_cli_evaluates_a_hub_model_over_two_processes(tiny_model_dir, tiny_benchmark, tmp_path, loaded):
    # The model is pushed to the project's local Hub server and named by repo id; embedding is sharded over two
    # processes, with batch 4 over 30 captions and 15 images leaving uneven last batches that the gather must drop.
    hub_env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    output = tmp_path / "metrics.json"
    with LocalHub(tmp_path / "hub-storage") as hub:
        hub_env.update(
            HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HOME=str(tmp_path / "hf-home")
        )
        upload = (
            "import sys; from huggingface_hub import HfApi; api = HfApi(); "
            "api.create_repo('someone/tiny-ivt', exist_ok=True); api.upload_folder(repo_id='someone/tiny-ivt', "
            "folder_path=sys.argv[1], commit_message='Upload tiny IVT')"
        )
        pushed = subprocess.run(
            [sys.executable, "-c", upload, str(tiny_model_dir)], env=hub_env, capture_output=True, text=True, timeout=60
        )
        assert pushed.returncode == 0, pushed.stderr
        # accelerate 1.15 runs `launch --num_processes 2 --cpu` as ONE process; torchrun-style launching plus
        # ACCELERATE_USE_CPU gives two gloo processes on a machine without a GPU.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        arguments = ["--model", "someone/tiny-ivt", "--dataset", str(tiny_benchmark), "--batch-size", "4"]
        completed = subprocess.run(
            [*launch, "training/evaluate.py", *arguments, "--output", str(output)],
            cwd=REPO_ROOT,
            env={**hub_env, "ACCELERATE_USE_CPU": "1"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert completed.returncode == 0, completed.stderr
    written = json.loads(output.read_text())
    assert (written["model"], written["num_processes"]) == ("someone/tiny-ivt", 2)
    model, processor = loaded
    test_split = datasets.load_from_disk(str(tiny_benchmark))["test"]
    assert written["metrics"] == pytest.approx(evaluate_split(model, processor, test_split), abs=1e-4)
    assert completed.stdout.count("| R@1 | R@5 | R@10 | mAP | mINP |") == 1
