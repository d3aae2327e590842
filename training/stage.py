"""How every training stage (fine-tuning, training/run.py; pre-training, training/pretrain.py) starts and ends.

A stage starts from an accelerator (its trackers logging to OUTPUT_DIR/logs), the threads per process, a checked
output folder and the seed; it ends with the model card in OUTPUT_DIR/best, the push of that folder to the Hub,
OUTPUT_DIR/results.json and a process group that no process tears down while the main one still writes or pushes.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from huggingface_hub import ModelCard
from tqdm.auto import tqdm

from dataset_scripts.generate import ensure_generated_benchmark
from modeling_ivt.hub_utils import push_folder_to_hub
from modeling_ivt.inference import NATIVE_BF16_CPU_FLAGS, cpu_has_native_bf16
from modeling_ivt.safe_io import atomic_output, write_json_atomic

from .checkpointing import CheckpointManager
from .config import TrainingConfig
from .engine import TrainingProgress

logger = logging.getLogger(__name__)

BEST_DIR = "best"
RESULTS_FILE = "results.json"


def configure_logging() -> None:
    """INFO lines with time and logger name from every library; only warnings from datasets' progress chatter."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    datasets.logging.set_verbosity_warning()


def create_accelerator(
    output_dir,
    mixed_precision: str = "no",
    gradient_accumulation_steps: int = 1,
    report_to: str = "tensorboard",
) -> Accelerator:
    """
    An Accelerator whose trackers log to `output_dir` (`report_to` "none" disables them; TensorBoard is skipped with a
    warning when it is not installed); checkpoints are `training.checkpointing`'s.
    """
    log_with = None
    if report_to != "none":
        log_with = report_to.split(",") if report_to != "all" else "all"
        if log_with == ["tensorboard"] and not (
            importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
        ):
            logger.warning("TensorBoard is not installed: training runs without a tracker")
            log_with = None
    project_config = ProjectConfiguration(
        project_dir=str(output_dir),
        logging_dir=str(Path(output_dir) / "logs"),
    )
    accelerator = Accelerator(
        mixed_precision=mixed_precision,
        gradient_accumulation_steps=gradient_accumulation_steps,
        log_with=log_with,
        project_config=project_config,
    )
    if accelerator.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        # accelerate would silently train in fp32: it has no fp16 autocast with loss scaling on a CPU
        raise ValueError("--mixed_precision fp16 needs a GPU (fp16 autocast with loss scaling); on a CPU use bf16")
    return accelerator


def resolve_mixed_precision(requested: str) -> str:
    """`auto` becomes bf16 where the hardware multiplies bf16 natively and `no` elsewhere: emulated bf16 on a CPU
    costs several times fp32's step time. Other values are kept."""
    if requested != "auto":
        return requested
    on_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    if on_cpu:
        native = cpu_has_native_bf16() is True
        reason = f"this CPU {'has' if native else 'lacks'} {' / '.join(NATIVE_BF16_CPU_FLAGS)}"
    else:
        native = torch.cuda.is_bf16_supported()
        reason = f"this GPU {'supports' if native else 'lacks'} bf16"
    resolved = "bf16" if native else "no"
    logger.info("mixed_precision auto: %s (%s)", resolved, reason)
    return resolved


# glibc's mallopt parameters (malloc.h) and the values the training processes use.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_FREED_BYTES = 1 << 31
_MAP_ABOVE_BYTES = 1 << 30


def keep_freed_memory() -> None:
    """
    Where the C library is glibc, serve the step's multi-megabyte tensors from the heap and keep freed memory for the
    next step. By default glibc maps each such block afresh and unmaps it when freed, so every step pays a page fault
    per 4 KiB it touches: that was most of the main job's system time on a 2-core CPU (docs/performance.md).
    """
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        logger.debug("no mallopt in this C library: memory is allocated with its defaults")
        return
    if not (mallopt(_M_MMAP_THRESHOLD, _MAP_ABOVE_BYTES) and mallopt(_M_TRIM_THRESHOLD, _KEEP_FREED_BYTES)):
        logger.debug("mallopt refused the thresholds: memory is allocated with the C library's defaults")


