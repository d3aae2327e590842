"""Checkpoints under kill -9 at every write, rotation, resume from an older checkpoint, and state without pickles."""

import json
import logging
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from training.checkpointing import (
    COMPLETE_MARKER,
    STATE_FILE,
    CheckpointManager,
    incompleteness,
    latest_complete_checkpoint,
)

ROOT = Path(__file__).resolve().parents[2]


class Counter:
    """A stand-in for the sampler / progress objects: JSON state."""

    def __init__(self):
        self.step = 0

    def state_dict(self):
        return {"step": self.step}

    def load_state_dict(self, state):
        self.step = state["step"]


# Forks one child per kill point (the parent only imports, so the children start clean). Each child makes a complete
# checkpoint_0 at step 1, trains a step, and is killed (os._exit, like kill -9) at the N-th write of checkpoint_1:
# each file accelerate writes, the JSON state, the completeness marker, and each folder rotation deletes.
KILL_DURING_SAVE = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import accelerate.checkpointing
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    import training.checkpointing as checkpointing

    root, total_limit = Path(sys.argv[1]), int(sys.argv[2])

    class Counter:
        step = 0
        def state_dict(self):
            return {"step": self.step}
        def load_state_dict(self, state):
            self.step = state["step"]

    def run(output_dir, kill_at):
        accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(output_dir)))
        torch.manual_seed(0)
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
        model, optimizer = accelerator.prepare(model, optimizer)
        counter = Counter()
        manager = checkpointing.CheckpointManager(accelerator, output_dir, total_limit, {"progress": counter})

        def train_step():
            model(torch.ones(3, 4)).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
            counter.step += 1

        train_step()
        manager.save()
        train_step()
        steps = [0]

        def killing(function):
            def write(*args, **kwargs):
                steps[0] += 1
                if steps[0] == kill_at:
                    os._exit(137)
                return function(*args, **kwargs)
            return write

        accelerate.checkpointing.save = killing(accelerate.checkpointing.save)
        checkpointing.write_text_atomic = killing(checkpointing.write_text_atomic)
        checkpointing.shutil.rmtree = killing(checkpointing.shutil.rmtree)
        manager.save()
        return steps[0]

    report = {}
    kill_at = 1
    while True:
        output_dir = root / f"kill_at_{kill_at}"
        pid = os.fork()
        if pid == 0:
            steps = run(output_dir, kill_at)
            (root / "steps.json").write_text(json.dumps(steps))
            os._exit(0)
        status = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        report[kill_at] = status
        if status != 137:
            break
        kill_at += 1
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("total_limit", [1, 2])
def test_a_kill_at_any_write_of_a_checkpoint_leaves_a_complete_one_to_resume(tmp_path, total_limit, caplog):
    result = subprocess.run(
        [sys.executable, "-c", KILL_DURING_SAVE, str(tmp_path), str(total_limit)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    killed = [int(kill_at) for kill_at, status in report.items() if status == 137]
    # weights, optimiser (accelerate writes the random states without that function), JSON state, marker, and with a
    # limit of 1 the deletion of checkpoint_0
    assert len(killed) == json.loads((tmp_path / "steps.json").read_text()) == (5 if total_limit == 1 else 4)
    for kill_at in killed:
        output_dir = tmp_path / f"kill_at_{kill_at}"
        with caplog.at_level(logging.WARNING, logger="training.checkpointing"):
            latest = latest_complete_checkpoint(output_dir)
        assert latest is not None, f"no complete checkpoint after a kill at write {kill_at}"
        state = json.loads((latest / STATE_FILE).read_text())
        if latest.name == "checkpoint_0":
            assert state == {"progress": {"step": 1}}
            assert "skipping" in caplog.text and "checkpoint_1" in caplog.text and COMPLETE_MARKER in caplog.text
        else:  # killed while rotating: the new checkpoint was already complete
            assert latest.name == "checkpoint_1" and state == {"progress": {"step": 2}}
        caplog.clear()
    finished = tmp_path / f"kill_at_{max(killed) + 1}" / "checkpoints"
    assert sorted(path.name for path in finished.iterdir()) == ["checkpoint_0", "checkpoint_1"][-total_limit:]


def _accelerator(output_dir: Path) -> Accelerator:
    return Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(output_dir)))


def _prepared(accelerator):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    return accelerator.prepare(model, optimizer)


def test_resuming_from_an_older_checkpoint_then_saving_keeps_going(tmp_path):
    accelerator = _accelerator(tmp_path)
    model, _ = _prepared(accelerator)
    counter = Counter()
    manager = CheckpointManager(accelerator, tmp_path, 2, {"progress": counter})
    for _ in range(2):
        counter.step += 1
        manager.save()
    older = tmp_path / "checkpoints" / "checkpoint_0"
    manager.resume(str(older))
    assert counter.step == 1
    counter.step = 5
    newest = manager.save()  # accelerate's own rotation deleted checkpoint_0, then failed: "checkpoint_1 already exists"
    assert newest.name == "checkpoint_2" and incompleteness(newest) is None
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_1", "checkpoint_2"]
    assert latest_complete_checkpoint(tmp_path) == newest


def test_an_incomplete_checkpoint_is_refused_by_name_and_skipped_by_latest(tmp_path):
    accelerator = _accelerator(tmp_path)
    _prepared(accelerator)
    counter = Counter()
    manager = CheckpointManager(accelerator, tmp_path, None, {"progress": counter})
    complete = manager.save()
    counter.step = 3
    truncated = manager.save()
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:10])
    with pytest.raises(ValueError, match=r"checkpoint_1 is incomplete: model\.safetensors is 10 bytes"):
        manager.resume(str(truncated))
    assert manager.resume("latest") == complete and counter.step == 0
    for path in (tmp_path / "checkpoints").iterdir():
        (path / COMPLETE_MARKER).unlink()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        manager.resume("latest")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pickle ran"))


def test_the_project_state_is_json_and_a_planted_pickle_is_never_loaded(tmp_path):
    accelerator = _accelerator(tmp_path)
    _prepared(accelerator)
    counter = Counter()
    manager = CheckpointManager(accelerator, tmp_path, None, {"progress": counter})
    counter.step = 4
    folder = manager.save()
    assert json.loads((folder / STATE_FILE).read_text()) == {"progress": {"step": 4}}
    assert not list(folder.glob("custom_checkpoint_*"))
    marker = tmp_path / "pwned"
    (folder / "custom_checkpoint_0.pkl").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(ValueError, match=r"custom_checkpoint_0\.pkl appeared after the checkpoint was written"):
        manager.resume(str(folder))
    assert not marker.exists()
