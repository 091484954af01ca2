"""Compute devices and precisions, shared by inference and training."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

__all__ = ["pick_device", "cpu_has_bf16", "native_bf16", "pick_autocast_dtype", "mps_available", "DEVICES"]


#: the device values every command accepts
DEVICES = "auto, cpu, cuda, cuda:I or mps"


def mps_available() -> bool:
    """True where torch reports an Apple-silicon GPU (Metal Performance Shaders) it can use."""
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # noqa: BLE001 - a torch built without it
        return False


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
    """``auto`` = the first CUDA device if torch sees one (under ``torchrun``, the one of
    the process's ``LOCAL_RANK``), else Apple silicon's GPU (MPS)
    if torch reports it, else the CPU (the order of micro-sam and cellpose); ``cpu``,
    ``cuda``, ``cuda:I`` or ``mps``. Anything else, or a device torch does not see, is a
    ValueError that says what is accepted."""
    if spec == "auto":
        if torch.cuda.is_available():
            # under torchrun (LOCAL_RANK set) each process of a machine takes its own GPU
            local = os.environ.get("LOCAL_RANK", "")
            if local.isdigit():
                return torch.device("cuda", int(local) % max(1, torch.cuda.device_count()))
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    if not isinstance(spec, (str, torch.device)) or not re.fullmatch(r"cpu|cuda(:\d+)?|mps", str(spec)):
        raise ValueError(f"unknown device {spec!r}; use {DEVICES} (I: the index of a CUDA device)")
    if str(spec) == "mps":
        if not mps_available():
            raise ValueError("device 'mps' asked for, but torch reports no MPS device (Apple silicon with a "
                             "macOS build of torch); use auto or cpu")  # fmt: skip
        return torch.device("mps")
    dev = torch.device(spec)
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {str(spec)!r} asked for, but torch sees no CUDA device; use auto or cpu")
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"device {str(spec)!r}: torch sees {n} CUDA device(s), cuda:0 to cuda:{n - 1}")
    return dev


def pick_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Training's autocast dtype for a recipe's ``precision``: ``fp32`` none, ``bf16``
    bf16, ``auto`` bf16 (fp16 on a GPU without bf16) where it is native, else none."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16() else None
