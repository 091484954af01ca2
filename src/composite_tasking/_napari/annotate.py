"""``ctn annotate [FOLDER | STORE | IMAGE ...]``: napari with the "Label images" dock (the
series navigator, the task legend, Predict, the class list) and the Fine-tune dock, on
a series of images shown one at a time.

The inputs make one :class:`~composite_tasking.session.AnnotationSession`: image files,
folders of images (read with :func:`composite_tasking.images.read_image`) and at most
one label store, which is where everything is saved (default: ``<folder>-labels.zarr``
beside the first folder; ``store`` names another). The series opens at its first image
not yet reviewed, so reopening resumes where the person stopped. What cannot be opened
(a missing path, a zarr folder that is not a label store, reported once) is returned as
a problem.
"""

from __future__ import annotations

import os
from typing import Sequence

__all__ = ["open_annotator", "WIDGETS", "NOT_A_STORE"]

PLUGIN = "napari-composite-tasking"
#: the dock widgets ``ctn annotate`` opens, in this order (display names of napari.yaml)
WIDGETS = ("Label images", "Fine-tune")
#: why a zarr folder that this package did not write is not opened
NOT_A_STORE = "a zarr folder that is not a label store of this package: not opened"


def open_annotator(paths: Sequence[str | os.PathLike] = (), *, viewer=None,
                   model: str | None = None, device: str | None = None,
                   store: str | os.PathLike | None = None, order: str = "file",
                   freeze_imports: bool = False):  # fmt: skip
    """Open (or use) a viewer, dock the widgets, open the series of ``paths``.

    Returns ``(viewer, widgets, problems)``: the widgets by name ("Label images",
    "Fine-tune", and the parts of the first: "Series", "Task Palette", "Predict") and,
    for each input that was not opened, ``(path, reason)``.

    ``freeze_imports`` (``ctn annotate``, which owns its process): once the model stack,
    napari and the docks are made, their objects are moved out of the garbage
    collector's scans (:func:`gc.freeze`). napari collects garbage whenever layers leave
    the canvas, which, in a process holding torch, took ~0.45 s of the GUI thread at
    every change of image; after the freeze it takes milliseconds. The images' own
    layers are made after it and are collected as usual.
    """
    from ._compat import keep_gl_programs, prevent_llvm_clash

    prevent_llvm_clash()  # a viewer made before this call may have loaded Mesa's LLVM
    keep_gl_programs()  # Mesa's software OpenGL crashes after programs are deleted (_compat)
    # the model stack first: triton (imported by torch) crashes when Mesa's software
    # OpenGL loaded its LLVM before it (see _compat); imported first, both coexist
    import composite_tasking.model  # noqa: F401
    import napari

    if viewer is None:
        viewer = napari.Viewer(title="CompositeTasking")
    main_dock, annotator = viewer.window.add_plugin_dock_widget(PLUGIN, "Label images")
    _dock, finetune = viewer.window.add_plugin_dock_widget(PLUGIN, "Fine-tune", tabify=True)
    # the labelling dock in front, the fine-tune one a tab behind it (napari raises a
    # tabified dock when the event loop next runs: raise ours after that)
    from qtpy.QtCore import QTimer

    main_dock.raise_()
    QTimer.singleShot(0, main_dock.raise_)
    docked = {"Label images": annotator, "Fine-tune": finetune, "Series": annotator.series,
              "Task Palette": annotator.palette, "Predict": annotator.predict}  # fmt: skip
    if model or device:
        annotator.predict.set_model(model or annotator.predict.model_spec()[0], device)

    if freeze_imports:
        import gc

        gc.collect()
        gc.freeze()
    problems: list[tuple[str, str]] = []
    if paths:
        from ..session import AnnotationSession, SessionError
        from ..store import StoreError

        try:
            session = AnnotationSession.open(paths, store, order=order)
        except (SessionError, StoreError, OSError) as e:
            problems.append((", ".join(map(str, paths)), str(e)))
        else:
            problems += session.problems
            annotator.series.set_session(session)
    return viewer, docked, problems
