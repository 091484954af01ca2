"""Work-arounds for the process napari runs in.

Mesa's software OpenGL (llvmpipe: virtual machines, remote desktops, Xvfb) maps its own
``libLLVM`` into the process when napari makes its canvas. ``triton``'s native library
carries another LLVM, and importing it after Mesa's crashes the process (a segmentation
fault in ``triton._C.libtriton``). torch imports triton whenever it is installed, through
``torch._dynamo`` (which torchvision imports). Nothing in the plugin uses triton (it
serves ``torch.compile``), so when an LLVM is already mapped and triton is not yet
imported, :func:`prevent_llvm_clash` makes ``import triton`` fail in this process:
torch then runs without it. Imported the other way round (triton first, as
``ctn annotate`` does), both libraries coexist.
"""

from __future__ import annotations

import sys

__all__ = ["prevent_llvm_clash"]


def prevent_llvm_clash() -> bool:
    """Block ``import triton`` when another LLVM is already loaded; True if blocked."""
    if "triton" in sys.modules or not sys.platform.startswith("linux"):
        return sys.modules.get("triton", False) is None
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            maps = f.read()
    except OSError:
        return False
    if "libLLVM" not in maps:
        return False
    sys.modules["triton"] = None  # type: ignore[assignment]  # import triton -> ImportError
    return True
