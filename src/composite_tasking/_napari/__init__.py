"""napari integration of CompositeTasking (the only part of the package that imports
napari or Qt).

- :mod:`.palette_layer`: Task Palettes as napari Labels layers (colours from
  :data:`composite_tasking.tasks.TASKS`, metadata marking a layer as a palette);
- :mod:`.palette_widget`: the "Task Palette" dock widget (``napari.yaml``).

Names are imported lazily so that ``import composite_tasking._napari`` stays cheap.
"""

from __future__ import annotations

__all__ = ["TaskPaletteWidget", "make_palette_layer", "is_palette_layer", "task_colormap"]

_WHERE = {
    "TaskPaletteWidget": "palette_widget",
    "make_palette_layer": "palette_layer",
    "is_palette_layer": "palette_layer",
    "task_colormap": "palette_layer",
}


def __getattr__(name: str):
    if name in _WHERE:
        from importlib import import_module

        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
