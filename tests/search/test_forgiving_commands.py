"""The search and demo commands on a user's mistakes: each says what happened and what to do, in one line."""

import shutil

import pytest
from PIL import Image

from ivt_search.__main__ import main


def _error_line(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    [line] = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    return line


@pytest.fixture
def photos_with_broken_files(photo_dir, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)
    good = next(folder.rglob("*.jpg"))
    (good.parent / "cut.jpg").write_bytes(good.read_bytes()[:60])
    (folder / "camera" / "empty.png").write_bytes(b"")
    return folder


def test_index_skips_unreadable_files_and_reports_each_or_stops_with_strict(
    model_dir, photos_with_broken_files, tmp_path, capsys
):
    folder = photos_with_broken_files
    index_dir = tmp_path / "index"
    assert main(["index", str(index_dir), "--model", str(model_dir), "--images", str(folder)]) == 0
    captured = capsys.readouterr()
    assert "indexed 6 images" in captured.out
    skipped = [line for line in captured.err.splitlines() if line.startswith("skipped ")]
    broken = sorted([folder / "camera" / "empty.png", next(folder.rglob("cut.jpg"))])
    assert [line.split(": ", 1)[0] for line in skipped[:2]] == [f"skipped {path}" for path in broken]
    assert all(": cannot be decoded: " in line for line in skipped[:2])
    assert skipped[2].startswith("skipped 2 unreadable file(s), listed above") and "--strict" in skipped[2]

    strict_dir = tmp_path / "strict-index"
    assert main(["index", str(strict_dir), "--model", str(model_dir), "--images", str(folder), "--strict"]) == 2
    line = _error_line(capsys)
    assert "cut.jpg cannot be decoded" in line and "without --strict unreadable files are skipped" in line
    assert not strict_dir.exists(), "nothing is written when --strict stops"

    assert main(["add", str(index_dir), "--images", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "added 0 images: 6 image(s) of" in out and "already indexed and the others are unreadable" in out
    for path in broken:
        path.unlink()
    assert main(["add", str(index_dir), "--images", str(folder)]) == 0
    out = capsys.readouterr().out
    assert f"added 0 images: the 6 image(s) of {folder} are already in the index (matched by their path)" in out
    assert "still holds 6" in out


def test_person_id_is_honoured_or_refused_never_ignored(model_dir, photo_dir, benchmark_dir, tmp_path, capsys):
    index_dir = tmp_path / "folder-index"
    assert main(["index", str(index_dir), "--model", str(model_dir), "--images", str(photo_dir)]) == 0
    capsys.readouterr()
    grid = tmp_path / "grid.png"
    assert main(["query", str(index_dir), "a man", "--person-id", "3", "--grid", str(grid)]) == 2
    line = _error_line(capsys)
    assert "holds no person ids" in line and "--person-id-from-folder" in line
    assert main(["query", str(index_dir), "a man", "--person_id", "3"]) == 2
    assert "--grid" in _error_line(capsys)
    dataset_index = tmp_path / "dataset-index"
    arguments = ["--model", str(model_dir), "--dataset", str(benchmark_dir), "--person-id-from-folder"]
    assert main(["index", str(dataset_index), *arguments]) == 2
    assert "a --dataset has its own ids" in _error_line(capsys)

    assert main(["add", str(index_dir), "--images", str(photo_dir), "--person_id_from_folder"]) == 0
    capsys.readouterr()
    with_ids = tmp_path / "with-ids"
    arguments = ["--model", str(model_dir), "--images", str(photo_dir), "--person-id-from-folder"]
    assert main(["index", str(with_ids), *arguments]) == 0
    assert main(["query", str(with_ids), "a man", "--person-id", "3", "--grid", str(grid)]) == 0
    assert grid.is_file()


def test_missing_index_or_model_is_one_line_naming_it(model_dir, photo_dir, tmp_path, capsys):
    missing = tmp_path / "no-such-index"
    assert main(["query", str(missing), "a man"]) == 2
    line = _error_line(capsys)
    assert f"no index at {missing}" in line and "python -m ivt_search index" in line
    assert main(["add", str(missing), "--images", str(photo_dir)]) == 2
    assert f"no index at {missing}" in _error_line(capsys)

    wrong_model = "outputs/ivt-drawn-pedestrians/bets"
    assert main(["index", str(tmp_path / "i"), "--model", wrong_model, "--images", str(photo_dir)]) == 2
    line = _error_line(capsys)
    assert f"model folder {wrong_model} does not exist" in line and "Repo id" not in line

    empty = tmp_path / "no-images"
    empty.mkdir()
    Image.new("RGB", (4, 4)).save(empty / "tiny.png")
    (empty / "tiny.png").write_bytes(b"not a png")
    assert main(["index", str(tmp_path / "j"), "--model", str(model_dir), "--images", str(empty)]) == 2
    assert "no readable image in" in _error_line(capsys)
    assert not (tmp_path / "j").exists()


def test_demo_without_an_index_says_how_to_make_one(capsys, monkeypatch):
    pytest.importorskip("gradio", reason='the demo needs the extra: pip install -e ".[demo]"')
    from demo import app

    monkeypatch.delenv("IVT_INDEX", raising=False)
    assert not (app.HERE / "index").exists()
    assert app.main([]) == 2
    line = _error_line(capsys)
    assert f"no gallery index at {app.HERE / 'index'}" in line and "python -m demo.app --index" in line
