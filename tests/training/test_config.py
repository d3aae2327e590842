"""Recipes: YAML files with a model: section and one section per stage, command-line overrides, and clear errors."""

import os
import subprocess
import sys

import pytest
import torch

from modeling_ivt import IRRAConfig, IVTConfig
from training.config import CONFIG_DIR, ModelSettings, TrainingConfig, parse_config
import training.stage
from tests.training.conftest import REPO_ROOT
from training.stage import resolve_mixed_precision, set_num_threads


def test_every_shipped_recipe_parses_into_its_stage():
    names = {path.stem for path in CONFIG_DIR.glob("*.yaml")}
    assert {"generated", "cuhk_pedes", "icfg_pedes", "rstpreid", "pretrain", "pretrain_generated"} <= names
    for path in CONFIG_DIR.glob("*.yaml"):
        config = parse_config(["--config", str(path)])
        assert isinstance(config.model, IRRAConfig if path.stem.startswith("irra") else IVTConfig), path
        assert (config.finetune is None) == (config.stage == "pretrain") == (config.pretrain is not None)


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
    assert (cuhk.finetune.items_per_batch, cuhk.finetune.pairs_per_id, cuhk.model.patch_stride, cuhk.seed) == (
        28,
        4,
        12,
        1234,
    )
    assert (cuhk.model.image_size, cuhk.pad, cuhk.finetune.validation_split) == ([384, 128], 10, "validation")
    icfg = parse_config(["--config", str(CONFIG_DIR / "icfg_pedes.yaml")])
    assert icfg.finetune.validation_split is None and icfg.word_level == "chunk"
    rstp = parse_config(["--config", str(CONFIG_DIR / "rstpreid.yaml")])
    assert (rstp.model.patch_stride, rstp.finetune.items_per_batch, rstp.word_level) == (16, 48, "chunk")


