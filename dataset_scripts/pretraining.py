"""Image-caption corpora for pre-training, as one stream of `{"image", "caption", "pair_id"}` pairs.

Three kinds of source:
(a) a JSON file holding a list of `{"image": path, "caption": text}` records (the ALBEF-style layout used for
    Conceptual Captions, SBU, COCO and Visual Genome); relative image paths are taken from `image_root`, by default
    the JSON file's folder; a record whose `caption` is a list gives one pair per caption;
(b) an `imagefolder` folder with `metadata.jsonl` files (`file_name` plus a text column, `caption` or `text` by
    default), in the folder itself or in sub-folders, each naming files relative to its own folder;
(c) any Hugging Face dataset, map-style or streaming (`IterableDataset`), with an image column and a text column;
    a string that is neither (a) nor (b) is passed to `datasets.load_dataset(..., streaming=True)`, so corpora of
    millions of pairs are read as they stream and never downloaded first.

Pairs are produced lazily. A broken record (missing or undecodable image, missing or empty caption, a malformed
metadata line) is skipped and counted: `corpus.skipped` after (or during) iteration, with a logged warning naming
the first few at the end of each pass. `pair_id` is the pair's position in the source (counting skipped ones), so it
does not depend on which records happen to be broken. Images are decoded and converted to RGB.

CLI: `python -m dataset_scripts.pretraining SOURCE [--image-column ...] [--text-column ...] [--output DIR]` counts
the usable pairs (and with `--output` saves them as a Hugging Face dataset).
"""

from __future__ import annotations

import io
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import datasets
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from modeling_ivt.cli import CommandParser, user_errors
from modeling_ivt.safe_io import atomic_output, check_replaceable


logger = logging.getLogger(__name__)

MAX_LOGGED_SKIPS = 5
PAIR_FEATURES = datasets.Features(
    {"image": datasets.Image(), "caption": datasets.Value("string"), "pair_id": datasets.Value("int64")}
)


class _Skip(Exception):
    """A record that cannot become a pair; the message says why."""


