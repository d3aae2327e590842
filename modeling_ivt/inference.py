"""Inference precision: float32, or bfloat16 weights where the hardware multiplies bf16 natively.

bfloat16 weights (not autocast) are what make CPU inference fast: every matrix product runs on the CPU's bf16 units
(AVX512-BF16 or AMX) with no per-call casts, at about 3x float32 on such CPUs. CPUs without native bf16 emulate it and
run slower than float32, so loading in bf16 on one logs a warning.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

# /proc/cpuinfo flags of CPUs that multiply bf16 natively (oneDNN's bf16 kernels need one of them).
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_has_native_bf16() -> bool | None:
    """Whether this CPU multiplies bf16 natively; None where /proc/cpuinfo cannot tell (not Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return any(flag in line.split() for flag in NATIVE_BF16_CPU_FLAGS)
    except OSError:
        pass
    return None


def inference_dtype(bf16: bool, device: str | torch.device = "cpu") -> torch.dtype:
    """The weight dtype for `bf16`, warning when bf16 is asked for on a CPU that would emulate it."""
    if not bf16:
        return torch.float32
    if torch.device(device).type == "cpu":
        native = cpu_has_native_bf16()
        if native is False:
            logger.warning(
                "bf16 requested, but this CPU lacks native bf16 (no %s flag): it runs slower than float32 here",
                " or ".join(NATIVE_BF16_CPU_FLAGS),
            )
        elif native is None:
            logger.warning("bf16 requested; whether this CPU has native bf16 cannot be told (no /proc/cpuinfo)")
    return torch.bfloat16


__all__ = ["NATIVE_BF16_CPU_FLAGS", "cpu_has_native_bf16", "inference_dtype"]
