"""Measuring tools shared by the benchmark sections: wall-clock timing, peak resident memory, FLOP counts."""

from __future__ import annotations

import ctypes
import gc
import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from modeling_ivt import IVTConfig


@dataclass
class Timing:
    """Seconds per call over `calls` timed calls (after `warmup` untimed ones) and the last call's result."""

    seconds_per_call: float
    calls: int
    warmup: int
    result: object = None


def time_calls(fn: Callable[[], object], *, budget_s: float, warmup: int = 1, max_calls: int = 1000) -> Timing:
    """
    Time `fn` after `warmup` untimed calls (oneDNN builds its kernels on the first call of a shape): repeat until
    `budget_s` seconds have passed, at least once, so an expensive call is timed once and a cheap one many times.
    """
    result = None
    for _ in range(warmup):
        result = fn()
    calls, start = 0, time.perf_counter()
    while calls == 0 or (time.perf_counter() - start < budget_s and calls < max_calls):
        result = fn()
        calls += 1
    return Timing((time.perf_counter() - start) / calls, calls, warmup, result)


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


@dataclass
class PeakMemory:
    """Peak resident memory of this process while the block ran, as the increase over the RSS at its start."""

    start_mib: float = 0.0
    peak_mib: float = 0.0

    @property
    def increase_mib(self) -> float:
        return self.peak_mib - self.start_mib


def _release_free_heap() -> None:
    """Give freed heap pages back to the OS (glibc), so that the RSS at the start counts live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def peak_rss():
    """
    Measures the peak RSS of a block: Linux's high-water mark (VmHWM) is reset through /proc/self/clear_refs before
    it runs and read after. Counts every allocation (torch's CPU allocator included), unlike tracemalloc.
    """
    gc.collect()
    _release_free_heap()
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")
    memory = PeakMemory(start_mib=_status_kib("VmRSS") / 1024)
    yield memory
    memory.peak_mib = _status_kib("VmHWM") / 1024


def encoder_flops(config: IVTConfig, seq_len: float) -> float:
    """Multiply-add FLOPs (2 per MAC) of the shared transformer on one sequence: projections, attention, MLP."""
    hidden, inner = config.hidden_size, config.intermediate_size
    per_layer = 2 * seq_len * hidden * (3 * hidden + hidden + 2 * inner) + 2 * 2 * seq_len * seq_len * hidden
    return config.num_hidden_layers * per_layer


def image_forward_flops(config: IVTConfig) -> float:
    """FLOPs of one image: the patch convolution as a matrix product, then the encoder over [CLS] + patches."""
    rows, columns = config.patch_grid
    patch = 2 * rows * columns * config.num_channels * config.patch_size**2 * config.hidden_size
    return patch + encoder_flops(config, config.num_image_tokens)


def text_forward_flops(config: IVTConfig, seq_len: int) -> float:
    """FLOPs of one caption padded to `seq_len` tokens (padding is computed too, so it counts)."""
    return encoder_flops(config, seq_len)


def expected_kept_tokens(config: IVTConfig, num_tokens: int) -> float:
    """Token dropping removes k ~ U{0..floor(ratio N)} tokens in training: the mean length that stays."""
    return num_tokens - math.floor(config.token_drop_ratio * num_tokens) / 2


def training_step_flops(config: IVTConfig, num_pairs: int, text_len: int) -> float:
    """Forward + backward (about 3x forward) of `num_pairs` image-caption pairs at the mean length after dropping."""
    rows, columns = config.patch_grid
    patch = 2 * rows * columns * config.num_channels * config.patch_size**2 * config.hidden_size
    image = patch + encoder_flops(config, expected_kept_tokens(config, config.num_image_tokens))
    text = encoder_flops(config, expected_kept_tokens(config, text_len))
    return 3 * num_pairs * (image + text)


def autocast_context(precision: str):
    """bf16 autocast on the CPU for "bf16", nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "fp32":
        return torch.autocast("cpu", enabled=False)
    raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
