"""Command line: `python -m ivt_search {index,add,query} ...`; see `python -m ivt_search -h`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

from modeling_ivt.cli import CommandParser
from modeling_ivt.image_utils import MAX_IMAGE_PIXELS
from modeling_ivt.loading import add_bf16_argument, add_trust_remote_code_argument, load_model_and_processor
from modeling_ivt.safe_io import atomic_output, check_replaceable

from .index import INDEX_FILE, AddReport, GalleryIndex, ModelMismatchError, read_index_metadata
from .picture import RankedQuery, render_ranked_results


def _add_gallery_arguments(parser: argparse.ArgumentParser) -> None:
    gallery = parser.add_mutually_exclusive_group(required=True)
    gallery.add_argument("--images", help="a folder of images, searched recursively")
    gallery.add_argument("--dataset", help="a benchmark built by dataset_scripts (a datasets.load_from_disk folder)")
    parser.add_argument("--split", default="test", help="split of --dataset to index")
    parser.add_argument(
        "--person-id-from-folder",
        action="store_true",
        help="with --images: each image's person id is the integer name of its folder (<person_id>/<image>)",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="images embedded per forward pass")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="stop at the first file that cannot be read as an image (default: skip it and list it)",
    )


def _add_images(index: GalleryIndex, args: argparse.Namespace) -> AddReport:
    if args.images:
        report = index.add_folder(args.images, person_id_from_folder=args.person_id_from_folder, strict=args.strict)
    else:
        if args.person_id_from_folder:
            raise ValueError("--person-id-from-folder reads ids from --images folders; a --dataset has its own ids")
        report = index.add_split(args.dataset, args.split)
    for image in report.skipped:
        print(f"skipped {image.path}: {image.reason}", file=sys.stderr)
    if report.skipped:
        print(
            f"skipped {len(report.skipped)} unreadable file(s), listed above: fix or remove them and run `add` "
            "to index the fixed ones (--strict stops at the first unreadable file instead)",
            file=sys.stderr,
        )
    return report


def _open_index(args: argparse.Namespace) -> GalleryIndex:
    if not Path(args.index_dir).exists():
        raise FileNotFoundError(
            f"no index at {args.index_dir}: build one with `python -m ivt_search index {args.index_dir} --model MODEL "
            "--images FOLDER` (or --dataset BENCHMARK)"
        )
    model_name = args.model or read_index_metadata(args.index_dir)["model"]["name_or_path"]
    model, processor = load_model_and_processor(
        model_name, args.device, trust_remote_code=args.trust_remote_code, bf16=args.bf16
    )
    return GalleryIndex.open(
        args.index_dir,
        model,
        processor,
        batch_size=getattr(args, "batch_size", 32),
        max_image_pixels=args.max_image_pixels,
    )


def command_index(args: argparse.Namespace) -> int:
    if Path(args.index_dir).exists() and not args.overwrite:
        raise FileExistsError(f"{args.index_dir} exists: use `add` to extend it, or --overwrite to replace it")
    check_replaceable(args.index_dir, INDEX_FILE, inputs=[args.images or args.dataset], what="index folder")
    model, processor = load_model_and_processor(
        args.model, args.device, trust_remote_code=args.trust_remote_code, bf16=args.bf16
    )
    index = GalleryIndex(model, processor, batch_size=args.batch_size, max_image_pixels=args.max_image_pixels)
    _add_images(index, args)
    if len(index) == 0:
        raise ValueError(
            f"no readable image in {args.images}: nothing was indexed and {args.index_dir} was not written"
        )
    index.save(args.index_dir)
    print(f"indexed {len(index)} images with {index.model_name} -> {args.index_dir}")
    return 0


def command_add(args: argparse.Namespace) -> int:
    index = _open_index(args)
    report = _add_images(index, args)
    if report.added == 0:
        gallery = args.images or f"split {args.split} of {args.dataset}"
        reason = (
            f"the {report.already_indexed} image(s) of {gallery} are already in the index (matched by their path)"
            if not report.skipped
            else f"{report.already_indexed} image(s) of {gallery} were already indexed and the others are unreadable"
        )
        print(
            f"added 0 images: {reason}; {args.index_dir} still holds {len(index)}. New files under the folder are "
            "added by the next `add`; to re-embed changed files, rebuild with `index --overwrite`"
        )
        return 0
    index.save(args.index_dir)
    already = f" ({report.already_indexed} already indexed)" if report.already_indexed else ""
    print(f"added {report.added} images{already}; {args.index_dir} now holds {len(index)}")
    return 0


def command_query(args: argparse.Namespace) -> int:
    if args.top_k < 1:
        raise ValueError(f"--top-k must be at least 1, got {args.top_k}")
    person_ids = args.person_id or [None]
    if len(person_ids) == 1:
        person_ids = person_ids * len(args.captions)
    if len(person_ids) != len(args.captions):
        raise ValueError(
            f"--person-id is given once or once per caption: got {len(person_ids)} for {len(args.captions)} captions"
        )
    if args.person_id and not args.grid:
        raise ValueError("--person-id frames the hits of the --grid picture: add --grid FILE.png, or leave it out")
    index = _open_index(args)
    if args.person_id and all(image["person_id"] is None for image in index.images):
        raise ValueError(
            f"--person-id: {args.index_dir} holds no person ids (a folder indexed without --person-id-from-folder), "
            "so no hit can be framed as that person; rebuild it with --person-id-from-folder (images in "
            "<person_id>/ folders) or leave --person-id out"
        )
    results = index.search(args.captions, top_k=args.top_k, method=args.method)
    if args.json:
        print(json.dumps([[hit.__dict__ for hit in hits] for hits in results], indent=1))
    else:
        for caption, hits in zip(args.captions, results, strict=True):
            print(f"\n{caption}")
            print(f"{'rank':>4}  {'score':>6}  {'person':>6}  path")
            for hit in hits:
                person = "-" if hit.person_id is None else str(hit.person_id)
                print(f"{hit.rank:>4}  {hit.score:6.3f}  {person:>6}  {hit.path}")
    if args.grid:
        rows = [
            RankedQuery(caption, hits, person_id)
            for caption, hits, person_id in zip(args.captions, results, person_ids, strict=True)
        ]
        picture = render_ranked_results(rows, index.load_image)
        grid = Path(args.grid)
        with atomic_output(grid) as partial:
            picture.save(partial, format="PNG")
        print(f"picture -> {grid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m ivt_search", description="Search a gallery of pedestrian photos by description with an IVT or IRRA-family model."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    index = commands.add_parser("index", help="embed a gallery and save a new index")
    index.add_argument("index_dir")
    index.add_argument("--model", required=True, help="a saved IVT or IRRA-family model folder or a Hub repository id")
    _add_gallery_arguments(index)
    index.add_argument("--overwrite", action="store_true", help="replace an existing index")
    index.set_defaults(run=command_index)

    add = commands.add_parser("add", help="embed more images into an existing index")
    add.add_argument("index_dir")
    add.add_argument("--model", help="default: the model recorded in the index")
    _add_gallery_arguments(add)
    add.set_defaults(run=command_add)

    query = commands.add_parser("query", help="rank the gallery for one or more captions")
    query.add_argument("index_dir")
    query.add_argument("captions", nargs="+", help="descriptions of the person to find")
    query.add_argument("--model", help="default: the model recorded in the index")
    query.add_argument("--top-k", type=int, default=10, help="hits shown per caption")
    query.add_argument("--method", choices=["exact", "faiss"], default="exact", help="see bench/search_bench.py")
    query.add_argument(
        "--person-id",
        type=int,
        action="append",
        help="the person the captions describe: once for all captions, or once per caption in order; frames hits "
        "green (that person) or red (someone else) in the --grid picture",
    )
    query.add_argument("--grid", help="write the ranked-result picture to this PNG")
    query.add_argument("--json", action="store_true", help="print the hits as JSON")
    query.add_argument("--batch-size", type=int, default=32, help="captions embedded per forward pass")
    query.set_defaults(run=command_query)

    for command in (index, add, query):
        command.add_argument(
            "--device", default="cuda" if torch.cuda.is_available() else "cpu", help="where the model runs"
        )
        add_trust_remote_code_argument(command)
        add_bf16_argument(command)
        command.add_argument(
            "--max-image-pixels",
            type=int,
            default=MAX_IMAGE_PIXELS,
            help="refuse image files with more pixels (width x height, read before decoding); 0: no limit",
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ModelMismatchError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
