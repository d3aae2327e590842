"""The atomic replace, the path-inside-root rule and the image pixel limit, probed the way a hostile user would."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from modeling_ivt import safe_io
from modeling_ivt.image_utils import ImageTooLargeError, open_image
from modeling_ivt.safe_io import (
    PathOutsideRootError,
    atomic_output,
    recover_replaced,
    replace_path,
    resolve_inside,
    write_text_atomic,
)

# A child process replaces `target` (a folder holding old.txt) with a folder holding new.txt and is killed (os._exit,
# no cleanup, like kill -9) at the N-th file-system step of the replace: each swap, rename and delete.
KILLED_REPLACE = textwrap.dedent(
    """
    import importlib.util, os, sys

    target, kill_at, mode, module_file = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    spec = importlib.util.spec_from_file_location("safe_io", module_file)  # alone: no transformers import, fast
    safe_io = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(safe_io)
    steps = [0]

    def killing(function):
        def step(*args, **kwargs):
            steps[0] += 1
            if steps[0] == kill_at:
                os._exit(137)
            return function(*args, **kwargs)
        return step

    if mode == "no-exchange":
        safe_io.exchange_paths = lambda first, second: False
    safe_io.exchange_paths = killing(safe_io.exchange_paths)
    safe_io.os.replace = killing(os.replace)
    safe_io._remove = killing(safe_io._remove)
    with safe_io.atomic_output(target, directory=True) as staged:
        (staged / "new.txt").write_text("new " * 1000)
    print("steps", steps[0])
    """
)


def _run_killed(target: Path, kill_at: int, mode: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", KILLED_REPLACE, str(target), str(kill_at), mode, safe_io.__file__],
        capture_output=True,
        text=True,
    )


def _contents(folder: Path) -> str:
    return ",".join(sorted(path.name for path in folder.iterdir()))


@pytest.mark.parametrize("mode", ["exchange", "no-exchange"])
def test_a_kill_at_any_step_of_a_replace_leaves_the_old_or_the_new_copy(tmp_path, mode):
    target = tmp_path / "index"
    total = None
    kill_at = 1
    while total is None or kill_at <= total:
        if target.exists():
            for path in target.iterdir():
                path.unlink()
        else:
            target.mkdir()
        (target / "old.txt").write_text("old " * 1000)
        result = _run_killed(target, kill_at, mode)
        if result.returncode == 0:
            total = int(result.stdout.split()[-1])
            assert _contents(target) == "new.txt"
            break
        assert result.returncode == 137, result.stderr
        if mode == "exchange":
            assert target.is_dir(), f"target missing after a kill at step {kill_at}"
        else:
            recover_replaced(target)  # what the next replace or index open does
        assert _contents(target) in ("old.txt", "new.txt"), f"kill at step {kill_at}: {_contents(target)}"
        content = (target / _contents(target)).read_text()
        assert content in ("old " * 1000, "new " * 1000)
        kill_at += 1
    assert kill_at >= 2, "the replace had no step to kill at"
    # the next replace runs cleanly over whatever a kill left behind
    with atomic_output(target, directory=True) as staged:
        (staged / "third.txt").write_text("third")
    assert _contents(target) == "third.txt"


def test_the_swap_is_a_single_step_where_the_system_has_it(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    (first / "in_a").touch()
    if not safe_io.exchange_paths(first, second):
        pytest.skip("this system or file system cannot swap two paths in one step")
    assert (second / "in_a").exists() and not (first / "in_a").exists()


def test_a_failed_write_leaves_the_target_as_it_was_and_nothing_behind(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("{}")
    with pytest.raises(RuntimeError):
        with atomic_output(target, directory=True) as staged:
            (staged / "config.json").write_text("half")
            raise RuntimeError("disk full")
    assert (target / "config.json").read_text() == "{}"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_files_replace_atomically_with_the_usual_permissions(tmp_path):
    target = write_text_atomic(tmp_path / "sub" / "results.json", "1")
    write_text_atomic(target, "2")
    assert target.read_text() == "2"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(path.name for path in target.parent.iterdir()) == ["results.json"]


def test_replace_refuses_an_existing_target_without_overwrite(tmp_path):
    staged, target = tmp_path / "staged", tmp_path / "target"
    staged.mkdir()
    target.mkdir()
    with pytest.raises(FileExistsError, match="target exists"):
        replace_path(staged, target, overwrite=False)


@pytest.mark.parametrize("relative", ["../secret.jpg", "a/../../secret.jpg", "/etc/passwd", "link/secret.jpg"])
def test_paths_read_from_data_files_stay_inside_their_root(tmp_path, relative):
    root = tmp_path / "gallery"
    (root / "a").mkdir(parents=True)
    (tmp_path / "secret.jpg").touch()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(PathOutsideRootError, match="outside|absolute"):
        resolve_inside(root, relative, what="image path")


def test_paths_inside_the_root_resolve(tmp_path):
    (tmp_path / "a").mkdir()
    assert resolve_inside(tmp_path, "a/../a/x.jpg") == (tmp_path / "a" / "x.jpg").resolve()


def test_a_huge_image_is_refused_from_its_header_naming_the_file(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (4000, 3000)).save(path)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png is 4000 x 3000 = 12,000,000 pixels"):
        open_image(path, max_pixels=10_000_000)
    assert open_image(path, max_pixels=12_000_000).size == (4000, 3000)


def test_a_decompression_bomb_is_a_clear_error_not_a_traceback(tmp_path, monkeypatch):
    path = tmp_path / "bomb.png"
    Image.new("L", (2000, 2000)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000_000)  # Pillow refuses above twice its limit, at open
    with pytest.raises(ImageTooLargeError, match=r"bomb\.png is too large to decode safely"):
        open_image(path, max_pixels=0)
