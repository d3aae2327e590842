import dataclasses
import json
import logging
import random
import re
import threading

import datasets
import numpy as np
import pytest
from PIL import Image

from dataset_scripts.generate import (
    ATTRIBUTE_VALUES,
    GENERIC_UPPER_NOUNS,
    LOWER_NOUNS,
    PALETTE,
    GeneratorSettings,
    UPPER_NOUNS,
    attribute_distance,
    draw_identities,
    ensure_generated_benchmark,
    generate_raw,
    main,
)


TINY = GeneratorSettings(num_train_ids=4, num_val_ids=2, num_test_ids=2, images_per_id=2, captions_per_image=2)
COLOUR = "|".join(PALETTE)
UPPER = "|".join(re.escape(noun) for nouns in [*UPPER_NOUNS.values(), GENERIC_UPPER_NOUNS] for noun in nouns)
LOWER = "|".join(re.escape(noun) for nouns in LOWER_NOUNS.values() for noun in nouns)
# The colour word of a garment comes right before its noun, with at most two modifiers in between.
UPPER_COLOUR = re.compile(rf"\b({COLOUR}) (?:[\w-]+ ){{0,2}}?(?:{UPPER})\b")
LOWER_COLOUR = re.compile(rf"\b({COLOUR}) (?:[\w-]+ )?(?:{LOWER})\b")


def _nearest_palette_colour(image: Image.Image, box: list[int]) -> str:
    """The palette colour most pixels of the box are closest to (a pattern or blurred edge is a minority)."""
    region = np.asarray(image.convert("RGB"), dtype=np.float32)[box[1] : box[3], box[0] : box[2]].reshape(-1, 1, 3)
    palette = np.array(list(PALETTE.values()), dtype=np.float32)[None]
    votes = np.bincount(np.argmin(((region - palette) ** 2).sum(-1), axis=1), minlength=len(PALETTE))
    return list(PALETTE)[int(np.argmax(votes))]


@pytest.fixture(scope="module", params=[0.25, 1.0], ids=["default-difficulty", "hardest"])
def raw_benchmark(request, tmp_path_factory):
    raw_root = tmp_path_factory.mktemp("drawn") / "raw"
    settings = GeneratorSettings(
        num_train_ids=40, num_val_ids=0, num_test_ids=0, images_per_id=2, seed=3, difficulty=request.param
    )
    generate_raw(raw_root, settings, num_workers=1)
    records = json.loads((raw_root / "reid_raw.json").read_text(encoding="utf-8"))
    return raw_root, records


def test_captions_tell_the_truth_about_pixels(raw_benchmark):
    raw_root, records = raw_benchmark
    checked_upper = checked_lower = 0
    for record in records:
        if record["view"] != "front":
            continue
        image = Image.open(raw_root / "imgs" / record["file_path"])
        seen_upper = _nearest_palette_colour(image, record["torso_box"])
        for caption in record["captions"]:
            named = UPPER_COLOUR.findall(caption)
            assert named, f"no upper garment colour in {caption!r}"
            assert named[0] == seen_upper, (record["file_path"], caption)
            checked_upper += 1
            if record["waist_box"]:
                named_lower = LOWER_COLOUR.findall(caption)
                assert named_lower, f"no lower garment colour in {caption!r}"
                assert named_lower[0] == _nearest_palette_colour(image, record["waist_box"]), (
                    record["file_path"],
                    caption,
                )
                checked_lower += 1
    assert checked_upper >= 30 and checked_lower >= 20


def test_captions_name_only_what_the_view_shows(raw_benchmark):
    _, records = raw_benchmark
    back = [record for record in records if record["view"] == "back"]
    assert back
    for record in back:
        for caption in record["captions"]:
            assert not re.search(r"glasses|logo|phone", caption), caption
    words = [len(caption.split()) for record in records for caption in record["captions"]]
    assert min(words) >= 10 and max(words) <= 50 and 15 <= np.median(words) <= 45
    assert all(1 <= caption.count(".") <= 3 for record in records for caption in record["captions"])
    assert len({caption for record in records for caption in record["captions"]}) == 2 * len(records)
    assert all(len(record["attributes"]) >= 5 for record in records)
    assert {record["view"] for record in records} == {"front", "back", "side"}


