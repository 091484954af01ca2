"""The Predict widget's work without Qt: a prediction (or a palette fill, or a model
load) as plain steps (:class:`PredictJob`) that a napari worker runs, and the model and
settings helpers the widgets share."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from ._compat import prevent_llvm_clash
from .planes import task_planes

if TYPE_CHECKING:
    from ..inference import Prediction, Predictor

__all__ = ["PredictJob", "JobResult", "load_predictor", "plugin_setting", "bundled_model_status",
           "resolve_path_text", "model_path_text", "device_text", "device_choices", "PLUGIN",
           "PALETTE_NETWORK", "PREDICT_STEPS"]  # fmt: skip

PLUGIN = "napari-composite-tasking"
#: the fill choice that takes the palette network's palette
PALETTE_NETWORK = "palette network"
#: steps a full predict job reports (model, encode, decode, labels); a re-predict reports
#: three, a palette fill two, a model load one (:meth:`PredictJob.total_steps`)
PREDICT_STEPS = 4


def plugin_setting(name: str, default: str) -> str:
    """A value of the plugin's settings (napari Preferences), or ``default``."""
    try:
        from napari.settings import get_plugin_settings

        value = getattr(get_plugin_settings(PLUGIN).inference, name)
        return str(value) if value not in (None, "") else default
    except Exception:  # noqa: BLE001 - settings are a convenience; napari may lack them
        return default


def load_predictor(model: str, device: str, palette_model: str = "default", scale: str | None = None) -> "Predictor":
    """A :class:`Predictor` for a model spec (``default``, a checkpoint or run folder);
    ``palette_model``: the palette network it loads on first use (``default`` = the
    bundled one). ``scale``: its working resolution (None: the plugin's ``scale``
    setting in napari's Preferences, ``auto`` by default, as ``ctn label``)."""
    prevent_llvm_clash()
    from ..inference import Predictor

    scale = plugin_setting("scale", "auto") if scale is None else scale
    return Predictor(model, device=device, palette_model=palette_model, scale=scale)


def bundled_model_status() -> str | None:
    """None when the bundled model is shipped, else a sentence saying what to do."""
    from ..model.checkpoint import CheckpointError
    from ..weights import default_model_path

    try:
        default_model_path()
    except CheckpointError:
        return ("This installation ships no bundled model ('default'): choose a checkpoint "
                "folder or a training run folder with Browse...")  # fmt: skip
    return None


def resolve_path_text(text: str) -> str:
    """A path typed in a field, made explicit: ``~`` expanded, a relative path joined to
    the current directory (what it means to napari's process), normalised."""
    return os.path.abspath(os.path.expanduser(text.strip()))


def model_path_text(text: str) -> str:
    """A model field's text: ``default`` (or empty) as it is, else an explicit path."""
    text = text.strip()
    return "default" if text in ("", "default") else resolve_path_text(text)


def device_text(predictor: "Predictor | None") -> str:
    if predictor is None:
        return "not loaded"
    dev = predictor.device
    text = str(dev)
    if dev.type == "cuda":
        import torch

        text += f" ({torch.cuda.get_device_name(dev)})"
    elif dev.type == "cpu":
        import torch

        text += f" ({torch.get_num_threads()} threads)"
    if predictor.autocast is not None:
        text += f", {str(predictor.autocast).replace('torch.', '')}"
    return text


@dataclass
class JobResult:
    predictor: "Predictor"
    prediction: "Prediction | None" = None
    palette: np.ndarray | None = None
    #: the prediction's layers as arrays (:func:`.planes.task_planes`, thresholded),
    #: made in the job's thread: the GUI thread only puts them into layers
    planes: list | None = None


@dataclass
class PredictJob:
    """One prediction (or palette fill) as plain steps: no Qt, no napari.

    :meth:`steps` is a generator that yields after each stage (so a worker reports
    progress and can be cancelled between stages) and returns a :class:`JobResult`;
    :meth:`run` runs it to the end in the calling thread.
    """

    rgb: np.ndarray
    palette: np.ndarray | None
    key: Any
    model: str
    device: str
    predictor: "Predictor | None" = None
    #: fill the palette instead of predicting: a semantic rule on the predicted classes,
    #: or :data:`PALETTE_NETWORK` (the palette network's palette)
    rule: str | None = None
    palette_model: str = "default"
    #: the working resolution of a Predictor this job loads (None: the plugin's setting)
    scale: str | None = None
    #: the prediction of the same image before a palette edit (by the same predictor):
    #: then only what the edit can reach is decoded
    previous: "Prediction | None" = None
    extra: dict = field(default_factory=dict)

    def total_steps(self) -> int:
        """How many times :meth:`steps` yields."""
        if self.rule is not None:
            return 2  # model, palette
        if self.previous is not None and self.predictor is not None:
            return 3  # model, encode (cached), decode of the changed box
        return PREDICT_STEPS

    def steps(self) -> Iterator[str]:
        predictor = self.predictor or load_predictor(self.model, self.device, self.palette_model, self.scale)
        yield "model"
        if self.rule == PALETTE_NETWORK:
            palette = predictor.palette_from_net(self.rgb)
            yield "palette"
            return JobResult(predictor, palette=palette)
        if self.rule is not None:
            palette = predictor.palette_for(self.rgb, self.rule, key=self.key)
            yield "palette"
            return JobResult(predictor, palette=palette)
        from ..inference import Prediction

        if self.previous is not None and predictor is self.predictor:
            yield "encode"
            prediction = predictor.repredict(self.rgb, self.palette, self.previous, key=self.key)
            yield "decode"
            return JobResult(predictor, prediction, planes=task_planes(prediction, thresholded=True))
        predictor.features(self.rgb, key=self.key)
        yield "encode"
        out, working = predictor.output(self.rgb, self.palette, key=self.key)
        yield "decode"
        tasks = predictor.decode_labels(out, self.palette)
        prediction = Prediction(self.palette, out, tasks, working)
        planes = task_planes(prediction, thresholded=True)
        yield "labels"
        return JobResult(predictor, prediction, planes=planes)

    def run(self) -> JobResult:
        gen = self.steps()
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value


def device_choices() -> list[str]:
    choices = ["auto", "cpu"]
    try:
        import torch

        if torch.cuda.is_available():
            choices += ["cuda"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        from ..device import mps_available

        if mps_available():
            choices.append("mps")
    except Exception:  # noqa: BLE001
        pass
    return choices
