"""Ranked-result pictures: each query's text above its top-k gallery images, with rank and score under each, and a
green or red frame for the right or wrong person when the query's person id and the gallery's are known."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from .index import SearchHit

CORRECT_COLOUR = (0, 170, 60)
WRONG_COLOUR = (220, 30, 30)
UNKNOWN_COLOUR = (165, 180, 205)
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)


@dataclass(frozen=True)
class RankedQuery:
    """One row of the picture: the caption, its hits (best first) and, when known, the person it describes."""

    caption: str
    hits: Sequence[SearchHit]
    person_id: int | None = None


def frame_colour(query_person_id: int | None, hit: SearchHit) -> tuple[int, int, int]:
    """Green for the described person, red for someone else, blue-grey when either id is unknown."""
    if query_person_id is None or hit.person_id is None:
        return UNKNOWN_COLOUR
    return CORRECT_COLOUR if hit.person_id == query_person_id else WRONG_COLOUR


def render_ranked_results(
    queries: Sequence[RankedQuery],
    load_image: Callable[[int], Image.Image],
    thumbnail_size: tuple[int, int] = (96, 288),
    frame_width: int = 6,
    font_size: int = 15,
) -> Image.Image:
    """
    The picture for `queries`, one row each. `load_image(position)` returns the gallery image at an index position
    (`GalleryIndex.load_image`); images are fitted into `thumbnail_size` (width, height) keeping their aspect ratio.
    """
    if not queries:
        raise ValueError("render_ranked_results needs at least one query")
    font = ImageFont.load_default(size=font_size)
    small_font = ImageFont.load_default(size=max(font_size - 2, 8))
    thumb_width, thumb_height = thumbnail_size
    gap = 10
    tile_width = thumb_width + 2 * frame_width
    tile_height = thumb_height + 2 * frame_width
    columns = max(len(query.hits) for query in queries)
    width = max(gap + columns * (tile_width + gap), 320)
    characters_per_line = max(int(width / (0.55 * font_size)), 20)
    line_height = font_size + 4

    layouts = []
    for query in queries:
        label = f'"{query.caption}"' + (f"  (person {query.person_id})" if query.person_id is not None else "")
        lines = textwrap.wrap(label, characters_per_line) or [""]
        layouts.append((query, lines))
    row_heights = [len(lines) * line_height + gap + tile_height + 2 * line_height + gap for _, lines in layouts]
    picture = Image.new("RGB", (width, gap + sum(row_heights)), BACKGROUND)
    draw = ImageDraw.Draw(picture)

    top = gap
    for (query, lines), row_height in zip(layouts, row_heights, strict=True):
        for number, line in enumerate(lines):
            draw.text((gap, top + number * line_height), line, fill=TEXT_COLOUR, font=font)
        tiles_top = top + len(lines) * line_height + gap
        for column, hit in enumerate(query.hits):
            left = gap + column * (tile_width + gap)
            draw.rectangle(
                (left, tiles_top, left + tile_width - 1, tiles_top + tile_height - 1),
                fill=frame_colour(query.person_id, hit),
            )
            thumbnail = load_image(hit.position).copy()
            thumbnail.thumbnail(thumbnail_size, Image.Resampling.BICUBIC)
            inner = Image.new("RGB", thumbnail_size, BACKGROUND)
            inner.paste(thumbnail, ((thumb_width - thumbnail.width) // 2, (thumb_height - thumbnail.height) // 2))
            picture.paste(inner, (left + frame_width, tiles_top + frame_width))
            caption_top = tiles_top + tile_height + 2
            draw.text((left, caption_top), f"#{hit.rank}  {hit.score:.3f}", fill=TEXT_COLOUR, font=font)
            if hit.person_id is not None:
                draw.text((left, caption_top + line_height), f"id {hit.person_id}", fill=TEXT_COLOUR, font=small_font)
        top += row_height
    return picture
