"""Make the README's search pictures with a given model: docs/images/search_result.png (the CLI's ranked-result
picture for two test captions of the generated benchmark) and docs/images/demo.png (the demo in headless Chromium).

    python -m demo.readme_images --model outputs/ivt-drawn-pedestrians/best

The benchmark is generated at --dataset if it is not there yet (the training default, data/drawn-pedestrians) and
its test split is indexed at --index-dir.
"""

from __future__ import annotations

import sys
from pathlib import Path

import datasets

from dataset_scripts.generate import ensure_generated_benchmark
from ivt_search.__main__ import main as search_cli

from .screenshot import find_chromium
from .screenshot import main as screenshot_cli
from modeling_ivt.cli import CommandParser


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m demo.readme_images", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a saved IVT folder or a Hub repository id")
    parser.add_argument("--dataset", default="data/drawn-pedestrians")
    parser.add_argument("--index-dir", default="outputs/search-index-drawn-pedestrians")
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[0, 37], help="test rows whose first caption is queried"
    )
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--images-dir", default="docs/images")
    args = parser.parse_args(argv)

    if Path(args.model).is_dir():  # the demo server runs in another folder
        args.model = str(Path(args.model).resolve())
    test = ensure_generated_benchmark(args.dataset)["test"]
    if not isinstance(test, datasets.Dataset) or max(args.rows) >= len(test):
        parser.error(f"--rows must be below the test split's {len(test)} rows")
    if search_cli(["index", args.index_dir, "--model", args.model, "--dataset", args.dataset, "--overwrite"]):
        return 1
    captions = [test[row]["captions"][0] for row in args.rows]
    grid = f"{args.images_dir}/search_result.png"
    query = ["query", args.index_dir, *captions, "--top-k", str(args.top_k), "--grid", grid]
    for row in args.rows:
        query += ["--person-id", str(test[row]["person_id"])]
    if search_cli(query):
        return 1
    if find_chromium() is None:
        print("no chromium on PATH: skipped docs/images/demo.png", file=sys.stderr)
        return 1
    return screenshot_cli(
        ["--index", args.index_dir, "--query", captions[0], "--output", f"{args.images_dir}/demo.png"]
    )


if __name__ == "__main__":
    sys.exit(main())
