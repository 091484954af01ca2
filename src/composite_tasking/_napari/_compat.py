"""Work-arounds for the process napari runs in.

Mesa's software OpenGL (llvmpipe: virtual machines, remote desktops, Xvfb) maps its own
``libLLVM`` into the process when napari makes its canvas. ``triton``'s native library
carries another LLVM, and importing it after Mesa's crashes the process (a segmentation
fault in ``triton._C.libtriton``). torch imports triton whenever it is installed, through
``torch._dynamo`` (which torchvision imports). Nothing in the plugin uses triton (it
serves ``torch.compile``), so triton is kept out of a process that already holds an LLVM:

- ``import composite_tasking._napari`` installs (once) :class:`TritonGuard`, an import
  hook that decides at the moment ``triton`` is first imported, whenever that is: if an
  LLVM is mapped by then (``/proc/self/maps``), the import fails with
  :class:`ModuleNotFoundError` and later ones too, as if triton were not installed, and
  torch runs without it; else the import proceeds. A script may therefore import the
  plugin, make its viewer and only then import the model stack (``open_annotator(...,
  viewer=v)``);
- :func:`prevent_llvm_clash` installs the hook too and blocks triton at once when an LLVM
  is already mapped (the widgets call it before anything imports torchvision).

Imported the other way round (triton first, as ``ctn annotate`` does by importing the model
stack before it makes the viewer), both libraries coexist and nothing is blocked. The
guard only acts on Linux (``/proc/self/maps``).
"""

from __future__ import annotations

import importlib.abc
import sys

__all__ = ["TritonGuard", "install_triton_guard", "llvm_mapped", "prevent_llvm_clash"]

#: the module kept out of a process that already holds an LLVM
BLOCKED = "triton"


def llvm_mapped() -> bool:
    """True when a ``libLLVM`` is mapped into this process (Linux; False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as f:
            return any("libLLVM" in line for line in f)
    except OSError:
        return False


def _block() -> None:
    # a None entry makes every later ``import triton`` raise ModuleNotFoundError and
    # importlib.util.find_spec("triton") return None, without asking the finders again
    sys.modules[BLOCKED] = None  # type: ignore[assignment]


class TritonGuard(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` finder that fails ``import triton`` (and ``triton.*``) when,
    at that moment, triton is not imported yet and an LLVM is mapped (see the module
    docstring); otherwise it returns None and the import proceeds as usual."""

    #: marks the guard in ``sys.meta_path`` (also across a reload of this module)
    composite_tasking_triton_guard = True

    def find_spec(self, fullname, path=None, target=None) -> None:
        """None (the import proceeds), or ModuleNotFoundError when triton must stay out."""
        if fullname != BLOCKED and not fullname.startswith(BLOCKED + "."):
            return
        if sys.modules.get(BLOCKED) is not None:
            return  # imported (or being imported) before any LLVM: they coexist
        if not llvm_mapped():
            return
        _block()
        raise ModuleNotFoundError(
            f"{BLOCKED} is not imported in this process: another LLVM (Mesa's software "
            "OpenGL) is loaded, and the two crash together (composite_tasking._napari._compat)",
            name=fullname)  # fmt: skip

    def invalidate_caches(self) -> None:
        pass


def install_triton_guard() -> TritonGuard:
    """Put :class:`TritonGuard` first in ``sys.meta_path`` unless it is there; returns it."""
    for finder in sys.meta_path:
        if getattr(finder, "composite_tasking_triton_guard", False):
            return finder  # type: ignore[return-value]
    guard = TritonGuard()
    sys.meta_path.insert(0, guard)
    return guard


def prevent_llvm_clash() -> bool:
    """Block ``import triton`` now when another LLVM is already loaded (and install
    :class:`TritonGuard` for later imports); True if triton is blocked."""
    install_triton_guard()
    if BLOCKED in sys.modules:
        return sys.modules[BLOCKED] is None
    if not llvm_mapped():
        return False
    _block()
    return True
