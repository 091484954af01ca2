"""napari integration of CompositeTasking (the only part of the package that imports
napari or Qt).

- :mod:`.palette_layer`: Task Palettes as napari Labels layers (colours from
  :data:`composite_tasking.tasks.TASKS`, metadata marking a layer as a palette);
- :mod:`.palette_widget`: the "Task Palette" dock widget (``napari.yaml``);
- :mod:`.task_layers`: one layer per task and role for predictions (colours, names,
  in-place updates, correction state);
- :mod:`.predict_widget`: the "Predict" dock widget (predict, re-predict, save);
- :mod:`.finetune_widget`: the "Fine-tune" dock widget;
- :mod:`.store_io`: the label-store reader and writer; :mod:`.sample_data`: samples;
- :mod:`.annotate`: ``ctn annotate`` (a viewer with the widgets docked).

Names are imported lazily so that ``import composite_tasking._napari`` stays cheap.
"""

from __future__ import annotations

from ._compat import prevent_llvm_clash

prevent_llvm_clash()

__all__ = [
    "TaskPaletteWidget",
    "PredictWidget",
    "FinetuneWidget",
    "make_palette_layer",
    "is_palette_layer",
    "task_colormap",
    "open_annotator",
]

_WHERE = {
    "PredictWidget": "predict_widget",
    "FinetuneWidget": "finetune_widget",
    "open_annotator": "annotate",
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