def test_the_model_section_is_an_ivt_config_and_unset_settings_keep_its_defaults(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model:\n  hidden_size: 96\n  num_attention_heads: 2\n  image_size: [64, 32]\n")
    config = parse_config(["--config", str(recipe), "--model.num_hidden_layers", "3"])
    expected = IVTConfig(hidden_size=96, num_attention_heads=2, image_size=(64, 32), num_hidden_layers=3)
    assert config.model.to_dict() == expected.to_dict()
    assert config.to_dict()["model"]["intermediate_size"] == IVTConfig().intermediate_size
    assert {name for name in ModelSettings.__dataclass_fields__} >= {"hidden_size", "patch_stride", "token_drop_ratio"}


def test_command_line_overrides_the_yaml_with_either_spelling(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("learning_rate: 1\nmla: false\nfinetune:\n  validation_split: val\n")
    config = parse_config(
        ["--config", str(recipe), "--learning-rate", "0.25", "--mla", "--finetune.validation_split", "null"]
    )
    assert config.learning_rate == 0.25 and isinstance(config.learning_rate, float)
    assert config.mla is True and config.finetune.validation_split is None
    assert parse_config(["--config", str(recipe)]).mla is False
    assert parse_config(["--config", str(recipe), "--no-mla", "--finetune.pairs-per-id", "3"]).finetune.pairs_per_id == 3


def run_cli(*args):
    return subprocess.run([sys.executable, "training/run.py", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "recipe_text, message",
    [
        ("learning_rat: 0.1\n", "recipe.yaml: learning_rat: unknown setting; did you mean learning_rate?"),
        ("model:\n  hiden_size: 3\n", "recipe.yaml: model.hiden_size: unknown setting; did you mean hidden_size?"),
        ("hidden_size: 96\n", "recipe.yaml: hidden_size: unknown setting here (it belongs in model:)"),
        ("num_epochs: many\n", "recipe.yaml: num_epochs must be int, got 'many'"),
        ("model:\n  image_size: [64, x]\n", "recipe.yaml: model.image_size must be a list of int"),
        ("dataset: [data\nseed: 1\n", "recipe.yaml: line 2, column 5: not valid YAML"),
        ("pretrain:\n  batch_size: 8\n", "recipe.yaml: the pretrain: section is for --stage pretrain"),
        ("model:\n  hidden_size: 100\n", "model: hidden_size (100) must be divisible by num_attention_heads (12)"),
    ],
)
def test_a_bad_recipe_is_one_line_naming_the_file_and_setting(tmp_path, capsys, recipe_text, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(recipe_text)
    with pytest.raises(SystemExit) as exit_info:
        parse_config(["--config", str(recipe)])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in error and error.count("\n") == 1, error


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--learning_rat", "0.1"], "unknown option --learning_rat; did you mean --learning_rate?"),
        (["--hidden_size", "96"], "unknown option --hidden_size; did you mean --model.hidden_size?"),
        (["--optimizer", "adagrad"], "argument --optimizer: invalid choice: 'adagrad'"),
        (["--model.hidden-size", "wide"], "invalid int value: 'wide'"),
        (["--finetune.ids_per_batch", "1"], "finetune: ids_per_batch must be at least 2"),
        (["--pretrain.corpus", "pairs.json"], "--pretrain.corpus is a setting of --stage pretrain"),
        (["--stage", "pretrain"], "generated.yaml: the finetune: section is for --stage finetune"),
        (["--config", "missing.yaml"], "--config missing.yaml: no such file"),
    ],
)
def test_a_bad_flag_is_one_line_naming_it(capsys, argv, message):
    with pytest.raises(SystemExit):
        parse_config(argv)
    error = capsys.readouterr().err
    assert message in error and error.count("\n") == 1, error


def test_a_malformed_recipe_ends_the_script_with_one_line_and_no_traceback(tmp_path):
    recipe = tmp_path / "broken.yaml"
    recipe.write_text("model: {hidden_size: 96\n")
    result = run_cli("--config", str(recipe))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "broken.yaml" in result.stderr


def test_help_explains_each_setting_with_the_default_recipes_values():
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for flag in (
        "--resume_from_checkpoint",
        "--finetune.local_loss",
        "--push_to_hub",
        "--gradient_checkpointing",
        "--mixed_precision",
        "--model.patch_stride",
        "--generator.difficulty",
        "--pretrain.corpus",
    ):
        assert flag in result.stdout
    assert "P: identities per batch" in result.stdout
    text = " ".join(result.stdout.split())
    # what `accelerate launch training/run.py` uses: the default recipe's values, not the built-in ones
    assert "width of tokens and of the output embedding. (default: 192)" in text
    assert "training epochs (default: 12)" in text and "bias_lr_factor and bias_weight_decay) (default: adamw)" in text
    assert "(default: )" not in text


def test_every_model_setting_is_documented_in_ivt_config():
    for name, setting in ModelSettings.__dataclass_fields__.items():
        assert setting.metadata["help"], name


def test_a_training_config_holds_only_its_stage_section():
    assert TrainingConfig().pretrain is None and TrainingConfig(stage="pretrain").finetune is None
    with pytest.raises(ValueError, match="the finetune: section is for --stage finetune"):
        TrainingConfig(stage="pretrain", finetune=TrainingConfig().finetune)


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


def test_any_mix_of_dashes_and_underscores_names_the_same_flag():
    config = parse_config(["--no-generate_benchmark", "--finetune.pairs-per_id", "3", "--learning-rate=0.5"])
    assert config.generate_benchmark is False and config.finetune.pairs_per_id == 3 and config.learning_rate == 0.5


@pytest.mark.parametrize("native", [True, False, None], ids=["native-bf16", "emulated-bf16", "unknown-cpu"])
def test_auto_precision_takes_bf16_only_where_the_cpu_has_it(monkeypatch, native):
    """The default recipe's `auto`: bf16 autocast on a CPU that multiplies bf16 natively, fp32 where it is emulated."""
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    monkeypatch.setattr(training.stage, "cpu_has_native_bf16", lambda: native)
    assert resolve_mixed_precision("auto") == ("bf16" if native else "no")
    for explicit in ("no", "bf16", "fp16"):
        assert resolve_mixed_precision(explicit) == explicit
    assert parse_config([]).mixed_precision == "auto"


FAULT_PROBE = """
import resource
import torch
from training.stage import keep_freed_memory
sizes = [10_000_000, 12_000_000]  # 40 and 48 MB, above glibc's largest automatic threshold (32 MB)


def faults_over_four_steps():
    for _ in range(2):  # warm-up: the heap grows to hold the step's blocks (in the first step or the second)
        for numel in sizes:
            torch.ones(numel)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        for numel in sizes:
            torch.ones(numel)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


default = faults_over_four_steps()
keep_freed_memory()
print(default, faults_over_four_steps())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts of glibc's allocator")
def test_training_processes_reuse_freed_memory_instead_of_faulting_it_in_again():
    """A step's multi-megabyte tensors come from memory already mapped: no page fault per 4 KiB on every step."""
    pages_touched = 4 * (10_000_000 + 12_000_000) * 4 // 4096
    probe = subprocess.run(
        [sys.executable, "-c", FAULT_PROBE], capture_output=True, text=True, check=True, cwd=REPO_ROOT
    )
    default, keep = map(int, probe.stdout.split())
    assert default > pages_touched / 2  # the C library's default maps and faults most blocks anew
    assert keep < pages_touched / 50
