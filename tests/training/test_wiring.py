"""The training options observed where they act: inside the model's forward and at the optimiser, in real runs of
training/run.py in this process (tiny recipe, a few steps)."""

import json
import shutil
from collections import Counter

import pytest
import torch
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from modeling_ivt import IVTModel
from training.run import main

from .conftest import tiny_recipe


# transformers 5 renamed `is_gradient_checkpointing` (still there, deprecated) to `is_activation_checkpointing`
_CHECKPOINTING_PROPERTY = (
    "is_activation_checkpointing" if hasattr(IVTModel, "is_activation_checkpointing") else "is_gradient_checkpointing"
)


@pytest.fixture
def observed(monkeypatch):
    """Records, for every training-mode image forward of an IVTModel (one per batch), the autocast state and whether
    gradient checkpointing is on; the dtypes of every Linear output in training mode; and the optimiser steps."""
    record = {"forwards": [], "linear_dtypes": Counter(), "optimizer_steps": 0}
    original = IVTModel._image_features  # the image forward of the training path

    def spy(self, *args, **kwargs):
        if self.training:
            record["forwards"].append(
                {
                    "autocast": torch.is_autocast_enabled("cpu"),
                    "autocast_dtype": torch.get_autocast_dtype("cpu"),
                    "checkpointing": getattr(self, _CHECKPOINTING_PROPERTY),
                }
            )
        return original(self, *args, **kwargs)

    def linear_hook(module, args, output):
        if module.training and isinstance(module, torch.nn.Linear):
            record["linear_dtypes"][output.dtype] += 1

    def count_step(optimizer, args, kwargs):
        record["optimizer_steps"] += 1

    monkeypatch.setattr(IVTModel, "_image_features", spy)
    handles = [
        torch.nn.modules.module.register_module_forward_hook(linear_hook),
        register_optimizer_step_post_hook(count_step),
    ]
    yield record
    for handle in handles:
        handle.remove()


def test_bf16_accumulation_and_checkpointing_act_in_the_forward_and_at_the_optimiser(
    tiny_benchmark, tmp_path, observed
):
    """The memory and speed options a GPU user turns on: bf16 autocast, accumulation over 2 batches, checkpointing."""
    output_dir = tmp_path / "bf16"
    results = main(
        tiny_recipe(
            tiny_benchmark,
            output_dir,
            mixed_precision="bf16",
            gradient_accumulation_steps=2,
            gradient_checkpointing=True,
            num_epochs=1,
            max_train_steps=3,
            validation_split="null",
            test_split="null",
        )
    )

    assert results["trained_steps"] == 3 and results["effective_batch_size"] == 2 * 16
    assert observed["optimizer_steps"] == 3
    assert len(observed["forwards"]) == 6, "2 batches per optimiser step"
    assert all(forward["autocast"] and forward["autocast_dtype"] == torch.bfloat16 for forward in observed["forwards"])
    assert all(forward["checkpointing"] for forward in observed["forwards"])
    assert set(observed["linear_dtypes"]) == {torch.bfloat16}, observed["linear_dtypes"]
    weights = load_file(output_dir / "best" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())


def test_default_precision_trains_in_fp32_one_batch_per_step(tiny_benchmark, tmp_path, observed):
    main(tiny_recipe(tiny_benchmark, tmp_path / "fp32", num_epochs=1, max_train_steps=2, validation_split="null",
                     test_split="null"))  # fmt: skip
    assert observed["optimizer_steps"] == 2 and len(observed["forwards"]) == 2
    assert not any(forward["autocast"] or forward["checkpointing"] for forward in observed["forwards"])
    assert set(observed["linear_dtypes"]) == {torch.float32}


def test_fp16_on_a_cpu_is_refused_instead_of_silently_training_in_fp32(tiny_benchmark, tmp_path, monkeypatch):
    """accelerate has no fp16 autocast with loss scaling on a CPU: it would run fp32 without a word."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    with pytest.raises(ValueError, match="--mixed_precision fp16 needs a GPU.*use bf16"):
        main(tiny_recipe(tiny_benchmark, tmp_path / "fp16", mixed_precision="fp16", num_epochs=1))
    assert not (tmp_path / "fp16" / "checkpoints").exists()


def _checkpoint_weights(checkpoint, like: dict) -> dict:
    """The model weights of an accelerate checkpoint under the names of `like` (the training wrapper's prefix off)."""
    saved = load_file(checkpoint / "model.safetensors")
    by_name = {}
    for name in like:
        matches = [key for key in saved if key == name or key.endswith("." + name)]
        assert len(matches) == 1, (name, matches)
        by_name[name] = saved[matches[0]]
    return by_name


def test_without_validation_the_last_epoch_is_kept_checkpoints_are_limited_and_workers_resume_exactly(
    tiny_benchmark, tmp_path
):
    """16 identities x 2 chunks make 3 batches of 8 identities per epoch; a checkpoint per epoch, the newest 2 kept."""
    recipe = dict(
        max_train_ids=16, num_epochs=3, checkpointing_steps=3, checkpoints_total_limit=2, validation_split="null",
        test_split="null",
    )  # fmt: skip
    uninterrupted = tmp_path / "uninterrupted"
    results = main(tiny_recipe(tiny_benchmark, uninterrupted, num_workers=0, **recipe))
    assert results["trained_steps"] == 9 and results["best_epoch"] == 3
    checkpoints = uninterrupted / "checkpoints"
    assert sorted(path.name for path in checkpoints.iterdir()) == ["checkpoint_1", "checkpoint_2"]
    best = load_file(uninterrupted / "best" / "model.safetensors")
    last = _checkpoint_weights(checkpoints / "checkpoint_2", best)
    epoch_2 = _checkpoint_weights(checkpoints / "checkpoint_1", best)
    for name in best:
        torch.testing.assert_close(best[name], last[name], rtol=0, atol=0, msg=name)
    assert any(not torch.equal(best[name], epoch_2[name]) for name in best)
    card = (uninterrupted / "best" / "README.md").read_text()
    assert "as the last epoch (no validation split)" in card

    # The last epoch again, resumed from the epoch-2 checkpoint with 2 DataLoader worker processes: the same items
    # (views, texts) whichever worker builds them, so the same weights.
    resumed = tmp_path / "resumed"
    shutil.copytree(checkpoints / "checkpoint_1", resumed / "checkpoints" / "checkpoint_1")
    main(tiny_recipe(tiny_benchmark, resumed, num_workers=2, resume_from_checkpoint="latest", **recipe))
    again = load_file(resumed / "best" / "model.safetensors")
    for name in best:
        torch.testing.assert_close(again[name], best[name], rtol=0, atol=0, msg=name)
    assert json.loads((resumed / "results.json").read_text())["trained_steps"] == 9
