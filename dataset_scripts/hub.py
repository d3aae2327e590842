"""
Publish a built benchmark on the Hugging Face Hub, refusing the licence-restricted ones.

    python -m dataset_scripts.hub BUILT_DIR REPO_ID [--private]

CUHK-PEDES, ICFG-PEDES and RSTPReid are distributed by their authors on request, for research only: their built
copies carry `license_name: research-only-on-request` in their dataset card and are never pushed. The generated
benchmark (Apache-2.0) can be shared.
"""

import logging
from pathlib import Path

import datasets
import yaml
from huggingface_hub import create_repo, upload_file

from modeling_ivt.cli import CommandParser

from .build import BENCHMARKS

logger = logging.getLogger(__name__)

RESTRICTED_LICENSE_NAME = "research-only-on-request"


class RestrictedDatasetError(PermissionError):
    """Raised instead of publishing a dataset whose licence forbids redistribution."""


def card_metadata(built_dir: Path) -> dict:
    """The YAML front matter of a built dataset's card (README.md)."""
    card = Path(built_dir) / "README.md"
    if not card.is_file():
        raise RestrictedDatasetError(
            f"{built_dir} has no dataset card (README.md), so its licence is unknown: refusing to publish it"
        )
    text = card.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return {}
    return yaml.safe_load(text.split("---", 2)[1]) or {}


def check_redistributable(built_dir: Path) -> dict:
    """Raise `RestrictedDatasetError` for the licence-restricted benchmarks; return the card metadata otherwise."""
    metadata = card_metadata(built_dir)
    restricted_names = {layout.pretty_name for layout in BENCHMARKS.values()}
    if metadata.get("license_name") == RESTRICTED_LICENSE_NAME or metadata.get("pretty_name") in restricted_names:
        raise RestrictedDatasetError(
            f"{built_dir} is {metadata.get('pretty_name', 'a licence-restricted benchmark')}, distributed by its "
            "authors on request for research only: it must never be redistributed, so it is not pushed to the Hub"
        )
    return metadata


def push_benchmark_to_hub(built_dir, repo_id: str, private: bool = False):
    """Push a built (redistributable) benchmark with its dataset card; returns the commit info of the data upload."""
    built_dir = Path(built_dir)
    check_redistributable(built_dir)
    dataset_dict = datasets.load_from_disk(str(built_dir))
    create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    upload_file(
        path_or_fileobj=str(built_dir / "README.md"),
        path_in_repo="README.md",
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Dataset card",
    )
    info = dataset_dict.push_to_hub(repo_id, private=private, commit_message="Upload the built benchmark")
    logger.info("pushed %s to the dataset repository %s", built_dir, repo_id)
    return info


def main(argv=None) -> int:
    parser = CommandParser(description=__doc__)
    parser.add_argument("built_dir", type=Path, help="a folder written by dataset_scripts.build or .generate")
    parser.add_argument("repo_id", help="dataset repository, e.g. your-name/drawn-pedestrians")
    parser.add_argument("--private", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        info = push_benchmark_to_hub(args.built_dir, args.repo_id, args.private)
    except RestrictedDatasetError as error:
        parser.exit(2, f"error: {error}\n")
    print(f"pushed {args.built_dir} to {args.repo_id}: {info.commit_url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
