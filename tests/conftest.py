"""Suite-wide settings: no network for the Hugging Face libraries, and a fresh accelerate state for every test."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def fresh_accelerator_state():
    """Each in-process training run starts from a new AcceleratorState, as a new `accelerate launch` would.

    accelerate keeps one state per process and refuses a second Accelerator with another mixed precision.
    """
    yield
    from accelerate.state import AcceleratorState  # imported late: the environment above must be set first

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def read_only_folder(tmp_path, monkeypatch) -> Path:
    """A folder nobody may create anything in, also for root (who writes anywhere): its mkdir is refused as it would
    be for a user."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.geteuid() == 0:
        real_mkdir = os.mkdir

        def refusing_mkdir(path, *args, **kwargs):
            if Path(path).parent == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_mkdir(path, *args, **kwargs)

        monkeypatch.setattr(os, "mkdir", refusing_mkdir)
    yield locked
    locked.chmod(0o755)
