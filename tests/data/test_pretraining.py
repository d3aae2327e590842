import io
import json
import logging

import datasets
import pytest
from PIL import Image

from dataset_scripts.pretraining import main, pair_corpus, save_pairs


def _png_bytes(colour, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 6), colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    (folder / "red.png").write_bytes(_png_bytes((255, 0, 0)))
    (folder / "sub" / "gray.png").write_bytes(_png_bytes(128, mode="L"))
    (folder / "truncated.png").write_bytes(_png_bytes((0, 0, 255))[:30])
    return folder


def test_json_records(images, caplog):
    records = [
        {"image": "red.png", "caption": "  a red square  "},
        {"image": "sub/gray.png", "caption": ["a grey square", "a dull tile"]},
        {"image": "missing.png", "caption": "gone"},
        {"image": "truncated.png", "caption": "cut"},
        {"image": "red.png", "caption": ""},
        {"caption": "no image key"},
    ]
    (images / "corpus.json").write_text(json.dumps(records), encoding="utf-8")
    corpus = pair_corpus(images / "corpus.json")
    with caplog.at_level(logging.WARNING, logger="dataset_scripts.pretraining"):
        pairs = list(corpus)
    assert [(pair["caption"], pair["pair_id"]) for pair in pairs] == [
        ("a red square", 0),
        ("a grey square", 1),
        ("a dull tile", 2),
    ]
    assert pairs[1]["image"].mode == "RGB" and pairs[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    assert corpus.skipped == 4
    assert "Skipped 4 broken record(s)" in caplog.text and "missing.png" in caplog.text
    assert len(list(corpus)) == 3 and corpus.skipped == 4  # a second pass counts afresh


def test_json_with_separate_image_root(images, tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([{"image": "red.png", "caption": "red"}]), encoding="utf-8")
    corpus = pair_corpus(tmp_path / "list.json", image_root=images)
    assert [pair["caption"] for pair in corpus] == ["red"] and corpus.skipped == 0


def test_imagefolder_with_metadata(images):
    lines = [
        json.dumps({"file_name": "red.png", "text": "a red square"}),
        "{not json",
        json.dumps({"file_name": "truncated.png", "text": "cut"}),
        "",
        json.dumps({"file_name": "sub/gray.png", "text": "a grey square"}),
    ]
    (images / "metadata.jsonl").write_text("\n".join(lines), encoding="utf-8")
    (images / "sub" / "metadata.jsonl").write_text(
        json.dumps({"file_name": "gray.png", "caption": "nested"}), encoding="utf-8"
    )
    corpus = pair_corpus(images)
    pairs = list(corpus)
    assert [pair["caption"] for pair in pairs] == ["a red square", "a grey square", "nested"]
    assert [pair["pair_id"] for pair in pairs] == [0, 3, 4]
    assert corpus.skipped == 2


def _hf_dataset():
    return datasets.Dataset.from_dict(
        {
            "picture": [
                {"bytes": _png_bytes((0, 255, 0)), "path": None},
                {"bytes": b"not an image", "path": None},
                {"bytes": _png_bytes((1, 2, 3)), "path": None},
            ],
            "alt_text": ["a green square", "broken", None],
        },
        features=datasets.Features({"picture": datasets.Image(), "alt_text": datasets.Value("string")}),
    )


def test_hugging_face_dataset_map_style_and_streaming(tmp_path):
    dataset = _hf_dataset()
    for source in (dataset, dataset.to_iterable_dataset(), datasets.DatasetDict({"train": dataset})):
        corpus = pair_corpus(source, image_column="picture", text_column="alt_text")
        pairs = list(corpus)
        assert [(pair["caption"], pair["pair_id"]) for pair in pairs] == [("a green square", 0)]
        assert pairs[0]["image"].getpixel((0, 0)) == (0, 255, 0)
        assert corpus.skipped == 2

    parquet_dir = tmp_path / "parquet"
    parquet_dir.mkdir()
    dataset.to_parquet(str(parquet_dir / "train-00000.parquet"))
    corpus = pair_corpus(str(parquet_dir), image_column="picture", text_column="alt_text")  # load_dataset, streaming
    assert [pair["caption"] for pair in corpus] == ["a green square"] and corpus.skipped == 2

    with pytest.raises(ValueError, match="no column 'caption'"):
        pair_corpus(dataset, image_column="picture")


def test_save_pairs_and_cli(images, tmp_path, capsys):
    (images / "corpus.json").write_text(
        json.dumps([{"image": "red.png", "caption": "red"}, {"image": "nope.png", "caption": "x"}])
    )
    saved = save_pairs(pair_corpus(images / "corpus.json"), tmp_path / "pairs")
    assert saved.column_names == ["image", "caption", "pair_id"] and saved[0]["caption"] == "red"
    with pytest.raises(FileExistsError):
        save_pairs(pair_corpus(images / "corpus.json"), tmp_path / "pairs")

    assert main([str(images / "corpus.json")]) == 0
    assert "1 pairs, 1 broken records skipped" in capsys.readouterr().out
    assert main([str(images / "corpus.json"), "--output", str(tmp_path / "pairs"), "--overwrite"]) == 0
    assert len(datasets.load_from_disk(str(tmp_path / "pairs"))) == 1
