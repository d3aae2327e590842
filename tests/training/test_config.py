"""Recipes: YAML files, command-line overrides, and clear errors."""

import os
import subprocess
import sys

import pytest
import torch

from training.config import CONFIG_DIR, TrainingConfig, parse_config, read_yaml_config
from training.engine import set_num_threads


def test_every_shipped_recipe_parses():
    names = {path.stem for path in CONFIG_DIR.glob("*.yaml")}
    assert {"generated", "cuhk_pedes", "icfg_pedes", "rstpreid"} <= names
    for path in CONFIG_DIR.glob("*.yaml"):
        TrainingConfig(**read_yaml_config(path))


def test_released_recipes_match_the_spec():
    cuhk = parse_config(["--config", str(CONFIG_DIR / "cuhk_pedes.yaml")])
    assert (cuhk.optimizer, cuhk.learning_rate, cuhk.bias_lr_factor, cuhk.momentum, cuhk.weight_decay) == (
        "sgd",
        0.005,
        2.0,
        0.9,
        1e-4,
    )
    assert (cuhk.num_epochs, cuhk.warmup_epochs, cuhk.warmup_start_lr, cuhk.min_lr) == (120, 5, 5e-5, 1e-5)
    assert (cuhk.ids_per_batch * cuhk.pairs_per_id, cuhk.pairs_per_id, cuhk.patch_stride, cuhk.seed) == (
        28,
        4,
        12,
        1234,
    )
    assert (cuhk.image_height, cuhk.image_width, cuhk.pad, cuhk.validation_split) == (384, 128, 10, "validation")
    icfg = parse_config(["--config", str(CONFIG_DIR / "icfg_pedes.yaml")])
    assert icfg.validation_split is None and icfg.word_level == "chunk"
    rstp = parse_config(["--config", str(CONFIG_DIR / "rstpreid.yaml")])
    assert (rstp.patch_stride, rstp.ids_per_batch * rstp.pairs_per_id, rstp.word_level) == (16, 48, "chunk")


def test_command_line_overrides_the_yaml(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1\nmla: false\nvalidation_split: val\n")
    config = parse_config(["--config", str(recipe), "--learning_rate", "0.25", "--mla", "--validation_split", "null"])
    assert config.learning_rate == 0.25 and isinstance(config.learning_rate, float)
    assert config.mla is True and config.validation_split is None
    assert parse_config(["--config", str(recipe)]).mla is False


def test_bad_recipes_name_the_file_and_setting(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"recipe.yaml: unknown setting\(s\) learning_rat"):
        parse_config(["--config", str(recipe)])
    recipe.write_text("num_epochs: many\n")
    with pytest.raises(ValueError, match="num_epochs must be int"):
        parse_config(["--config", str(recipe)])
    with pytest.raises(SystemExit):
        parse_config(["--optimizer", "adam"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_config(["--ids_per_batch", "1"])
    assert "ids_per_batch must be at least 2" in capsys.readouterr().err


def test_help_explains_each_setting():
    result = subprocess.run([sys.executable, "training/run.py", "--help"], capture_output=True, text=True, check=True)
    for flag in (
        "--resume_from_checkpoint",
        "--local_loss",
        "--push_to_hub",
        "--gradient_checkpointing",
        "--mixed_precision",
    ):
        assert flag in result.stdout
    assert "P: identities per batch" in result.stdout


@pytest.mark.parametrize("processes_here", [1, 2])
def test_num_threads_zero_shares_the_cores_among_this_machines_processes(monkeypatch, processes_here):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(processes_here))
    cores = len(os.sched_getaffinity(0))
    before = torch.get_num_threads()
    try:
        set_num_threads(0)
        assert torch.get_num_threads() == max(cores // processes_here, 1)
        set_num_threads(1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
