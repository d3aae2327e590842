"""Whole fine-tuning runs of training/run.py on a tiny generated benchmark, in this process."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from training.run import main

from .conftest import tiny_recipe


def test_tiny_run_ends_far_above_chance_and_saves_model_card_and_results(tiny_benchmark, tmp_path):
    output_dir = tmp_path / "run"
    results = main(tiny_recipe(tiny_benchmark, output_dir, num_epochs=16, eval_every_epochs=4))

    # 8 test identities with 2 images each: a random ranking puts a relevant image first 2 / 16 of the time.
    chance_r1 = 100 * 2 / 16
    assert results["test"]["R@1"] >= 2.5 * chance_r1, results["test"]
    assert results["test"]["mAP"] >= 40, results["test"]
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["test"] == pytest.approx(results["test"])
    assert saved["num_processes"] == 1 and saved["effective_batch_size"] == 16 and saved["seed"] == 7
    assert saved["threads_per_process"] == 1 and saved["config"]["mixed_precision"] == "no"
    assert saved["best_epoch"] in (4, 8, 12, 16) and saved["validation"]["R@1"] == max(
        h["R@1"] for h in saved["validation_history"]
    )
    assert 0 < saved["time_to_final_metrics_s"] <= saved["wall_time_s"]

    best = output_dir / "best"
    card = (best / "README.md").read_text()
    assert "model-index" in card and "library_name: transformers" in card and "surveillance" in card
    assert f"value: {round(results['test']['R@1'], 2)}" in card
    assert "selected on the **validation** split" in card and "| seed | 7 |" in card
    model = AutoModel.from_pretrained(best).eval()
    processor = AutoProcessor.from_pretrained(best)
    assert tuple(model.config.image_size) == (64, 32)
    batch = processor(text=["a man in a red shirt"], images=[torch.zeros(3, 60, 30).numpy().transpose(1, 2, 0)])
    assert model(**batch).logits_per_text.shape == (1, 1)


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_benchmark, tmp_path):
    recipe = dict(
        num_epochs=2, max_train_steps=24, checkpointing_steps=6, checkpoints_total_limit=None, eval_every_epochs=1
    )
    uninterrupted = tmp_path / "uninterrupted"
    main(tiny_recipe(tiny_benchmark, uninterrupted, **recipe))
    checkpoints = sorted((uninterrupted / "checkpoints").iterdir(), key=lambda path: int(path.name.split("_")[1]))
    assert [path.name for path in checkpoints] == ["checkpoint_0", "checkpoint_1", "checkpoint_2", "checkpoint_3"]

    # A run killed after its first checkpoint (step 6 of the 20 of epoch 0) leaves exactly that folder behind.
    interrupted = tmp_path / "interrupted"
    shutil.copytree(checkpoints[0], interrupted / "checkpoints" / "checkpoint_0")
    resumed = main(tiny_recipe(tiny_benchmark, interrupted, resume_from_checkpoint="latest", **recipe))

    expected = load_file(checkpoints[-1] / "model.safetensors")
    actual = load_file(interrupted / "checkpoints" / "checkpoint_3" / "model.safetensors")
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=0, atol=0, msg=name)
    first = json.loads((uninterrupted / "results.json").read_text())
    assert resumed["trained_steps"] == first["trained_steps"] == 24
    assert resumed["test"] == first["test"]

    with pytest.raises(FileExistsError, match="resume_from_checkpoint latest"):
        main(tiny_recipe(tiny_benchmark, interrupted, **recipe))
