import json
import shutil

import datasets
import numpy as np
import pytest

from dataset_scripts.build import DatasetBuildError, build_benchmark, main, split_counts


def _pixels(image):
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_cuhk_quirks_survive_the_build_and_raw_root_deletion(make_raw, tmp_path):
    raw_root, records, images = make_raw("cuhk-pedes")
    output_dir = tmp_path / "cuhk"
    build_benchmark("cuhk-pedes", raw_root, output_dir)
    shutil.rmtree(raw_root)  # the saved dataset must not need the raw files any more

    dataset_dict = datasets.load_from_disk(str(output_dir))
    assert list(dataset_dict) == ["train", "validation", "test"]
    train = dataset_dict["train"]
    assert train.features["person_id"].dtype == "int64"
    assert train["image_path"] == ["cam_a/0001_a.jpg", "CUHK01/nested/deeper/0017_b.png", "Market/0017_rgba.png"]
    assert train["person_id"] == [1, 17, 17]
    assert dataset_dict["test"]["person_id"] == [1002, 1002]
    assert train[0]["captions"] == ["A woman in a red coat.", "She carries a bag."]
    assert train[1]["captions"] == ["Un homme en café-crème, naïf: 日本語 ü."]
    assert train[2]["captions"] == [caption.strip() for caption in records[2]["captions"]]
    assert len(train[2]["captions"]) == 10
    assert dataset_dict["validation"][0]["captions"] == ["A grayscale pedestrian."]
    assert train[0]["attributes"] == []

    for split_ds in dataset_dict.values():
        for row in split_ds:
            decoded = row["image"]
            assert decoded.mode == "RGB"
            original = images[row["image_path"]]
            assert decoded.size == original.size
            difference = np.abs(_pixels(decoded) - _pixels(original)).max()
            assert difference <= (12 if row["image_path"].endswith(".jpg") else 0), row["image_path"]

    assert split_counts(dataset_dict) == {
        "train": {"identities": 2, "images": 3, "captions": 13},
        "validation": {"identities": 1, "images": 1, "captions": 1},
        "test": {"identities": 1, "images": 2, "captions": 3},
    }
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "| train | 2 | 3 | 13 |" in card
    assert "never redistribute" in card and "@inproceedings{li2017person" in card


@pytest.mark.parametrize("annotation_name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_accepts_both_file_names_and_has_no_validation(make_raw, tmp_path, annotation_name):
    raw_root, _, _ = make_raw("icfg-pedes", annotation_name=annotation_name)
    dataset_dict = build_benchmark("icfg-pedes", raw_root, tmp_path / "icfg")
    assert list(dataset_dict) == ["train", "test"]
    assert dataset_dict["train"]["person_id"] == [1, 17, 17, 999]


def test_rstpreid_reads_img_path(make_raw, tmp_path):
    raw_root, _, _ = make_raw("rstpreid")
    dataset_dict = build_benchmark("rstpreid", raw_root, tmp_path / "rstp")
    assert dataset_dict["validation"]["image_path"] == ["test_query/0999_gray.png"]
    (raw_root / "data_captions.json").rename(raw_root / "reid_raw.json")  # RSTPReid records read as CUHK-PEDES
    with pytest.raises(DatasetBuildError, match="record 0: missing key 'file_path'"):
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()


@pytest.mark.parametrize(
    "broken, expected",
    [
        ("missing_image", r"image 'cam_a/missing\.jpg' not found"),
        ("truncated_image", r"image 'cam_a/truncated\.jpg' .* does not decode"),
        ("no_captions", r"reid_raw\.json record 6: missing key 'captions'"),
        ("empty_caption_list", r"reid_raw\.json record 6: 'captions' is empty"),
        ("whitespace_caption", r"reid_raw\.json record 6: a caption is empty or whitespace only"),
        ("bool_person_id", r"reid_raw\.json record 6: 'id' must be an integer, found True"),
        ("attributes_not_a_list", r"reid_raw\.json record 6: 'attributes' must be a list of strings, found 'red coat'"),
        ("attributes_not_strings", r"reid_raw\.json record 6: 'attributes' must be a list of strings"),
        ("malformed_json", r"reid_raw\.json is not valid JSON"),
    ],
)
def test_broken_variants_fail_before_anything_is_written(make_raw, tmp_path, broken, expected):
    raw_root, _, _ = make_raw("cuhk-pedes", broken=(broken,))
    with pytest.raises(DatasetBuildError, match=expected):
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not any(path.name.startswith(".out") for path in tmp_path.iterdir())


def test_all_problems_are_reported_together(make_raw, tmp_path):
    raw_root, _, _ = make_raw("cuhk-pedes", broken=("missing_image", "truncated_image", "no_captions"))
    with pytest.raises(DatasetBuildError) as caught:
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "out")
    assert len(caught.value.problems) == 3
    assert "3 problem(s)" in str(caught.value)


def test_type_and_split_problems_are_listed_with_a_cap(tmp_path):
    raw_root = tmp_path / "raw"
    raw_root.mkdir()
    records = [{"id": "7", "file_path": 3, "split": "dev", "captions": "not a list"}] * 6
    (raw_root / "reid_raw.json").write_text(json.dumps(records), encoding="utf-8")
    with pytest.raises(DatasetBuildError) as caught:
        build_benchmark("cuhk-pedes", raw_root, tmp_path / "out")
    message = str(caught.value)
    assert len(caught.value.problems) == 24
    assert "'id' must be an integer" in message and "unknown split 'dev'" in message
    assert "... and 4 more" in message


def test_existing_output_is_kept_unless_overwrite(make_raw, tmp_path, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes")
    output_dir = tmp_path / "cuhk"
    output_dir.mkdir()
    (output_dir / "keep.txt").write_text("mine")
    assert main(["cuhk-pedes", str(raw_root), str(output_dir)]) == 1
    assert "exists" in capsys.readouterr().err
    assert (output_dir / "keep.txt").read_text() == "mine"

    # --overwrite replaces a previous build, never a folder of the user's that the builder did not write
    assert main(["cuhk-pedes", str(raw_root), str(output_dir), "--overwrite"]) == 1
    assert "not a previous output folder" in capsys.readouterr().err
    assert (output_dir / "keep.txt").read_text() == "mine"

    shutil.rmtree(output_dir)
    assert main(["cuhk-pedes", str(raw_root), str(output_dir)]) == 0
    assert main(["cuhk-pedes", str(raw_root), str(output_dir), "--overwrite"]) == 0
    printed = capsys.readouterr().out
    assert "| validation | 1 | 1 | 1 |" in printed
    assert len(datasets.load_from_disk(str(output_dir))["train"]) == 3
    assert sorted(path.name for path in tmp_path.iterdir() if path.name.startswith(".")) == []


def test_cli_reports_problems_with_nonzero_exit(make_raw, tmp_path, capsys):
    raw_root, _, _ = make_raw("cuhk-pedes", broken=("missing_image",))
    assert main(["cuhk-pedes", str(raw_root), str(tmp_path / "out")]) == 1
    assert "cam_a/missing.jpg" in capsys.readouterr().err
