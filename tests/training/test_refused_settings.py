"""Settings and inputs that used to be accepted without a word, or ended in a traceback, now refused in one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_ivt import IVTConfig, IVTModel, create_processor
from modeling_ivt.conversion_utils import save_model_folder
from modeling_ivt.convert_original_checkpoint import main as convert_original_main
from modeling_ivt.loading import load_model_and_processor
from training.config import parse_config
from training.run import main
from training.sampler import IdentityBatchSampler

from .conftest import tiny_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"num_hidden_layers": -1}, "num_hidden_layers must be a positive integer, got -1"),
        ({"num_hidden_layers": 0}, "num_hidden_layers must be a positive integer, got 0"),
        ({"hidden_size": "768"}, "hidden_size must be a positive integer, got '768'"),
        ({"vocab_size": 0}, "vocab_size must be a positive integer"),
        ({"drop_path_rate": 1.5}, r"drop_path_rate must be a probability in \[0, 1\)"),
    ],
)
def test_invalid_model_sizes_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        IVTConfig(**settings)


def test_a_saved_folder_with_no_layers_is_refused_when_loaded(tmp_path):
    folder = tmp_path / "ivt"
    IVTModel(IVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                       image_size=(32, 16), patch_stride=16)).save_pretrained(folder)
    create_processor(image_size=(32, 16)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "num_hidden_layers": -1}))
    with pytest.raises(ValueError, match="num_hidden_layers must be a positive integer, got -1"):
        load_model_and_processor(str(folder))


def test_a_vocabulary_smaller_than_the_tokenizer_is_refused(tmp_path):
    small = IVTModel(IVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                               image_size=(32, 16), patch_stride=16, vocab_size=1000))
    processor = create_processor(image_size=(32, 16))
    with pytest.raises(ValueError, match="vocabulary has 1000 entries but its tokenizer has 30522"):
        save_model_folder(small, processor, tmp_path / "converted")
    assert not (tmp_path / "converted").exists()
    # a folder made some other way is refused when loaded, instead of an IndexError at the first query
    small.save_pretrained(tmp_path / "elsewhere")
    processor.save_pretrained(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="vocabulary has 1000 entries"):
        load_model_and_processor(str(tmp_path / "elsewhere"))


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such checkpoint file"),
        (b"\x80\x04truncated", "not a readable PyTorch checkpoint"),
        (b"", "not a readable PyTorch checkpoint"),
    ],
)
def test_converter_errors_are_one_line(tmp_path, content, message, capsys):
    checkpoint = tmp_path / "ivt.pth"
    if content is not None:
        checkpoint.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        convert_original_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error and "\n" not in error


def test_a_converter_checkpoint_missing_tensors_is_one_line(tmp_path, capsys):
    checkpoint = tmp_path / "ivt.pth"
    torch.save({"model": {"base.embeddings.word_embeddings.weight": torch.zeros(3, 2)}}, checkpoint)
    with pytest.raises(SystemExit) as exit_info:
        convert_original_main(["--checkpoint", str(checkpoint), "--output", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize(
    "override, message",
    [
        (["--learning_rate", "0"], "learning_rate must be positive"),
        (["--checkpoints_total_limit", "0"], "checkpoints_total_limit must be at least 1"),
    ],
)
def test_training_settings_that_cannot_work_are_refused(tmp_path, override, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(["--output_dir", str(tmp_path), *override])
    assert message in capsys.readouterr().err


def test_pairs_per_id_larger_than_any_identity_has_is_refused():
    person_ids = [0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match=r"pairs_per_id=4 is more than any identity has \(at most 3 pairs\)"):
        IdentityBatchSampler(person_ids, ids_per_batch=2, pairs_per_id=4)
    assert len(IdentityBatchSampler(person_ids, ids_per_batch=2, pairs_per_id=3)) >= 1


def test_a_read_only_output_folder_is_one_clear_error(tiny_benchmark, read_only_folder):
    locked = read_only_folder
    with pytest.raises(PermissionError, match=r"--output_dir .*locked/run: cannot write there"):
        main(tiny_recipe(tiny_benchmark, locked / "run"))


def test_the_training_command_prints_one_line_for_a_user_error(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "training" / "run.py"), "--dataset", str(tmp_path / "absent"),
         "--no-generate_benchmark", "--output_dir", str(tmp_path / "run"), "--report_to", "none"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: --dataset") and "Traceback" not in result.stderr


def test_overwrite_never_replaces_a_folder_that_is_not_a_model(tmp_path):
    model = IVTModel(IVTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37,
                               image_size=(32, 16), patch_stride=16))
    processor = create_processor(image_size=(32, 16))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not a previous model folder"):
        save_model_folder(model, processor, mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "mine"
    save_model_folder(model, processor, tmp_path / "model")
    save_model_folder(model, processor, tmp_path / "model", overwrite=True)  # a model folder is replaced
