"""Assemble a Hugging Face Space folder for the demo: app.py, README.md (Space front matter), requirements.txt, this
project's packages, the index and a copy of its gallery (benchmark splits saved alone), and the model when it is a
local folder (a Hub id is loaded by the Space at start-up). The folder runs as is with `python app.py`; upload it with
`hf upload USER/SPACE SPACE_DIR . --repo-type space`.

    python -m demo.build_space outputs/space --index INDEX_DIR [--model FOLDER_OR_HUB_ID] [--overwrite]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import datasets

from modeling_ivt.cli import CommandParser, user_errors
from modeling_ivt.safe_io import atomic_output, check_replaceable
from ivt_search.index import EMBEDDINGS_FILE, INDEX_FILE, read_index_metadata

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGES = ("ivt_search", "modeling_ivt")
SPACE_FILES = ("app.py", "README.md", "requirements.txt")


def _copy_gallery(source: dict, index_dir: Path, target: Path) -> None:
    """Copy one index source (a folder, or one split of a saved benchmark) to `target`."""
    if source["type"] == "folder":
        shutil.copytree(index_dir / source["root"], target)
    else:
        split = datasets.load_from_disk(str(index_dir / source["path"]))
        if isinstance(split, datasets.DatasetDict):
            split = datasets.DatasetDict({source["split"]: split[source["split"]]})
        split.save_to_disk(str(target))


def build_space(index_dir, output_dir, model: str | None = None, overwrite: bool = False) -> Path:
    """Write the Space folder at `output_dir` (atomically: a complete temporary folder renamed into place)."""
    index_dir, output_dir = Path(index_dir).resolve(), Path(output_dir)
    metadata = read_index_metadata(index_dir)
    model = model or metadata["model"]["name_or_path"]
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    check_replaceable(output_dir, "app.py", inputs=[index_dir], what="Space folder")
    with atomic_output(output_dir, directory=True) as staging:
        for name in SPACE_FILES:
            shutil.copy2(REPOSITORY / "demo" / name, staging / name)
        for package in PACKAGES:
            shutil.copytree(REPOSITORY / package, staging / package, ignore=shutil.ignore_patterns("__pycache__"))
        if Path(model).is_dir():
            shutil.copytree(model, staging / "model")
        (staging / "index").mkdir()
        for number, source in enumerate(metadata["sources"]):
            key = "root" if source["type"] == "folder" else "path"
            name = f"{number}-{Path(source[key]).resolve().name}"
            _copy_gallery(source, index_dir, staging / "gallery" / name)
            source[key] = os.path.join("..", "gallery", name)
        shutil.copy2(index_dir / EMBEDDINGS_FILE, staging / "index" / EMBEDDINGS_FILE)
        (staging / "index" / INDEX_FILE).write_text(json.dumps(metadata, indent=1), encoding="utf-8")
    return output_dir


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m demo.build_space", description=__doc__.split("\n\n")[0])
    parser.add_argument("output_dir")
    parser.add_argument("--index", required=True)
    parser.add_argument("--model", help="default: the model recorded in the index")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    with user_errors():
        folder = build_space(args.index, args.output_dir, args.model, args.overwrite)
    print(f"Space folder -> {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
