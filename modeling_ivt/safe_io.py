"""Writing that never loses what was there and reading that never leaves its root: the project's one way to replace a
file or a folder with a new complete copy, and to turn a path read from a data file into a path inside its root.

Replacing: `replace_path(staged, target)` moves a complete `staged` file or folder (on the same file system) to
`target`. A file, or a folder where nothing is yet, is one `os.replace`, atomic on POSIX. An existing folder is
swapped with the staged one in one step (`renameat2(RENAME_EXCHANGE)` on Linux), so at every instant `target` names
either the whole old copy or the whole new one; the old copy is then deleted. Where the system cannot swap (other
systems, file systems without the call), the old folder is first renamed to the sibling `.NAME.previous`: a process
killed right then leaves `target` missing for a moment, and `recover_replaced(target)` (run by the next replace and by
the readers of index folders) renames the complete old copy back.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import logging
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2

class PathOutsideRootError(ValueError):
    """A path read from a data file points outside the folder it must stay in."""


def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    return libc if hasattr(libc, "renameat2") else None


_LIBC = _libc()


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step; False where this system or file system cannot."""
    if _LIBC is None:
        return False
    result = _LIBC.renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if result == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def _previous_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.previous")


def recover_replaced(target: str | os.PathLike) -> bool:
    """Put back the old copy a replace killed half-way left at `.NAME.previous`, if `target` is missing; True if so."""
    target = Path(target)
    previous = _previous_path(target)
    if previous.exists() and not target.exists():
        os.replace(previous, target)
        logger.warning("%s: restored the copy an interrupted replace had moved to %s", target, previous.name)
        return True
    return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_path(staged: str | os.PathLike, target: str | os.PathLike, overwrite: bool = True) -> None:
    """
    Move the complete `staged` file or folder to `target`, replacing what is there (`FileExistsError` instead if
    `overwrite` is false); see the module docstring.
    """
    staged, target = Path(staged), Path(target)
    recover_replaced(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True (--overwrite) to replace it")
    if not target.exists() or (not target.is_dir() and not staged.is_dir()):
        os.replace(staged, target)
        return
    if exchange_paths(staged, target):
        _remove(staged)
        return
    previous = _previous_path(target)
    _remove(previous)
    os.replace(target, previous)
    try:
        os.replace(staged, target)
    except OSError:
        os.replace(previous, target)
        raise
    _remove(previous)


def staging_path(target: str | os.PathLike, directory: bool = False) -> Path:
    """
    A new, empty hidden sibling of `target` (same file system) to write a copy into before `replace_path`; created
    with the usual permissions (umask), unlike `tempfile`'s private ones, since it becomes the user's file.
    """
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        return _new_sibling(target, directory)
    except PermissionError as error:
        raise PermissionError(f"cannot write {target}: no permission to write in {error.filename}") from None


def _new_sibling(target: Path, directory: bool) -> Path:
    while True:
        staged = target.with_name(f".{target.name}.partial-{secrets.token_hex(4)}{'' if directory else target.suffix}")
        try:
            if directory:
                staged.mkdir()
            else:
                staged.open("x").close()
            return staged
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_output(target: str | os.PathLike, directory: bool = False) -> Iterator[Path]:
    """
    Yield a staging file (or folder) next to `target`; when the block ends without an error it replaces `target`,
    otherwise it is removed and `target` is left as it was.
    """
    target = Path(target)
    staged = staging_path(target, directory=directory)
    try:
        yield staged
        replace_path(staged, target)
    finally:
        if staged.exists() or staged.is_symlink():
            _remove(staged)


def write_text_atomic(target: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8) to `target` through `atomic_output`."""
    with atomic_output(target) as staged:
        staged.write_text(text, encoding="utf-8")
    return Path(target)


def write_json_atomic(target: str | os.PathLike, payload, indent: int = 2) -> Path:
    """Write `payload` as indented JSON (ending with a newline) to `target` through `atomic_output`."""
    return write_text_atomic(target, json.dumps(payload, indent=indent) + "\n")


def check_replaceable(target: str | os.PathLike, kind_marker: str, inputs=(), what: str = "output") -> None:
    """
    Refuse to overwrite `target` unless it is a previous output of the same kind (it holds `kind_marker`) and holds
    none of the command's `inputs`: `--overwrite` replaces what the command made, never the user's data.
    """
    target = Path(target)
    if not target.exists():
        return
    resolved = target.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == resolved or source.is_relative_to(resolved):
            raise ValueError(f"{what} {target} holds the input {source}: choose an output folder outside it")
    if target.is_dir() and not (target / kind_marker).exists() and any(target.iterdir()):
        raise ValueError(
            f"{what} {target} exists and is not a previous {what} (it has no {kind_marker}); "
            f"--overwrite only replaces a folder this command wrote: choose another folder or remove it yourself"
        )


def resolve_inside(root: str | os.PathLike, relative: str | os.PathLike, what: str = "path") -> Path:
    """
    `root / relative`, resolved (symbolic links followed), refusing an absolute `relative` or one that ends up
    outside `root` (`..`, a link pointing elsewhere): paths read from data files must stay inside their folder.
    """
    root = Path(root).resolve()
    relative_text = os.fspath(relative)
    if os.path.isabs(relative_text) or Path(relative_text).drive:
        raise PathOutsideRootError(f"{what} {relative_text!r} is absolute; it must be relative to {root}")
    resolved = (root / relative_text).resolve()
    if not resolved.is_relative_to(root):
        raise PathOutsideRootError(f"{what} {relative_text!r} points outside {root}")
    return resolved


__all__ = [
    "PathOutsideRootError",
    "atomic_output",
    "check_replaceable",
    "exchange_paths",
    "recover_replaced",
    "replace_path",
    "resolve_inside",
    "staging_path",
    "write_json_atomic",
    "write_text_atomic",
]
