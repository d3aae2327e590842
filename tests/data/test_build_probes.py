"""The builder under a careless or hostile user: outputs over the raw release, paths leaving RAW_ROOT, an image in two
splits, huge images, a read-only output folder. Each is refused with a clear message and nothing of the user's is lost."""

import json
from pathlib import Path

import pytest

from dataset_scripts.build import DatasetBuildError, build_benchmark, main
from tests.reliability.crafted import png_claiming


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def _add_record(raw_root: Path, **record) -> None:
    annotation = raw_root / "reid_raw.json"
    records = json.loads(annotation.read_text())
    records.append({"id": 42, "split": "train", "captions": ["A man in a coat."], **record})
    annotation.write_text(json.dumps(records))


@pytest.mark.parametrize("where", ["the raw folder", "a folder above it"])
def test_overwrite_never_deletes_the_raw_release(make_raw, where, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes")
    (raw_root / "my_notes.txt").write_text("unrelated")
    before = _snapshot(raw_root.parent)
    output = raw_root if where == "the raw folder" else raw_root.parent
    assert main(["cuhk-pedes", str(raw_root), str(output), "--overwrite"]) == 1
    assert "holds the input" in capsys.readouterr().err
    assert _snapshot(raw_root.parent) == before


@pytest.mark.parametrize("image_path", ["../outside.jpg", "/etc/hostname", "cam_a/../../../outside.jpg"])
def test_annotation_paths_outside_raw_root_are_refused(make_raw, tmp_path, image_path):
    raw_root, _, _ = make_raw("cuhk-pedes")
    (raw_root.parent / "outside.jpg").write_bytes((raw_root / "imgs" / "cam_a" / "0001_a.jpg").read_bytes())
    _add_record(raw_root, file_path=image_path)
    with pytest.raises(DatasetBuildError, match=r"record 6: image path .* (points outside|is absolute)"):
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_same_image_in_train_and_test_is_refused(make_raw, tmp_path):
    raw_root, _, _ = make_raw("cuhk-pedes")
    _add_record(raw_root, file_path="cam_a/0001_a.jpg", split="test")
    with pytest.raises(DatasetBuildError, match=r"record 6: image 'cam_a/0001_a.jpg' is in split 'test' and also in "
                       r"split 'train' \(record 0\)"):
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "out")


def test_a_huge_image_is_refused_before_it_is_decoded(make_raw, tmp_path, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes")
    png_claiming(raw_root / "imgs" / "cam_a" / "huge.png", 8000, 6000)  # 48 MP: over the default 40 MP
    _add_record(raw_root, file_path="cam_a/huge.png")
    assert main(["cuhk-pedes", str(raw_root), str(tmp_path / "out")]) == 1
    error = capsys.readouterr().err
    assert "huge.png is 8000 x 6000 = 48,000,000 pixels, above the limit of 40,000,000" in error
    assert "Traceback" not in error
    assert main(["cuhk-pedes", str(raw_root), str(tmp_path / "out"), "--max-image-pixels", "50000000"]) == 1
    error = capsys.readouterr().err  # with the limit raised the header passes, and only then is decoding tried
    assert "huge.png" in error and "does not decode" in error and "pixels" not in error


def test_a_decompression_bomb_is_one_clear_problem(make_raw, tmp_path, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes")
    png_claiming(raw_root / "imgs" / "cam_a" / "bomb.png", 20000, 20000)  # over twice Pillow's own limit
    _add_record(raw_root, file_path="cam_a/bomb.png")
    assert main(["cuhk-pedes", str(raw_root), str(tmp_path / "out"), "--max-image-pixels", "0"]) == 1
    error = capsys.readouterr().err
    assert "bomb.png is too large to decode safely" in error and "Traceback" not in error


def test_a_read_only_output_folder_is_one_clear_error(make_raw, read_only_folder, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes")
    locked = read_only_folder
    assert main(["cuhk-pedes", str(raw_root), str(locked / "out")]) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: cannot write") and str(locked) in error
    locked.chmod(0o755)
