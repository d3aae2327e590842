"""Build the text-based person retrieval benchmarks (CUHK-PEDES, ICFG-PEDES, RSTPReid) as Hugging Face datasets.

The authors distribute each benchmark as one JSON list (one record per image, all captions of the image in its
record) plus an `imgs/` folder. `build_benchmark` checks everything first (records, split values, every image
decodes), reports all problems together, and only then writes a `DatasetDict` with `save_to_disk`, into a
temporary folder that is renamed to OUTPUT_DIR at the very end.

Rows keep the raw file's order within each split and have the columns

- `image`: the original file bytes, embedded (the saved dataset does not need RAW_ROOT any more); the feature is
  `Image(mode="RGB")`, so grayscale, palette and RGBA files decode to RGB without being rewritten;
- `image_path`: the path as written in the raw file;
- `person_id`: int64, exactly the raw id;
- `captions`: all captions of the image, surrounding whitespace stripped, otherwise unchanged;
- `attributes`: the record's attribute phrases where the raw file has an `attributes` list (the generated benchmark),
  else an empty list.

Usage: `python -m dataset_scripts.build {cuhk-pedes,icfg-pedes,rstpreid} RAW_ROOT OUTPUT_DIR [--overwrite]`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import datasets
from tqdm.auto import tqdm

from modeling_ivt.cli import CommandParser
from modeling_ivt.image_utils import MAX_IMAGE_PIXELS, ImageTooLargeError, open_image
from modeling_ivt.safe_io import PathOutsideRootError, atomic_output, check_replaceable, resolve_inside


logger = logging.getLogger(__name__)

MAX_REPORTED_PROBLEMS = 20

FEATURES = datasets.Features(
    {
        "image": datasets.Image(mode="RGB"),
        "image_path": datasets.Value("string"),
        "person_id": datasets.Value("int64"),
        "captions": datasets.List(datasets.Value("string")),
        "attributes": datasets.List(datasets.Value("string")),
    }
)


@dataclass(frozen=True)
class BenchmarkLayout:
    """Where a benchmark keeps its annotations and how its records are spelled."""

    pretty_name: str
    annotation_files: tuple[str, ...]  # accepted names, the first one found is used
    image_key: str
    splits: dict[str, str]  # raw split value -> DatasetDict split name
    homepage: str
    citation: str


BENCHMARKS: dict[str, BenchmarkLayout] = {
    "cuhk-pedes": BenchmarkLayout(
        pretty_name="CUHK-PEDES",
        annotation_files=("reid_raw.json",),
        image_key="file_path",
        splits={"train": "train", "val": "validation", "test": "test"},
        homepage="https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description",
        citation="""@inproceedings{li2017person,
  title={Person Search with Natural Language Description},
  author={Li, Shuang and Xiao, Tong and Li, Hongsheng and Zhou, Bolei and Yue, Dayu and Wang, Xiaogang},
  booktitle={CVPR},
  year={2017}
}""",
    ),
    "icfg-pedes": BenchmarkLayout(
        pretty_name="ICFG-PEDES",
        annotation_files=("ICFG-PEDES.json", "ICFG_PEDES.json"),
        image_key="file_path",
        splits={"train": "train", "test": "test"},
        homepage="https://github.com/zifyloo/SSAN",
        citation="""@article{ding2021semantically,
  title={Semantically Self-Aligned Network for Text-to-Image Part-aware Person Re-identification},
  author={Ding, Zefeng and Ding, Changxing and Shao, Zhiyin and Tao, Dacheng},
  journal={arXiv preprint arXiv:2107.12666},
  year={2021}
}""",
    ),
    "rstpreid": BenchmarkLayout(
        pretty_name="RSTPReid",
        annotation_files=("data_captions.json",),
        image_key="img_path",
        splits={"train": "train", "val": "validation", "test": "test"},
        homepage="https://github.com/NjtechCVLab/RSTPReid-Dataset",
        citation="""@inproceedings{zhu2021dssl,
  title={DSSL: Deep Surroundings-person Separation Learning for Text-based Person Retrieval},
  author={Zhu, Aichun and Wang, Zijie and Li, Yifeng and Wan, Xili and Jin, Jing and Wang, Tian and
          Hu, Fangqiang and Hua, Gang},
  booktitle={ACM Multimedia},
  year={2021}
}""",
    ),
}


class DatasetBuildError(ValueError):
    """The raw files cannot be turned into a dataset; `problems` lists every reason found."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        shown = "\n".join(f"  - {problem}" for problem in self.problems[:MAX_REPORTED_PROBLEMS])
        more = len(self.problems) - MAX_REPORTED_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{len(self.problems)} problem(s) in {source}:\n{shown}{tail}")


