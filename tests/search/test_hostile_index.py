"""An index handed over by someone else, tampered or truncated, or pointing outside its gallery: refused with one clear
line, running no code and reading nothing outside the gallery. Kills during `save` never lose the index."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from ivt_search.__main__ import main
from ivt_search.index import EMBEDDINGS_FILE, INDEX_FILE, GalleryIndex, read_index_metadata
from modeling_ivt.loading import load_model_and_processor
from tests.reliability.crafted import png_claiming

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def folder_index(tmp_path_factory, model_dir, photo_dir):
    """An index of the photo folder, built once; tests copy it before changing it."""
    index_dir = tmp_path_factory.mktemp("indexes") / "photos"
    assert main(["index", str(index_dir), "--model", str(model_dir), "--images", str(photo_dir)]) == 0
    return index_dir


@pytest.fixture
def index_copy(folder_index, tmp_path):
    copy = tmp_path / folder_index.name
    shutil.copytree(folder_index, copy)
    metadata = json.loads((copy / INDEX_FILE).read_text())
    source_root = (folder_index / metadata["sources"][0]["root"]).resolve()
    metadata["sources"][0]["root"] = os.path.relpath(source_root, copy)
    (copy / INDEX_FILE).write_text(json.dumps(metadata))
    return copy


def _edit(index_dir: Path, change) -> None:
    metadata = json.loads((index_dir / INDEX_FILE).read_text())
    change(metadata)
    (index_dir / INDEX_FILE).write_text(json.dumps(metadata))


def _code_running_model(folder: Path, marker: Path) -> Path:
    """A model folder whose config names its own code (another model_type, auto_map); importing it writes `marker`."""
    folder.mkdir()
    (folder / "config.json").write_text(
        json.dumps({"model_type": "not-ivt", "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.Evil"}})
    )
    (folder / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\nraise SystemExit('evil code ran')\n")
    return folder


def test_an_index_never_makes_a_model_run_its_code(index_copy, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    evil = _code_running_model(tmp_path / "evil-model", marker)
    _edit(index_copy, lambda metadata: metadata["model"].update(name_or_path=str(evil)))
    for command in (["query", str(index_copy), "a man"], ["add", str(index_copy), "--images", str(tmp_path)]):
        assert main(command) == 2
        error = capsys.readouterr().err
        assert "asks to run its own code" in error and "--trust-remote-code" in error
        assert not marker.exists()


def test_remote_code_runs_only_with_the_flag_the_user_typed(tmp_path):
    marker = tmp_path / "code-ran"
    evil = _code_running_model(tmp_path / "evil-model", marker)
    with pytest.raises(ValueError, match="asks to run its own code"):
        load_model_and_processor(str(evil))
    assert not marker.exists()
    with pytest.raises(SystemExit, match="evil code ran"):
        load_model_and_processor(str(evil), trust_remote_code=True)
    assert marker.read_text() == "ran"


def test_a_model_that_is_not_an_ivt_is_refused(tmp_path):
    from transformers import BertConfig, BertModel

    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37)).save_pretrained(
        tmp_path / "bert"
    )
    with pytest.raises(ValueError, match="is a BertModel .* neither an IVT nor an IRRA-family model"):
        load_model_and_processor(str(tmp_path / "bert"))


@pytest.mark.parametrize("path", ["../../secret.png", "/etc/hostname"])
def test_image_paths_outside_the_gallery_are_refused(index_copy, tmp_path, path, capsys):
    Image.new("RGB", (8, 8), (255, 0, 255)).save(tmp_path / "secret.png")
    _edit(index_copy, lambda metadata: metadata["images"][0].update(path=path))
    grid = tmp_path / "grid.png"
    assert main(["query", str(index_copy), "a man", "--grid", str(grid)]) == 2
    error = capsys.readouterr().err
    assert "image 0" in error and ("outside" in error or "absolute" in error)
    assert not grid.exists()


TAMPERINGS = {
    "truncated index.json": lambda d: (d / INDEX_FILE).write_text((d / INDEX_FILE).read_text()[:50]),
    "no model": lambda d: _edit(d, lambda m: m.pop("model")),
    "image of a missing source": lambda d: _edit(d, lambda m: m["images"][0].update(source=7)),
    "fewer images than embeddings": lambda d: _edit(d, lambda m: m.update(images=m["images"][:-1])),
    "a list instead of an object": lambda d: (d / INDEX_FILE).write_text("[]"),
    "person id a string": lambda d: _edit(d, lambda m: m["images"][0].update(person_id="7")),
    "truncated embeddings": lambda d: (d / EMBEDDINGS_FILE).write_bytes((d / EMBEDDINGS_FILE).read_bytes()[:100]),
    "embeddings not safetensors": lambda d: (d / EMBEDDINGS_FILE).write_bytes(b"\x00" * 64),
}


@pytest.mark.parametrize("tampering", sorted(TAMPERINGS))
def test_tampered_or_truncated_index_files_are_one_clear_error(index_copy, model_dir, tampering, capsys):
    TAMPERINGS[tampering](index_copy)
    assert main(["query", str(index_copy), "a man", "--model", str(model_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: ")
    assert str(index_copy) in error


def test_an_empty_query_is_refused(index_copy, capsys):
    assert main(["query", str(index_copy), "a man", "  "]) == 2
    assert "query 2 is empty" in capsys.readouterr().err


def test_a_read_only_output_folder_is_one_clear_error(model_dir, photo_dir, read_only_folder, capsys):
    locked = read_only_folder
    assert main(["index", str(locked / "index"), "--model", str(model_dir), "--images", str(photo_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("error: cannot write") and str(locked) in error
    locked.chmod(0o755)


KILLED_SAVE = textwrap.dedent(
    """
    import os, sys
    from modeling_ivt import safe_io
    from modeling_ivt.loading import load_model_and_processor
    from ivt_search.index import GalleryIndex

    index_dir, model_dir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    index = GalleryIndex.open(index_dir, *load_model_and_processor(model_dir))
    index.images = index.images[:2]
    index.image_embeds = index.image_embeds[:2]
    real_replace, real_exchange = os.replace, safe_io.exchange_paths
    steps = [0]

    def step(function):
        def run(*args):
            steps[0] += 1
            if steps[0] == kill_at:
                os._exit(137)
            return function(*args)
        return run

    safe_io.os.replace = step(real_replace)
    safe_io.exchange_paths = step(lambda first, second: False)  # the slower path of systems without a swap
    index.save(index_dir)
    """
)


def test_a_kill_during_index_save_never_loses_the_index(index_copy, model_dir):
    before = read_index_metadata(index_copy)["num_images"]
    # steps: 1 the swap (unavailable here), 2 the old index renamed aside, 3 the new one renamed in: kill at 3
    result = subprocess.run(
        [sys.executable, "-c", KILLED_SAVE, str(index_copy), str(model_dir), "3"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 137, result.stderr[-2000:]
    assert not index_copy.exists(), "the kill landed between the two renames"
    model, processor = load_model_and_processor(str(model_dir))
    assert len(GalleryIndex.open(index_copy, model, processor)) == before  # the old copy is found and put back


def test_a_huge_image_in_a_gallery_folder_is_refused_before_decoding(model_dir, photo_dir, tmp_path, capsys):
    gallery = tmp_path / "gallery"
    shutil.copytree(photo_dir, gallery)
    png_claiming(gallery / "camera" / "huge.png", 8000, 6000)
    command = ["index", str(tmp_path / "index"), "--model", str(model_dir), "--images", str(gallery)]
    assert main([*command, "--strict"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "huge.png is 8000 x 6000 = 48,000,000 pixels" in error and "--max-image-pixels" in error
    assert not (tmp_path / "index").exists()
    assert main(command) == 0  # without --strict it is skipped and named, like any unreadable file
    assert "huge.png: is 8000 x 6000 = 48,000,000 pixels" in capsys.readouterr().err
    assert read_index_metadata(tmp_path / "index")["num_images"] == 6


def test_index_overwrite_never_replaces_a_folder_that_is_not_an_index(model_dir, photo_dir, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert main(["index", str(mine), "--model", str(model_dir), "--images", str(photo_dir), "--overwrite"]) == 2
    assert "not a previous index folder" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "years of work"
