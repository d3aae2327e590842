"""The ranked-result picture and the `python -m ivt_search` command line."""

import json
import subprocess
import sys

import pytest
from PIL import Image

from ivt_search import RankedQuery, SearchHit, render_ranked_results
from ivt_search.__main__ import main
from ivt_search.picture import CORRECT_COLOUR, UNKNOWN_COLOUR, WRONG_COLOUR

from .conftest import MODEL_TYPES

GALLERY_COLOURS = [(40, 40, 160), (160, 120, 40), (90, 90, 90), (10, 120, 120)]


def _hit(rank, position, person_id):
    return SearchHit(
        rank=rank, score=1.0 - rank / 10, path=f"img{position}.jpg", person_id=person_id, position=position
    )


def test_frames_are_green_for_the_described_person_red_otherwise_grey_when_unknown():
    thumbnail_size, frame_width = (30, 60), 4
    gallery = [Image.new("RGB", (20, 50), colour) for colour in GALLERY_COLOURS]
    queries = [
        RankedQuery(
            "a man in a blue coat", [_hit(1, 0, 7), _hit(2, 1, 8), _hit(3, 2, 7), _hit(4, 3, None)], person_id=7
        ),
        RankedQuery("someone unknown", [_hit(1, 3, 7), _hit(2, 2, 8)]),
    ]
    picture = render_ranked_results(
        queries, gallery.__getitem__, thumbnail_size=thumbnail_size, frame_width=frame_width
    )
    colours = {colour: count for count, colour in picture.getcolors(maxcolors=1 << 16)}
    frame_area = (thumbnail_size[0] + 2 * frame_width) * (thumbnail_size[1] + 2 * frame_width) - thumbnail_size[
        0
    ] * thumbnail_size[1]
    assert colours.get(CORRECT_COLOUR) == 2 * frame_area
    assert colours.get(WRONG_COLOUR) == 1 * frame_area
    assert colours.get(UNKNOWN_COLOUR) == 3 * frame_area
    # Each hit's image is shown (20 x 50 fits into 30 x 60 without resizing): 6 tiles, 2 of them of gallery image 3.
    assert colours.get(GALLERY_COLOURS[3]) == 2 * 20 * 50
    assert colours.get(GALLERY_COLOURS[0]) == 20 * 50


@pytest.mark.parametrize("model_dir", MODEL_TYPES, indirect=True)
def test_cli_index_add_query_and_grid(model_dir, other_model_dir, benchmark_dir, photo_dir, tmp_path, capsys):
    index_dir = tmp_path / "gallery-index"
    assert (
        main(["index", str(index_dir), "--model", str(model_dir), "--dataset", str(benchmark_dir), "--split", "test"])
        == 0
    )
    assert "indexed 8 images" in capsys.readouterr().out
    assert main(["index", str(index_dir), "--model", str(model_dir), "--images", str(photo_dir)]) == 2
    assert "exists: use `add`" in capsys.readouterr().err
    assert main(["add", str(index_dir), "--images", str(photo_dir), "--person-id-from-folder"]) == 0
    assert "now holds 14" in capsys.readouterr().out

    assert (
        main(["query", str(index_dir), "a man", "a woman", "--person-id", "1", "--person-id", "2", "--person-id", "3"])
        == 2
    )
    assert "once or once per caption" in capsys.readouterr().err
    assert main(["query", str(index_dir), "a man", "--model", str(other_model_dir)]) == 2
    error = capsys.readouterr().err
    assert str(model_dir) in error and str(other_model_dir) in error

    grid = tmp_path / "out" / "result.png"
    command = [
        sys.executable,
        "-m",
        "ivt_search",
        "query",
        str(index_dir),
        "a woman in a red coat",
        "a man with a bag",
    ]
    result = subprocess.run(
        command + ["--top-k", "3", "--person-id", "3", "--person-id", "4", "--grid", str(grid), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    hits = json.loads(result.stdout[: result.stdout.rindex("]") + 1])
    assert [len(row) for row in hits] == [3, 3]
    assert [hit["rank"] for hit in hits[0]] == [1, 2, 3]
    assert hits[0][0]["score"] >= hits[0][1]["score"] >= hits[0][2]["score"]
    with Image.open(grid) as picture:
        assert picture.format == "PNG"
        colours = {colour for _, colour in picture.convert("RGB").getcolors(maxcolors=1 << 20)}
    expected_frames = {
        CORRECT_COLOUR if hit["person_id"] == person_id else WRONG_COLOUR
        for row, person_id in zip(hits, (3, 4), strict=True)
        for hit in row
    }
    assert expected_frames <= colours
    assert list(grid.parent.iterdir()) == [grid], "the picture is written through a temporary file"
