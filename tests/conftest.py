"""Suite-wide settings: no network for the Hugging Face libraries, and a fresh accelerate state for every test."""

import os

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
