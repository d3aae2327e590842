import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_hub import LocalHub

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(tmp_path):
    with LocalHub(tmp_path / "hub-storage") as server:
        yield server


def run_against(hub, tmp_path, code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """
    Run `code` in a fresh Python process whose Hugging Face clients talk to the local Hub: the endpoint must be set
    before those libraries are imported, and each process gets an empty cache so nothing is served from disk.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    cache = tmp_path / f"hf-home-{len(list(tmp_path.glob('hf-home-*')))}"
    env.update(HF_ENDPOINT=hub.endpoint, HF_TOKEN=hub.token, HF_HUB_DISABLE_XET="1", HF_HOME=str(cache))
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return result
