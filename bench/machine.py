"""The machine's ceiling: what the CPU offers (cores, instruction sets) and its matrix-multiply throughput."""

from __future__ import annotations

import os
import platform

import torch

from .common import time_calls

# Instruction sets that decide which bf16 kernels oneDNN can use: native bf16 dot products (avx512_bf16, amx_bf16)
# or only conversions (avx2 / avx512f emulate bf16 through fp32).
REPORTED_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
)


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model in ("unknown", ""):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {
        "model": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "flags": {flag: flag in flags for flag in REPORTED_FLAGS},
    }


def matmul_gflops(size: int, dtype: torch.dtype, budget_s: float) -> float:
    """GFLOP/s of a square `size` x `size` matrix product in `dtype` on the threads torch uses."""
    generator = torch.Generator().manual_seed(0)
    left = torch.randn(size, size, generator=generator).to(dtype)
    right = torch.randn(size, size, generator=generator).to(dtype)
    timing = time_calls(lambda: left @ right, budget_s=budget_s)
    return 2 * size**3 / timing.seconds_per_call / 1e9


def linear_gflops(rows: int, in_features: int, out_features: int, dtype: torch.dtype, budget_s: float) -> float:
    """GFLOP/s of a model-shaped product (tokens x in) @ (in x out), as nn.Linear runs it."""
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(rows, in_features, generator=generator).to(dtype)
    weight = torch.randn(out_features, in_features, generator=generator).to(dtype)
    timing = time_calls(lambda: torch.nn.functional.linear(inputs, weight), budget_s=budget_s)
    return 2 * rows * in_features * out_features / timing.seconds_per_call / 1e9


def measure_ceiling(size: int, linear_rows: int, hidden: int, inner: int, budget_s: float) -> dict:
    """Square-matmul ceilings in fp32 and bf16, plus the MLP's fc1 shape to show what the model's GEMMs reach."""
    ceiling = {"square_size": size, "linear_shape": [linear_rows, hidden, inner]}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        ceiling[f"{name}_gflops"] = matmul_gflops(size, dtype, budget_s)
        ceiling[f"{name}_linear_gflops"] = linear_gflops(linear_rows, hidden, inner, dtype, budget_s)
    return ceiling