def _open_image(source, where: str) -> Image.Image:
    try:
        if isinstance(source, Image.Image):
            image = source
        elif isinstance(source, dict) and source.get("bytes") is not None:
            image = Image.open(io.BytesIO(source["bytes"]))
        elif isinstance(source, dict) and source.get("path"):
            image = Image.open(source["path"])
        elif isinstance(source, (str, os.PathLike)):
            image = Image.open(source)
        else:
            raise _Skip(f"{where}: no image (found {type(source).__name__})")
        image.load()
        return image.convert("RGB")
    except FileNotFoundError:
        raise _Skip(f"{where}: image file {source!r:.200} not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise _Skip(f"{where}: image does not decode ({error})") from None


def _clean_caption(caption, where: str) -> str:
    if not isinstance(caption, str) or not caption.strip():
        raise _Skip(f"{where}: caption missing or empty ({caption!r:.80})")
    return caption.strip()


class PairCorpus:
    """An iterable of `{"image": PIL RGB image, "caption": str, "pair_id": int}` over one source; see the module doc.

    `skipped` counts the broken records met so far in the current pass; `skip_reasons` keeps the first few.
    """

    def __init__(self, records, describe: str):
        self._records = records  # a callable giving an iterator of (where, image source, caption) or a _Skip
        self.describe = describe
        self.skipped = 0
        self.skip_reasons: list[str] = []

    def __iter__(self) -> Iterator[dict]:
        self.skipped = 0
        self.skip_reasons = []
        for pair_id, item in enumerate(self._records()):
            try:
                if isinstance(item, _Skip):
                    raise item
                where, image_source, caption = item
                caption = _clean_caption(caption, where)
                image = _open_image(image_source, where)
            except _Skip as skip:
                self.skipped += 1
                if len(self.skip_reasons) < MAX_LOGGED_SKIPS:
                    self.skip_reasons.append(str(skip))
                continue
            yield {"image": image, "caption": caption, "pair_id": pair_id}
        if self.skipped:
            logger.warning(
                "Skipped %d broken record(s) in %s, e.g.:\n  %s",
                self.skipped,
                self.describe,
                "\n  ".join(self.skip_reasons),
            )


def _json_records(json_file: Path, image_root: Path):
    def records():
        try:
            entries = json.loads(json_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{json_file} is not valid JSON: {error}") from None
        if not isinstance(entries, list):
            raise ValueError(f"{json_file} must hold a JSON list of {{'image', 'caption'}} records")
        for index, entry in enumerate(entries):
            where = f"{json_file.name} record {index}"
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
                yield _Skip(f"{where}: expected an object with a string 'image'")
                continue
            captions = entry.get("caption")
            for caption in captions if isinstance(captions, list) and captions else [captions]:
                yield where, image_root / entry["image"], caption

    return records


def _imagefolder_records(folder: Path, text_column: str | None):
    metadata_files = sorted(folder.rglob("metadata.jsonl"))

    def records():
        for metadata_file in metadata_files:
            relative = metadata_file.relative_to(folder)
            with open(metadata_file, encoding="utf-8") as handle:
                for line_number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    where = f"{relative} line {line_number}"
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError as error:
                        yield _Skip(f"{where}: malformed JSON ({error})")
                        continue
                    if not isinstance(entry, dict) or not isinstance(entry.get("file_name"), str):
                        yield _Skip(f"{where}: no string 'file_name'")
                        continue
                    column = text_column or next((name for name in ("caption", "text") if name in entry), "caption")
                    yield where, metadata_file.parent / entry["file_name"], entry.get(column)

    return records


def _hf_records(dataset, image_column: str, text_column: str):
    features = dataset.features
    if features is not None:
        for column in (image_column, text_column):
            if column not in features:
                raise ValueError(f"dataset has no column {column!r}; columns: {list(features)}")
        if isinstance(features[image_column], datasets.Image):
            # Decode ourselves, so that one broken image is a skipped record instead of an exception inside datasets.
            dataset = dataset.cast_column(image_column, datasets.Image(decode=False))
    dataset = dataset.select_columns([image_column, text_column])

    def records():
        for index, example in enumerate(dataset):
            yield f"example {index}", example[image_column], example[text_column]

    return records


def pair_corpus(
    source,
    image_column: str = "image",
    text_column: str | None = None,
    image_root: str | os.PathLike | None = None,
    split: str = "train",
    streaming: bool = True,
) -> PairCorpus:
    """A `PairCorpus` over `source`: a JSON file (a), an imagefolder with metadata.jsonl (b), a `datasets.Dataset` /
    `IterableDataset` / `DatasetDict` (c), or a dataset name or path for `datasets.load_dataset` (c, streamed).

    `text_column` defaults to `caption` (JSON, Hugging Face datasets) or to `caption`/`text` (imagefolder).
    `image_root` resolves the relative image paths of a JSON source (default: the JSON file's folder).
    """
    if isinstance(source, datasets.DatasetDict | datasets.IterableDatasetDict):
        source = source[split]
    if isinstance(source, datasets.Dataset | datasets.IterableDataset):
        return PairCorpus(_hf_records(source, image_column, text_column or "caption"), f"dataset {source}")
    path = Path(source)
    if path.is_file() and path.suffix == ".json":
        root = Path(image_root) if image_root is not None else path.parent
        return PairCorpus(_json_records(path, root), str(path))
    if path.is_dir() and any(path.rglob("metadata.jsonl")):
        return PairCorpus(_imagefolder_records(path, text_column), str(path))
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"{source}: expected a .json list of records, an imagefolder with metadata.jsonl, or a dataset"
        )
    dataset = datasets.load_dataset(str(source), split=split, streaming=streaming)
    return PairCorpus(_hf_records(dataset, image_column, text_column or "caption"), str(source))


def save_pairs(corpus: PairCorpus, output_dir: str | os.PathLike, overwrite: bool = False) -> datasets.Dataset:
    """Write the usable pairs as a Hugging Face dataset (images embedded) at `output_dir`, atomically."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    check_replaceable(output_dir, datasets.config.DATASET_INFO_FILENAME, what="pair dataset folder")
    output_dir.parent.mkdir(parents=True, exist_ok=True)

    def pairs():
        yield from tqdm(corpus, desc="Reading pairs", unit="pair", mininterval=1.0)

    with (
        tempfile.TemporaryDirectory(prefix=f".{output_dir.name}.cache-", dir=output_dir.parent) as cache_dir,
        atomic_output(output_dir, directory=True) as staged,
    ):
        dataset = datasets.Dataset.from_generator(pairs, features=PAIR_FEATURES, cache_dir=cache_dir)
        dataset.save_to_disk(str(staged))
        del dataset
    return datasets.load_from_disk(str(output_dir))


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m dataset_scripts.pretraining", description="Read an image-caption corpus as pairs."
    )
    parser.add_argument(
        "source", help="a .json list of {image, caption}, an imagefolder with metadata.jsonl, or a dataset name/path"
    )
    parser.add_argument("--image-column", default="image")
    parser.add_argument("--text-column", default=None)
    parser.add_argument("--image-root", default=None, help="folder of the relative image paths of a JSON source")
    parser.add_argument("--split", default="train")
    parser.add_argument("--output", default=None, help="save the pairs as a Hugging Face dataset here")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    with user_errors():
        corpus = pair_corpus(args.source, args.image_column, args.text_column, args.image_root, args.split)
        if args.output:
            pairs = len(save_pairs(corpus, args.output, overwrite=args.overwrite))
        else:
            pairs = sum(1 for _ in tqdm(corpus, desc="Reading pairs", unit="pair", mininterval=1.0))
    print(
        f"{pairs} pairs, {corpus.skipped} broken records skipped"
        + (f", saved to {args.output}" if args.output else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