def set_num_threads(num_threads: int | None) -> None:
    """Apply `--num_threads`; 0 shares this machine's usable cores among its training processes.

    `accelerate launch` without `--cpu` sets OMP_NUM_THREADS=1, which leaves all but one core idle on a CPU machine.
    """
    if num_threads is None:
        return
    if num_threads == 0:
        processes_here = int(os.environ.get("LOCAL_WORLD_SIZE", 1))
        usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        num_threads = max(usable_cores // processes_here, 1)
    torch.set_num_threads(num_threads)


def prepare_output_dir(config: TrainingConfig, accelerator) -> Path:
    """The output folder, checked to be writable; its old checkpoints kept for a resume, removed only when asked."""
    output_dir = Path(config.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=output_dir).close()
    except PermissionError as error:
        raise PermissionError(
            f"--output_dir {output_dir}: cannot write there ({error.strerror}: {error.filename}); choose a folder you can write"
        ) from None
    checkpoints = output_dir / "checkpoints"
    if config.resume_from_checkpoint is None and checkpoints.is_dir() and any(checkpoints.iterdir()):
        if not config.overwrite_output_dir:
            raise FileExistsError(
                f"{output_dir} already holds checkpoints: pass --resume_from_checkpoint latest to continue that run or "
                "--overwrite_output_dir to start over"
            )
        if accelerator.is_main_process:
            shutil.rmtree(checkpoints)
    accelerator.wait_for_everyone()
    output_dir.mkdir(parents=True, exist_ok=True)
    return output_dir


def load_benchmark(config: TrainingConfig, accelerator) -> datasets.DatasetDict:
    """The built benchmark; generated first (by the main process, the others wait) when `generate_benchmark` is set."""
    if config.generate_benchmark:
        with accelerator.main_process_first():
            return ensure_generated_benchmark(config.dataset, config.generator)
    if not Path(config.dataset).is_dir():
        raise FileNotFoundError(
            f"--dataset {config.dataset}: no built benchmark there; build one with python -m dataset_scripts.build "
            "(or pass --generate_benchmark for Drawn Pedestrians)"
        )
    return datasets.load_from_disk(config.dataset)


def tracker_config(config: TrainingConfig) -> dict:
    """Hyperparameters as TensorBoard accepts them: flat names (`model.hidden_size`), no None, no lists."""
    flat = {}
    for name, value in config.to_dict().items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        for inner, inner_value in items:
            key = f"{name}.{inner}" if inner else name
            flat[key] = inner_value if isinstance(inner_value, (int, float, str, bool)) else str(inner_value)
    return flat


@dataclass
class Stage:
    """A started stage: its configuration, accelerator and output folder, and when its script started (for timings)."""

    config: TrainingConfig
    accelerator: Accelerator
    output_dir: Path
    start_time: float

    @property
    def best_dir(self) -> Path:
        """Where the stage's final model goes, with its processor and card."""
        return self.output_dir / BEST_DIR

    def prepare_training(self, model, optimizer, scheduler, data_position: dict, tracker_project: str):
        """
        The model and optimiser prepared by the accelerator, a new `TrainingProgress`, and the checkpoints that save
        them with the scheduler and `data_position` (`{name: sampler or stream}`, what makes a resume exact); resumed
        from `--resume_from_checkpoint` when given; the trackers started. Returns (model, optimizer, progress,
        checkpoints).
        """
        model, optimizer = self.accelerator.prepare(model, optimizer)
        progress = TrainingProgress()
        checkpoints = CheckpointManager(
            self.accelerator,
            self.output_dir,
            self.config.checkpoints_total_limit,
            {**data_position, "scheduler": scheduler, "progress": progress},
        )
        if self.config.resume_from_checkpoint:
            checkpoints.resume(self.config.resume_from_checkpoint)
        self.accelerator.init_trackers(tracker_project, config=tracker_config(self.config))
        return model, optimizer, progress, checkpoints

    def step_bar(self, total_steps: int, done_steps: int, description: str) -> tqdm:
        """A progress bar over the optimiser steps, from those a resume already did; shown by each machine's main process."""
        return tqdm(
            total=total_steps,
            initial=done_steps,
            desc=description,
            unit="step",
            disable=not self.accelerator.is_local_main_process,
        )

    def results(
        self, *, test: dict | None, validation: dict | None, best_epoch, effective_batch_size: int, trained_steps: int, **details
    ) -> dict:
        """The results.json payload of every stage (its wall time filled in by `finish`); `details` are the stage's own."""
        return {
            "wall_time_s": None,
            "time_to_final_metrics_s": round(time.time() - self.start_time, 1),
            "test": test,
            "validation": validation,
            "best_epoch": best_epoch,
            "num_processes": self.accelerator.num_processes,
            "threads_per_process": torch.get_num_threads(),  # with the precision, what decides a seed's exact numbers
            "effective_batch_size": effective_batch_size,
            "seed": self.config.seed,
            "trained_steps": trained_steps,
            **details,
            "config": self.config.to_dict(),
        }

    def finish(self, results: dict, model_card: Callable[[], ModelCard], commit_message: str) -> dict:
        """
        On the main process: the card (built there only) into best/, the push of best/ with `--push_to_hub`, and
        results.json with the wall time; then every process waits for it and ends its trackers. Returns `results`.
        """
        if self.accelerator.is_main_process:
            with atomic_output(self.best_dir / "README.md") as partial_card:
                model_card().save(partial_card)
            if self.config.push_to_hub:
                push_folder_to_hub(self.best_dir, self.config.push_to_hub, commit_message=commit_message)
            results["wall_time_s"] = round(time.time() - self.start_time, 1)
            write_json_atomic(self.output_dir / RESULTS_FILE, results)
        self.accelerator.wait_for_everyone()  # no process tears the group down while the main one still writes or pushes
        self.accelerator.end_training()
        return results


def start_stage(config: TrainingConfig, start_time: float | None = None) -> Stage:
    """
    The stage's accelerator (with `auto` precision resolved in `config`, so that results and card say what ran),
    then `--num_threads` (after it: accelerate sets its own count for CPU processes), the
    checked output folder and the seed. `start_time` is when the script started (now when not given).
    """
    config.mixed_precision = resolve_mixed_precision(config.mixed_precision)
    accelerator = create_accelerator(
        config.output_dir,
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        report_to=config.report_to,
    )
    set_num_threads(config.num_threads)
    keep_freed_memory()
    output_dir = prepare_output_dir(config, accelerator)
    set_seed(config.seed)
    return Stage(config, accelerator, output_dir, time.time() if start_time is None else start_time)
