"""Compute devices and precisions, shared by inference and training."""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["pick_device", "cpu_has_bf16", "native_bf16"]


def cpu_has_bf16() -> bool:
    """True on CPUs with native bf16 arithmetic (where bf16 autocast pays)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def native_bf16(device: str | torch.device) -> bool:
    """True where bf16 autocast is native on ``device``: a CUDA GPU with bf16, or a CPU
    with avx512_bf16 / amx_bf16 (elsewhere autocast would emulate it, slower)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return dev.type == "cpu" and cpu_has_bf16()


def pick_device(spec: str = "auto") -> torch.device:
    """``auto`` = the first CUDA device if torch sees one, else the CPU."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(spec)
    except RuntimeError:
        raise ValueError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:I") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} asked for, but torch sees no CUDA device")
    return dev