@dataclass
class _Row:
    split: str
    image_file: Path
    image_path: str
    person_id: int
    captions: list[str]
    attributes: list[str]


def find_annotation_file(name: str, raw_root: str | os.PathLike) -> Path:
    """The benchmark's annotation JSON under `raw_root` (ICFG-PEDES: either spelling of the file name)."""
    layout = _layout(name)
    raw_root = Path(raw_root)
    if not raw_root.is_dir():
        raise DatasetBuildError(str(raw_root), [f"RAW_ROOT {raw_root} is not a directory"])
    for candidate in layout.annotation_files:
        if (raw_root / candidate).is_file():
            return raw_root / candidate
    expected = " or ".join(layout.annotation_files)
    raise DatasetBuildError(str(raw_root), [f"no annotation file {expected} in {raw_root}"])


def _layout(name: str) -> BenchmarkLayout:
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; expected one of {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


def _resolve_image(raw_root: Path, image_path: str) -> Path:
    """
    Raw paths are relative to `imgs/`; a path that already starts with `imgs/` is taken from RAW_ROOT. Either way the
    file must be inside RAW_ROOT (`PathOutsideRootError` for an absolute path, `..` or a link leading out).
    """
    candidate = resolve_inside(raw_root, Path("imgs") / image_path, what="image path")
    if not candidate.exists() and (raw_root / image_path).exists():
        return resolve_inside(raw_root, image_path, what="image path")
    return candidate


def _check_records(name: str, annotation_file: Path, raw_root: Path) -> tuple[list[_Row], list[str]]:
    """Parse and type-check every record; returns the rows that passed and the problems of the others."""
    layout = _layout(name)
    try:
        with open(annotation_file, encoding="utf-8") as handle:
            records = json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DatasetBuildError(str(annotation_file), [f"{annotation_file.name} is not valid JSON: {error}"]) from None
    if not isinstance(records, list):
        raise DatasetBuildError(
            str(annotation_file), [f"{annotation_file.name} must hold a JSON list, found {type(records).__name__}"]
        )

    rows, problems = [], []
    first_seen: dict[str, tuple[int, str]] = {}
    for index, record in enumerate(records):
        where = f"{annotation_file.name} record {index}"
        if not isinstance(record, dict):
            problems.append(f"{where}: expected an object, found {type(record).__name__}")
            continue
        record_problems = []
        person_id = record.get("id")
        if "id" not in record:
            record_problems.append("missing key 'id'")
        elif isinstance(person_id, bool) or not isinstance(person_id, int):
            record_problems.append(f"'id' must be an integer, found {person_id!r}")
        image_path = record.get(layout.image_key)
        if layout.image_key not in record:
            record_problems.append(f"missing key {layout.image_key!r}")
        elif not isinstance(image_path, str) or not image_path.strip():
            record_problems.append(f"{layout.image_key!r} must be a non-empty string, found {image_path!r}")
        split = record.get("split")
        if "split" not in record:
            record_problems.append("missing key 'split'")
        elif split not in layout.splits:
            record_problems.append(f"unknown split {split!r} (expected one of {sorted(layout.splits)})")
        captions = record.get("captions")
        if "captions" not in record:
            record_problems.append("missing key 'captions'")
        elif not isinstance(captions, list) or not all(isinstance(caption, str) for caption in captions):
            record_problems.append(f"'captions' must be a list of strings, found {captions!r:.80}")
        elif not captions:
            record_problems.append("'captions' is empty")
        elif any(not caption.strip() for caption in captions):
            record_problems.append("a caption is empty or whitespace only")
        attributes = record.get("attributes", [])
        if not isinstance(attributes, list) or not all(isinstance(phrase, str) for phrase in attributes):
            record_problems.append(f"'attributes' must be a list of strings, found {attributes!r:.80}")
        if not record_problems:
            earlier_index, earlier_split = first_seen.setdefault(image_path, (index, split))
            if earlier_split != split:
                record_problems.append(
                    f"image {image_path!r} is in split {split!r} and also in split {earlier_split!r} "
                    f"(record {earlier_index}): an image may belong to one split only"
                )
        if not record_problems:
            try:
                image_file = _resolve_image(raw_root, image_path)
            except PathOutsideRootError as error:
                record_problems.append(str(error))
        if record_problems:
            problems.extend(f"{where}: {problem}" for problem in record_problems)
            continue
        rows.append(
            _Row(
                split=layout.splits[split],
                image_file=image_file,
                image_path=image_path,
                person_id=person_id,
                captions=[caption.strip() for caption in captions],
                attributes=[phrase.strip() for phrase in attributes],
            )
        )
    return rows, problems


def _check_images(rows: list[_Row], annotation_name: str, max_image_pixels: int | None = None) -> list[str]:
    """
    Open and fully decode every referenced image (catches missing, truncated, non-image and, before decoding, too
    large files).
    """
    problems = []
    for row in tqdm(rows, desc="Checking images", unit="img", mininterval=1.0):
        if not row.image_file.is_file():
            problems.append(f"{annotation_name}: image {row.image_path!r} not found at {row.image_file}")
            continue
        try:
            open_image(row.image_file, max_pixels=max_image_pixels, mode=None)
        except ImageTooLargeError as error:
            problems.append(f"{annotation_name}: {error}")
        except ValueError as error:
            problems.append(f"{annotation_name}: image {row.image_path!r} ({row.image_file}) does not decode: {error}")
    return problems


def _generate_rows(rows: list[_Row]):
    for row in rows:
        yield {
            "image": {"bytes": row.image_file.read_bytes(), "path": row.image_path},
            "image_path": row.image_path,
            "person_id": row.person_id,
            "captions": row.captions,
            "attributes": row.attributes,
        }


def split_counts(dataset_dict: datasets.DatasetDict) -> dict[str, dict[str, int]]:
    """Identities, images and captions per split (reads only the id and caption columns)."""
    counts = {}
    for split, split_ds in dataset_dict.items():
        person_ids = split_ds["person_id"]
        captions = split_ds.select_columns(["captions"]).with_format("arrow")["captions"]
        counts[split] = {
            "identities": len(set(person_ids)),
            "images": len(split_ds),
            "captions": int(sum(len(row) for row in captions.to_pylist())),
        }
    return counts


def format_counts_table(counts: dict[str, dict[str, int]]) -> str:
    """A Markdown table of `split_counts`: printed by the CLI and written into the dataset card."""
    lines = ["| split | identities | images | captions |", "|---|---:|---:|---:|"]
    for split, numbers in counts.items():
        lines.append(f"| {split} | {numbers['identities']:,} | {numbers['images']:,} | {numbers['captions']:,} |")
    return "\n".join(lines)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dataset_card(name: str, counts: dict[str, dict[str, int]], annotation_file: Path) -> str:
    """README.md for a built benchmark: counts, provenance, licence note and citation."""
    layout = _layout(name)
    return f"""---
pretty_name: {layout.pretty_name}
license: other
license_name: research-only-on-request
task_categories:
- text-to-image
- image-to-text
tags:
- text-based-person-retrieval
- person-re-identification
configs:
- config_name: default
---

# {layout.pretty_name} (built for IVT-HF)

Text-based person retrieval: pedestrian images, each with its natural-language descriptions. One row per image,
in the order of the authors' annotation file, with columns `image` (embedded original file; decodes to RGB),
`image_path` (as in the annotation file), `person_id` (the raw id), `captions` (all captions of the image) and
`attributes` (attribute phrases where the raw file has them, else empty).

## Counts

{format_counts_table(counts)}

## Provenance

Built with `python -m dataset_scripts.build {name} RAW_ROOT OUTPUT_DIR` from the authors' raw release:
annotation file `{annotation_file.name}` (sha256 `{_sha256(annotation_file)}`) and its `imgs/` folder.
Load with `datasets.load_from_disk(OUTPUT_DIR)`.

## Licence

{layout.pretty_name} is distributed by its authors on request, for non-commercial research only
({layout.homepage}). This built copy inherits those terms: keep it to yourself and never redistribute it,
including on the Hugging Face Hub.

## Citation

```bibtex
{layout.citation}
```
"""


def atomic_save(dataset_dict: datasets.DatasetDict, output_dir: Path, card: str, overwrite: bool) -> None:
    """Save next to `output_dir`, then swap it in, so that OUTPUT_DIR only ever holds a complete dataset."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    with atomic_output(output_dir, directory=True) as staging:
        dataset_dict.save_to_disk(str(staging))
        (staging / "README.md").write_text(card, encoding="utf-8")


def build_benchmark(
    name: str,
    raw_root: str | os.PathLike,
    output_dir: str | os.PathLike,
    overwrite: bool = False,
    max_image_pixels: int | None = None,
) -> datasets.DatasetDict:
    """Check the raw files of benchmark `name`, build its `DatasetDict` and save it to `output_dir`.

    Raises `DatasetBuildError` listing every problem (records and images) before anything is written, and
    `FileExistsError` if `output_dir` exists and `overwrite` is false. Returns the dataset loaded from `output_dir`.
    """
    layout = _layout(name)
    raw_root, output_dir = Path(raw_root), Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    check_replaceable(output_dir, datasets.config.DATASETDICT_JSON_FILENAME, inputs=[raw_root], what="output folder")
    annotation_file = find_annotation_file(name, raw_root)
    rows, problems = _check_records(name, annotation_file, raw_root)
    problems += _check_images(rows, annotation_file.name, max_image_pixels)
    if problems:
        raise DatasetBuildError(str(annotation_file), problems)
    if not rows:
        raise DatasetBuildError(str(annotation_file), [f"{annotation_file.name} holds no records"])

    split_names = list(dict.fromkeys(layout.splits.values()))
    with tempfile.TemporaryDirectory(prefix="ivt-build-cache-") as cache_dir:
        dataset_dict = datasets.DatasetDict()
        for split in split_names:
            split_rows = [row for row in rows if row.split == split]
            if not split_rows:
                logger.warning("%s has no %s records: the dataset has no %s split", annotation_file.name, split, split)
                continue
            dataset_dict[split] = datasets.Dataset.from_generator(
                _generate_rows,
                gen_kwargs={"rows": split_rows},
                features=FEATURES,
                cache_dir=cache_dir,
                split=datasets.NamedSplit(split),
            )
        counts = split_counts(dataset_dict)
        atomic_save(dataset_dict, output_dir, dataset_card(name, counts, annotation_file), overwrite)
        del dataset_dict
    logger.info("Built %s at %s:\n%s", layout.pretty_name, output_dir, format_counts_table(counts))
    return datasets.load_from_disk(str(output_dir))


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m dataset_scripts.build",
        description="Build a text-based person retrieval benchmark from its raw files as a Hugging Face dataset.",
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS), help="which benchmark RAW_ROOT holds")
    parser.add_argument("raw_root", help="folder with the annotation JSON and imgs/")
    parser.add_argument("output_dir", help="where to save the DatasetDict (load it with datasets.load_from_disk)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUTPUT_DIR built earlier")
    parser.add_argument(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help="refuse images with more pixels (width x height, read before decoding); 0: no limit",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        dataset_dict = build_benchmark(
            args.name, args.raw_root, args.output_dir, overwrite=args.overwrite, max_image_pixels=args.max_image_pixels
        )
    except (DatasetBuildError, FileExistsError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"{BENCHMARKS[args.name].pretty_name} saved to {args.output_dir}")
    print(format_counts_table(split_counts(dataset_dict)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
