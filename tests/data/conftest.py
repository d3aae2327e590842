"""Tiny raw-layout fixtures with the quirks of the real benchmark releases, and broken variants of them."""

import json
from pathlib import Path

import pytest
from PIL import Image


TEN_CAPTIONS = [f"  Caption number {index} of a man in a grey coat.  " for index in range(10)]


def _save(path: Path, image: Image.Image, **kwargs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)


def _quirky_images(imgs: Path) -> dict[str, Image.Image]:
    """Write one image per quirk; returns the images as written, by raw path (relative to imgs/)."""
    gradient = Image.linear_gradient("L").resize((24, 64))
    rgb = Image.merge("RGB", (gradient, gradient.rotate(180), Image.new("L", (24, 64), 90)))
    images = {
        "cam_a/0001_a.jpg": rgb,
        "CUHK01/nested/deeper/0017_b.png": rgb.copy(),
        "Market/0017_rgba.png": Image.merge("RGBA", (*rgb.split(), Image.new("L", (24, 64), 128))),
        "test_query/0999_gray.png": gradient,
        "train_query/1002_palette.png": rgb.quantize(colors=16),
        "cam_b/1002_tiny.jpg": rgb.resize((10, 30)),
    }
    for raw_path, image in images.items():
        options = {"quality": 95} if raw_path.endswith(".jpg") else {}
        _save(imgs / raw_path, image, **options)
    return images


def _records(image_key: str, splits: tuple[str, str, str]) -> list[dict]:
    train, val, test = splits
    return [
        {
            "id": 1,
            image_key: "cam_a/0001_a.jpg",
            "split": train,
            "captions": ["A woman in a red coat.", "  She carries a bag.  "],
            "processed_tokens": [["a"]],
        },
        {
            "id": 17,
            image_key: "CUHK01/nested/deeper/0017_b.png",
            "split": train,
            "captions": ["Un homme en café-crème, naïf: 日本語 ü."],
        },
        {"id": 17, image_key: "Market/0017_rgba.png", "split": train, "captions": TEN_CAPTIONS},
        {"id": 999, image_key: "test_query/0999_gray.png", "split": val, "captions": ["\tA grayscale pedestrian.\n"]},
        {
            "id": 1002,
            image_key: "train_query/1002_palette.png",
            "split": test,
            "captions": ["A palette image.", "Second caption."],
        },
        {"id": 1002, image_key: "cam_b/1002_tiny.jpg", "split": test, "captions": ["Tiny image of the same person."]},
    ]


def _write_late_truncated_copy(source: Path, target: Path) -> None:
    """A copy of `source` cut near its end: the header still parses, only a full decode finds the missing data."""
    data = source.read_bytes()
    target.write_bytes(data[: len(data) - 24])
    with Image.open(source) as original, Image.open(target) as image:
        assert image.size == original.size  # the header is intact ...
        with pytest.raises(OSError, match="truncated"):
            image.load()  # ... and the pixel data is not


# Records that look almost right; each appended as record 6 of the annotation file.
BAD_RECORDS = {
    "empty_caption_list": {"id": 8, "captions": []},
    "whitespace_caption": {"id": 9, "captions": ["A man in a coat.", " \t\n "]},
    "bool_person_id": {"id": True, "captions": ["A man in a coat."]},
    "attributes_not_a_list": {"id": 10, "captions": ["A man in a coat."], "attributes": "red coat"},
    "attributes_not_strings": {"id": 11, "captions": ["A man in a coat."], "attributes": ["red coat", 3]},
}


LAYOUTS = {
    "cuhk-pedes": ("reid_raw.json", "file_path", ("train", "val", "test")),
    "icfg-pedes": ("ICFG-PEDES.json", "file_path", ("train", "train", "test")),
    "rstpreid": ("data_captions.json", "img_path", ("train", "val", "test")),
}


@pytest.fixture
def make_raw(tmp_path):
    """make_raw(name, annotation_name=None, broken=()) -> (raw_root, records, images) for a quirky tiny release.

    `broken` adds variants: "missing_image", "truncated_image", "no_captions", "malformed_json", and the names
    of `BAD_RECORDS`.
    """

    def make(name: str, annotation_name: str | None = None, broken: tuple[str, ...] = ()):
        file_name, image_key, splits = LAYOUTS[name]
        raw_root = tmp_path / f"raw-{name}-{'-'.join(broken) or 'ok'}"
        images = _quirky_images(raw_root / "imgs")
        records = _records(image_key, splits)
        if "missing_image" in broken:
            records.append({"id": 5, image_key: "cam_a/missing.jpg", "split": splits[0], "captions": ["Gone."]})
        if "truncated_image" in broken:
            cam_a = raw_root / "imgs" / "cam_a"
            _write_late_truncated_copy(cam_a / "0001_a.jpg", cam_a / "truncated.jpg")
            records.append({"id": 6, image_key: "cam_a/truncated.jpg", "split": splits[2], "captions": ["Cut."]})
        if "no_captions" in broken:
            records.append({"id": 7, image_key: "cam_a/0001_a.jpg", "split": splits[0]})
        for variant, record in BAD_RECORDS.items():
            if variant in broken:
                records.append({image_key: "cam_a/0001_a.jpg", "split": splits[0], **record})
        text = json.dumps(records, ensure_ascii=False, indent=1)
        if "malformed_json" in broken:
            text = text[:-5]
        (raw_root / (annotation_name or file_name)).write_text(text, encoding="utf-8")
        return raw_root, records, images

    return make
