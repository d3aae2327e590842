"""A tiny generated benchmark and a tiny-model recipe shared by the training tests."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from dataset_scripts.generate import GeneratorSettings, ensure_generated_benchmark
from training.config import SECTIONS, RunSettings, setting_names

REPO_ROOT = Path(__file__).resolve().parents[2]

TINY_BENCHMARK = GeneratorSettings(
    num_train_ids=80, num_val_ids=6, num_test_ids=8, images_per_id=2, captions_per_image=2, difficulty=0.0
)


def setting_flag(name: str) -> str:
    """The flag of a setting given by its bare name: `--learning_rate`, `--model.hidden_size`, `--finetune.pairs_per_id`."""
    if "." in name or name in setting_names(RunSettings):
        return f"--{name}"
    sections = [
        section for section, settings in SECTIONS.items() if "." not in section and name in setting_names(settings)
    ]
    assert len(sections) == 1, f"{name}: not exactly one section has it ({sections})"
    return f"--{sections[0]}.{name}"


# What every seconds-long run shares, whatever the model: no loader workers, one thread, fp32, no tracker.
TINY_RUN_SETTINGS = dict(
    eval_batch_size=32,
    num_workers=0,
    num_threads=1,
    mixed_precision="no",
    report_to="none",
    logging_steps=1,
    seed=7,
)


def tiny_recipe(dataset_dir, output_dir, **overrides) -> list[str]:
    """Command-line flags of a seconds-long run: a 2-layer, 96-wide random IVT on 64 x 32 images."""
    settings = dict(
        dataset=dataset_dir,
        generate_benchmark=False,
        output_dir=output_dir,
        init="random",
        hidden_size=96,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=192,
        initializer_range=0.05,
        text_embedding_scale=0.05,
        image_size=(64, 32),
        patch_size=16,
        patch_stride=16,
        pad=2,
        max_text_length=48,
        ids_per_batch=8,
        pairs_per_id=2,
        optimizer="adamw",
        learning_rate=2e-3,
        bias_lr_factor=1.0,
        weight_decay=0.0,
        num_epochs=2,
        warmup_epochs=0.5,
        schedule_unit="step",
        warmup_prefix=True,
        word_max_phrases=3,
        **TINY_RUN_SETTINGS,
    )
    settings.update(overrides)
    return recipe_flags(settings)


def recipe_flags(settings: dict) -> list[str]:
    """`--name value` flags of `settings` (a bare name is looked up in the sections, a dotted one taken as is)."""
    flags = []
    for name, value in settings.items():
        if isinstance(value, bool):
            flags.append(setting_flag(name) if value else setting_flag(name).replace("--", "--no_", 1))
        elif isinstance(value, tuple):
            flags += [setting_flag(name), *map(str, value)]
        else:
            flags += [setting_flag(name), str(value)]
    return flags


@pytest.fixture(scope="session")
def tiny_benchmark(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("benchmark") / "drawn-tiny"
    ensure_generated_benchmark(folder, TINY_BENCHMARK, num_workers=1)
    return folder


def _free_port() -> int:
    """A port nobody listens on: consecutive launches on accelerate's default port can find it still held."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(args: list[str], cwd, env_updates: dict | None = None, num_processes: int = 2, timeout: int = 600):
    """
    `accelerate launch --multi_gpu --num_processes N ARGS` with ACCELERATE_USE_CPU set: N CPU processes in one gloo
    group (accelerate's MULTI_CPU). `--cpu --num_processes N` would not do it: accelerate 1.15 sends --cpu to its
    single-process launcher, which starts one process.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    env["ACCELERATE_USE_CPU"] = "true"  # the processes then form a gloo group (MULTI_CPU) even where GPUs exist
    env.update(env_updates or {})
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(num_processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        *args,
    ]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(
            f"accelerate launch failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
        )
    return result
