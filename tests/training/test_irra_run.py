"""Whole fine-tuning runs of an IRRA-family model with training/run.py on the tiny generated benchmark."""

import json
import shutil

import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from training.run import main

from .conftest import REPO_ROOT, TINY_RUN_SETTINGS, launch, recipe_flags


def tiny_irra_recipe(dataset_dir, output_dir, **overrides) -> list[str]:
    """A seconds-long IRRA run: two 64-wide 2-layer towers on 64 x 32 images, SDM + ID + IRR, IRRA's optimiser."""
    tower = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=1)
    settings = dict(
        dataset=dataset_dir,
        generate_benchmark=False,
        output_dir=output_dir,
        init="random",
        **{"model.model_type": "irra", "model.projection_dim": 64},
        **{f"model.text_config.{name}": value for name, value in tower.items()},
        **{f"model.vision_config.{name}": value for name, value in tower.items()},
        **{"model.text_config.max_position_embeddings": 40, "model.vision_config.image_size": (64, 32)},
        pad=2,
        losses="sdm+id+irr",
        sampler="random",
        **{"finetune.batch_size": 16},
        optimizer="adam",
        learning_rate=1e-3,
        adam_epsilon=1e-8,
        head_lr_factor=5.0,
        bias_lr_factor=2.0,
        weight_decay=4e-5,
        bias_weight_decay=0.0,
        lr_schedule="irra",
        warmup_epochs=1,
        warmup_factor=0.1,
        num_epochs=2,
        **TINY_RUN_SETTINGS,
    )
    settings.update(overrides)
    return recipe_flags(settings)


def test_tiny_irra_run_ends_above_chance_and_saves_a_clean_model(tiny_benchmark, tmp_path):
    output_dir = tmp_path / "run"
    results = main(tiny_irra_recipe(tiny_benchmark, output_dir, num_epochs=16, eval_every_epochs=8, losses="sdm+id"))

    # 8 test identities with 2 images each: chance is R@1 12.5 and mAP 26.4. A random-init 64-wide CLIP pair learns
    # slowly at this size and 32 queries move R@1 in steps of 3: over seeds and machines it ends at R@1 19-28, mAP 33-43.
    chance_r1 = 100 * 2 / 16
    assert results["test"]["R@1"] > chance_r1, results["test"]
    assert results["test"]["mAP"] >= 32, results["test"]
    saved = json.loads((output_dir / "results.json").read_text())
    assert saved["effective_batch_size"] == 16 and saved["config"]["finetune"]["losses"] == "sdm+id"
    # 80 identities x 2 images x 2 captions = 320 pairs: 20 batches of 16 per epoch
    assert saved["trained_steps"] == 16 * 20

    best = output_dir / "best"
    weights = load_file(best / "model.safetensors")
    assert not any(key.startswith(("classifier", "irr.", "model.")) for key in weights)
    checkpoint = load_file(next((output_dir / "checkpoints").iterdir()) / "model.safetensors")
    assert checkpoint["classifier.weight"].shape == (80, 64)
    card = (best / "README.md").read_text()
    assert "IRRA-family dual encoder" in card and "SDM" in card and "ID loss" in card and "- irra" in card
    assert "random, 16 pairs per process and batch" in card and "fp32 master weights" in card

    model = AutoModel.from_pretrained(best).eval()
    processor = AutoProcessor.from_pretrained(best)
    assert type(model).__name__ == "IRRAModel"
    batch = processor(text=["a man in a red shirt"], images=[torch.zeros(3, 60, 30).numpy().transpose(1, 2, 0)])
    assert model(**batch).logits_per_text.shape == (1, 1)


def test_interrupted_and_resumed_irra_run_ends_with_the_same_weights(tiny_benchmark, tmp_path):
    recipe = dict(num_epochs=2, max_train_steps=12, checkpointing_steps=4, checkpoints_total_limit=None)
    uninterrupted = tmp_path / "uninterrupted"
    main(tiny_irra_recipe(tiny_benchmark, uninterrupted, **recipe))
    checkpoints = sorted((uninterrupted / "checkpoints").iterdir(), key=lambda path: int(path.name.split("_")[1]))
    assert [path.name for path in checkpoints] == ["checkpoint_0", "checkpoint_1", "checkpoint_2"]

    interrupted = tmp_path / "interrupted"
    shutil.copytree(checkpoints[0], interrupted / "checkpoints" / "checkpoint_0")
    main(tiny_irra_recipe(tiny_benchmark, interrupted, resume_from_checkpoint="latest", **recipe))
    expected = load_file(checkpoints[-1] / "model.safetensors")
    actual = load_file(interrupted / "checkpoints" / "checkpoint_2" / "model.safetensors")
    assert expected.keys() == actual.keys() and "irr.cross_attn.in_proj_weight" in expected  # sdm+id+irr
    for name, value in expected.items():
        torch.testing.assert_close(actual[name], value, rtol=0, atol=0, msg=name)


def test_two_processes_with_gathered_losses_take_the_step_of_one_process_with_the_whole_batch(tiny_benchmark, tmp_path):
    """One SGD step (no momentum, no decay): the update is the learning rate times the gradient of the loss."""
    recipe = dict(
        optimizer="sgd", momentum=0.0, weight_decay=0.0, bias_lr_factor=1.0, learning_rate=1.0, warmup_epochs=0,
        max_train_steps=1, num_epochs=1, validation_split="null", test_split="null",
    )
    start = tmp_path / "start"
    main(tiny_irra_recipe(tiny_benchmark, start, **{**recipe, "warmup_epochs": 1, "warmup_factor": 0.0}))  # a zero step
    whole = tmp_path / "whole-batch"
    main(tiny_irra_recipe(tiny_benchmark, whole, **{**recipe, "finetune.batch_size": 16}))
    halves = tmp_path / "two-processes"
    launch([str(REPO_ROOT / "training" / "run.py"), *tiny_irra_recipe(tiny_benchmark, halves, **{**recipe, "finetune.batch_size": 8})], cwd=REPO_ROOT)

    def weights(run):
        return load_file(run / "checkpoints" / "checkpoint_0" / "model.safetensors")

    initial, one, two = weights(start), weights(whole), weights(halves)
    moved = 0
    for name, value in initial.items():
        expected_update, update = one[name] - value, two[name] - value
        torch.testing.assert_close(update, expected_update, rtol=1e-3, atol=1e-6, msg=name)
        moved += bool(expected_update.abs().max() > 1e-4)
    assert moved > 40  # the towers, the classifier and the IRR head all moved
    results = json.loads((halves / "results.json").read_text())
    assert results["num_processes"] == 2 and results["effective_batch_size"] == 16
