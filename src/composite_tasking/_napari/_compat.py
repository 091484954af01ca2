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

Mesa's software OpenGL has a second defect the plugin meets: once vispy deletes a shader
program (``glDeleteProgram``, when a layer is removed), a later frame can crash inside the
driver's draw call (a segmentation fault in ``swrast_dri.so`` under ``glDrawArrays``),
typically when the canvas is resized or a notification slides in over it. Seen with napari
0.9.2, vispy 0.17.0 and Mesa 22.3 (llvmpipe and softpipe alike); it follows no particular
layer type, and the same flow runs without a crash when programs are not deleted.
:func:`keep_gl_programs` makes vispy keep the programs of removed layers on such a
renderer and leaves every other renderer as it is. A kept program costs memory: about
2.3 MB under llvmpipe (16 MB per 7 layers made and removed, measured), which is why the
series widget reuses an image's layers for the next image (:mod:`.layer_pool`) instead of
removing them: few layers are ever removed.
"""

from __future__ import annotations

import importlib.abc
import sys

__all__ = [
    "TritonGuard",
    "install_triton_guard",
    "keep_gl_programs",
    "kept_gl_programs",
    "llvm_mapped",
    "prevent_llvm_clash",
]

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


# ======================================================================================
# shader programs under Mesa's software OpenGL (see the module docstring)
# ======================================================================================

#: renderer names (``GL_RENDERER``, lower case) whose programs are kept
SOFTWARE_RENDERERS = ("llvmpipe", "softpipe", "swrast")

_kept: list[int] = []
_renderer: list[str] = []  # the renderer, read once, when the first program is deleted


def _renderer_name(gl) -> str:
    if not _renderer:
        try:
            name = gl.glGetParameter(gl.GL_RENDERER)
        except Exception:  # no context current: unknown for now (this program is deleted)
            return ""
        _renderer.append((name.decode() if isinstance(name, bytes) else str(name)).lower())
    return _renderer[0]


def keep_gl_programs() -> bool:
    """Make vispy keep (not delete) the OpenGL programs of removed visuals when the
    renderer is Mesa's software one; installed once per process, decided at the first
    deletion (a GL context is current then). True when installed now or before."""
    try:
        from vispy.gloo import gl, glir
    except ImportError:  # no vispy: no napari canvas either
        return False
    program = glir.GlirProgram
    if getattr(program.delete, "composite_tasking_keeps_programs", False):
        return True
    delete = program.delete

    def delete_unless_software(self) -> None:
        if any(name in _renderer_name(gl) for name in SOFTWARE_RENDERERS):
            _kept.append(int(self._handle))
            return
        delete(self)

    delete_unless_software.composite_tasking_keeps_programs = True  # type: ignore[attr-defined]
    delete_unless_software.__wrapped__ = delete  # type: ignore[attr-defined]
    program.delete = delete_unless_software  # type: ignore[method-assign]
    return True


def kept_gl_programs() -> int:
    """How many programs :func:`keep_gl_programs` kept so far in this process."""
    return len(_kept)