def test_many_identities_have_a_near_duplicate():
    def near_duplicate_fraction(difficulty):
        identities = draw_identities(300, 1, random.Random(0), difficulty)
        assert len({identity.attributes for identity in identities}) == 300
        return np.mean([min(attribute_distance(a, b) for b in identities if b is not a) <= 2 for a in identities])

    assert len(ATTRIBUTE_VALUES) >= 10
    assert near_duplicate_fraction(0.25) >= 0.3
    assert near_duplicate_fraction(0.5) >= 0.5
    assert near_duplicate_fraction(0.0) < 0.1


def test_generation_is_deterministic_whatever_the_workers(tmp_path):
    settings = GeneratorSettings(num_train_ids=20, num_val_ids=6, num_test_ids=6, images_per_id=2, seed=11)
    generate_raw(tmp_path / "one", settings, num_workers=1)
    generate_raw(tmp_path / "two", settings, num_workers=2)
    first = (tmp_path / "one" / "reid_raw.json").read_text()
    assert first == (tmp_path / "two" / "reid_raw.json").read_text()
    for record in json.loads(first)[::7]:
        path = f"imgs/{record['file_path']}"
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()
    generate_raw(tmp_path / "other-seed", dataclasses.replace(settings, seed=12), num_workers=1)
    assert (tmp_path / "other-seed" / "reid_raw.json").read_text() != first


def test_ensure_generated_benchmark_builds_once_and_regenerates_on_new_sizes(tmp_path, capsys):
    output_dir = tmp_path / "drawn"
    dataset_dict = ensure_generated_benchmark(output_dir, TINY, num_workers=1)
    assert list(dataset_dict) == ["train", "validation", "test"]
    train = dataset_dict["train"]
    assert train.features["image"] == datasets.Image(mode="RGB")
    assert train[0]["image"].size == (128, 384)
    assert train["person_id"][:4] == [1, 1, 2, 2] and dataset_dict["test"]["person_id"][0] == 7
    assert all(row for row in train["attributes"])
    card = (output_dir / "README.md").read_text(encoding="utf-8")
    assert "# Drawn Pedestrians" in card and "| train | 4 | 8 | 16 |" in card and "apache-2.0" in card

    arrow_files = {path: path.stat().st_mtime_ns for path in output_dir.rglob("*.arrow")}
    again = ensure_generated_benchmark(output_dir, TINY, num_workers=1)
    assert {path: path.stat().st_mtime_ns for path in output_dir.rglob("*.arrow")} == arrow_files
    assert again["train"]["captions"] == train["captions"]

    assert (
        main(
            [
                str(output_dir),
                "--num-train-ids",
                "3",
                "--num-val-ids",
                "1",
                "--num-test-ids",
                "1",
                "--images-per-id",
                "1",
                "--num-workers",
                "1",
            ]
        )
        == 0
    )
    assert "| train | 3 | 3 | 6 |" in capsys.readouterr().out
    assert len(datasets.load_from_disk(str(output_dir))["train"]) == 3
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".") and path.is_dir()] == []


def test_generator_settings_reject_bad_values():
    with pytest.raises(ValueError, match="difficulty"):
        GeneratorSettings(difficulty=1.5)
    with pytest.raises(ValueError, match="num_train_ids"):
        GeneratorSettings(num_train_ids=0)


def test_a_benchmark_without_validation_identities_has_no_validation_split(tmp_path):
    built = ensure_generated_benchmark(
        tmp_path / "no-validation",
        GeneratorSettings(num_train_ids=3, num_val_ids=0, num_test_ids=2, images_per_id=2),
        num_workers=1,
    )
    assert sorted(built) == ["test", "train"]
    assert len(built["test"]) == 4


def test_concurrent_callers_wait_for_one_build(tmp_path, caplog):
    """Two training processes starting at once on a missing benchmark: one generates, the other waits and reuses."""
    output_dir = tmp_path / "drawn"
    results, errors = [], []

    def call():
        try:
            results.append(ensure_generated_benchmark(output_dir, TINY, num_workers=1))
        except Exception as error:  # reported below; a thread would otherwise swallow it
            errors.append(error)

    caplog.set_level(logging.INFO, logger="dataset_scripts.generate")
    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    messages = [record.getMessage() for record in caplog.records if record.name == "dataset_scripts.generate"]
    assert sum(message.startswith("Generating") for message in messages) == 1, messages
    assert sum(message.startswith("Reusing") for message in messages) == 1, messages
    assert results[0]["train"]["captions"] == results[1]["train"]["captions"]
