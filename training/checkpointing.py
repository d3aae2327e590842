"""Checkpoints that survive a kill at any moment: written completely, marked complete last, rotated only after.

A checkpoint is the folder `OUTPUT_DIR/checkpoints/checkpoint_<n>` holding what `Accelerator.save_state` writes
(model weights as safetensors; optimiser, scaler and random states as accelerate's files), the project's own state as
JSON (`training_state.json`: sampler, schedule, progress; never a pickle), and, written last, `COMPLETE_MARKER`, which
lists every file with its size. A folder without the marker, or whose files do not match it, is incomplete (a kill or a
full disk interrupted it) and is never resumed from. Numbers only grow: a new checkpoint is numbered after every
folder present, so resuming from an older checkpoint never collides with a newer one. Rotation
(`--checkpoints_total_limit`) runs only once the new checkpoint is complete and never deletes it, so a complete
checkpoint exists at every instant of a run once the first one is written.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from modeling_ivt.safe_io import write_text_atomic

logger = logging.getLogger(__name__)

CHECKPOINTS_DIR = "checkpoints"
CHECKPOINT_PATTERN = re.compile(r"checkpoint_(\d+)$")
COMPLETE_MARKER = "checkpoint_complete.json"
STATE_FILE = "training_state.json"


def _numbered(checkpoints_dir: Path) -> list[tuple[int, Path]]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted(
        (int(match.group(1)), path)
        for path in checkpoints_dir.iterdir()
        if path.is_dir() and (match := CHECKPOINT_PATTERN.fullmatch(path.name))
    )


def incompleteness(checkpoint: Path) -> str | None:
    """
    Why `checkpoint` cannot be resumed from (no marker, a listed file missing or of another size, a file added since),
    or None.
    """
    marker = checkpoint / COMPLETE_MARKER
    if not marker.is_file():
        return f"no {COMPLETE_MARKER} (its writing was interrupted)"
    try:
        files = json.loads(marker.read_text(encoding="utf-8"))["files"]
        sizes = {str(name): int(size) for name, size in files.items()}
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{COMPLETE_MARKER} is damaged ({error})"
    for name, size in sizes.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} is {path.stat().st_size} bytes, {size} when the checkpoint was written"
    added = sorted(
        path.relative_to(checkpoint).as_posix() for path in checkpoint.rglob("*") if path.is_file()
    )
    added = [name for name in added if name not in sizes and name != COMPLETE_MARKER]
    if added:
        return f"{', '.join(added)} appeared after the checkpoint was written"
    return None


def latest_complete_checkpoint(output_dir) -> Path | None:
    """The highest-numbered complete checkpoint, logging each newer one skipped and why; None if there is none."""
    for _, path in reversed(_numbered(Path(output_dir) / CHECKPOINTS_DIR)):
        reason = incompleteness(path)
        if reason is None:
            return path
        logger.warning("skipping %s: %s", path, reason)
    return None


class CheckpointManager:
    """
    Saves and restores a run's checkpoints under `output_dir/checkpoints`. `state` maps names to the project's
    stateful objects (`state_dict()` / `load_state_dict()` of JSON-serialisable values), saved in `STATE_FILE`;
    accelerate saves the prepared model and optimiser and the random states of every process.
    """

    def __init__(self, accelerator: Accelerator, output_dir, total_limit: int | None, state: dict):
        if total_limit is not None and total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be at least 1, got {total_limit}")
        self.accelerator = accelerator
        self.checkpoints_dir = Path(output_dir) / CHECKPOINTS_DIR
        self.total_limit = total_limit
        self.state = state

    def _next_number(self) -> int:
        numbered = _numbered(self.checkpoints_dir)
        return numbered[-1][0] + 1 if numbered else 0

    def save(self) -> Path:
        """Write the next checkpoint, mark it complete, then rotate; returns its folder."""
        accelerator = self.accelerator
        number = self._next_number()
        accelerator.wait_for_everyone()  # every process has chosen the number before any folder appears
        folder = self.checkpoints_dir / f"checkpoint_{number}"
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            state = {name: stateful.state_dict() for name, stateful in self.state.items()}
            write_text_atomic(folder / STATE_FILE, json.dumps(state, indent=1))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            files = {
                path.relative_to(folder).as_posix(): path.stat().st_size
                for path in sorted(folder.rglob("*"))
                if path.is_file()
            }
            write_text_atomic(folder / COMPLETE_MARKER, json.dumps({"files": files}, indent=1))
            self._rotate(keep=folder)
        accelerator.wait_for_everyone()
        logger.info("saved checkpoint %s", folder)
        return folder

    def _rotate(self, keep: Path) -> None:
        """Delete incomplete checkpoints older than `keep` and the oldest complete ones beyond the limit."""
        keep_number = int(CHECKPOINT_PATTERN.fullmatch(keep.name).group(1))
        complete = []
        for number, path in _numbered(self.checkpoints_dir):
            if path == keep:
                continue
            if incompleteness(path) is None:
                complete.append(path)
            elif number < keep_number:
                logger.info("removing %s, left incomplete by an interrupted save", path)
                shutil.rmtree(path, ignore_errors=True)
        if self.total_limit is not None:
            for path in complete[: max(0, len(complete) + 1 - self.total_limit)]:
                logger.info("removing %s (--checkpoints_total_limit %d)", path, self.total_limit)
                shutil.rmtree(path, ignore_errors=True)

    def resume(self, checkpoint: str) -> Path:
        """
        Restore everything from `checkpoint`: "latest" (the newest complete one) or a folder, which must be complete.
        """
        if checkpoint == "latest":
            path = latest_complete_checkpoint(self.checkpoints_dir.parent)
            if path is None:
                raise FileNotFoundError(
                    f"--resume_from_checkpoint latest: no complete checkpoint in {self.checkpoints_dir}"
                )
        else:
            path = Path(checkpoint)
            if not path.is_dir():
                raise FileNotFoundError(f"--resume_from_checkpoint: {path} is not a checkpoint folder")
            reason = incompleteness(path)
            if reason is not None:
                raise ValueError(f"--resume_from_checkpoint: {path} is incomplete: {reason}")
        try:
            state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
            missing = set(self.state) - set(state)
            if missing:
                raise ValueError(f"it has no state for {sorted(missing)}")
        except ValueError as error:
            raise ValueError(f"--resume_from_checkpoint: {path / STATE_FILE} cannot be used: {error}") from None
        self.accelerator.load_state(str(path))
        for name, stateful in self.state.items():
            stateful.load_state_dict(state[name])
        logger.info("resumed from %s%s", path, " (the newest complete checkpoint)" if checkpoint == "latest" else "")
        return path
