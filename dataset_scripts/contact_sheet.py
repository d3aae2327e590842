"""Draw a contact sheet of a few Drawn Pedestrians identities with one caption per image (the picture in docs/datasets.md).

Usage: `python -m dataset_scripts.contact_sheet docs/images/generated_benchmark.png [--identities 4 --seed 0]`.
Identities are shown in near-duplicate pairs (attribute distance 1 or 2), the case the benchmark is built around.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from modeling_ivt.cli import CommandParser, user_errors

from .generate import IMAGE_HEIGHT, IMAGE_WIDTH, GeneratorSettings, generate_raw


THUMB_WIDTH, THUMB_HEIGHT = IMAGE_WIDTH, IMAGE_HEIGHT
TEXT_WIDTH = 250
MARGIN = 10


def _near_duplicate_rows(records: list[dict], count: int) -> list[list[dict]]:
    """Group records by identity; pick identities far from each other, each followed by its closest look-alike."""
    by_id: dict[int, list[dict]] = {}
    for record in records:
        by_id.setdefault(record["id"], []).append(record)
    phrases = {pid: set().union(*(record["attributes"] for record in rows)) for pid, rows in by_id.items()}

    def distance(first: int, second: int) -> int:
        return len(phrases[first] ^ phrases[second])

    chosen: list[int] = []
    while len(chosen) < min(count, len(by_id)):
        candidates = [pid for pid in by_id if pid not in chosen]
        if len(chosen) % 2 == 0:  # a new family with a look-alike, as unlike the shown identities as possible
            with_twin = [
                pid for pid in candidates if min(distance(pid, other) for other in by_id if other != pid) <= 4
            ]
            pick = max(
                with_twin or candidates, key=lambda pid: min((distance(pid, other) for other in chosen), default=0)
            )
        else:  # the look-alike of the previous identity
            pick = min(candidates, key=lambda pid: distance(pid, chosen[-1]))
        chosen.append(pick)
    return [by_id[pid] for pid in chosen]


def make_contact_sheet(
    output_png: str | os.PathLike, identities: int = 4, images_per_id: int = 4, seed: int = 0
) -> Path:
    """Generate a small benchmark in a temporary folder and save its contact sheet as `output_png`."""
    font = ImageFont.load_default(size=13)
    bold = ImageFont.load_default(size=15)
    with tempfile.TemporaryDirectory() as raw_root:
        settings = GeneratorSettings(num_train_ids=30, num_val_ids=0, num_test_ids=0, images_per_id=images_per_id, seed=seed)
        generate_raw(raw_root, settings, num_workers=1)
        records = json.loads((Path(raw_root) / "reid_raw.json").read_text(encoding="utf-8"))
        rows = _near_duplicate_rows(records, identities)
        cell_width = THUMB_WIDTH + TEXT_WIDTH + MARGIN
        sheet = Image.new(
            "RGB",
            (MARGIN + images_per_id * (cell_width + MARGIN), MARGIN + len(rows) * (THUMB_HEIGHT + 40 + MARGIN)),
            "white",
        )
        draw = ImageDraw.Draw(sheet)
        for row_index, row in enumerate(rows):
            top = MARGIN + row_index * (THUMB_HEIGHT + 40 + MARGIN)
            draw.text(
                (MARGIN, top), f"person_id {row[0]['id']}: " + ", ".join(row[0]["attributes"]), fill="black", font=bold
            )
            for column, record in enumerate(row):
                left = MARGIN + column * (cell_width + MARGIN)
                with Image.open(Path(raw_root) / "imgs" / record["file_path"]) as image:
                    sheet.paste(image.convert("RGB"), (left, top + 30))
                caption = f"[{record['view']}] {record['captions'][0]}"
                draw.multiline_text(
                    (left + THUMB_WIDTH + 6, top + 34),
                    textwrap.fill(caption, width=36),
                    fill=(30, 30, 30),
                    font=font,
                    spacing=3,
                )
    output_png = Path(output_png)
    output_png.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(output_png, optimize=True)
    return output_png


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m dataset_scripts.contact_sheet", description=__doc__.splitlines()[0]
    )
    parser.add_argument("output_png")
    parser.add_argument("--identities", type=int, default=4)
    parser.add_argument("--images-per-id", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with user_errors():
        sheet = make_contact_sheet(args.output_png, args.identities, args.images_per_id, args.seed)
    print(sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
