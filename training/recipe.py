"""Training recipes: YAML files that say everything about a run.

A recipe names the model, the data, the rule that makes the training palettes, the loss
weights, the optimiser with the paper's two learning rates (encoder, decoder + task
representation), the schedule, the augmentation, the epochs and the precision. Unknown
keys are errors naming the file, so a typo never silently changes a run.

Data specs, in a recipe or on the command line (``--data``)::

    synthetic:seed=K,n=N[,size=S]      scenes of the synthetic world
    pascal-mt:ROOT[,split=val]         PASCAL-MT on disk
    STORE.zarr                         a label store (ground truth or corrections)
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Recipe", "RecipeError", "DataSpec", "parse_data_spec", "load_recipe", "builtin_recipe"]


class RecipeError(ValueError):
    """A recipe or data spec is invalid."""


@dataclass(frozen=True)
class DataSpec:
    kind: str  # synthetic | pascal-mt | store
    seed: int = 0
    n: int = 0
    size: int = 256
    root: str = ""
    split: str = "train"

    def to_string(self) -> str:
        if self.kind == "synthetic":
            return f"synthetic:seed={self.seed},n={self.n},size={self.size}"
        if self.kind == "pascal-mt":
            return f"pascal-mt:{self.root},split={self.split}"
        return self.root


def parse_data_spec(spec: str | dict | DataSpec) -> DataSpec:
    """``synthetic:seed=K,n=N[,size=S]``, ``pascal-mt:ROOT[,split=S]`` or a store path."""
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = spec.pop("kind", None)
        try:
            return DataSpec(kind=str(kind), **spec)
        except TypeError as e:
            raise RecipeError(f"data spec {spec}: {e}") from None
    text = str(spec).strip()
    if text.startswith("synthetic:") or text == "synthetic":
        opts = _options(text.partition(":")[2], text)
        unknown = set(opts) - {"seed", "n", "size"}
        if unknown:
            raise RecipeError(f"data spec {text!r}: unknown option(s) {sorted(unknown)}; "
                              "use seed, n, size")  # fmt: skip
        try:
            vals = {k: int(v) for k, v in opts.items()}
        except ValueError:
            raise RecipeError(f"data spec {text!r}: seed, n and size are integers") from None
        if vals.get("n", 0) < 1:
            raise RecipeError(f"data spec {text!r}: give n=N (number of scenes, >= 1)")
        return DataSpec("synthetic", seed=vals.get("seed", 0), n=vals["n"], size=vals.get("size", 256))
    if text.startswith("pascal-mt:"):
        root, _, rest = text[len("pascal-mt:"):].partition(",")
        opts = _options(rest, text)
        if not root:
            raise RecipeError(f"data spec {text!r}: give the PASCAL-MT root folder")
        return DataSpec("pascal-mt", root=root, split=opts.get("split", "val"))
    if not text:
        raise RecipeError("empty data spec")
    return DataSpec("store", root=text)


def _options(text: str, whole: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, eq, v = part.partition("=")
        if not eq:
            raise RecipeError(f"data spec {whole!r}: expected key=value, got {part!r}")
        out[k.strip()] = v.strip()
    return out


@dataclass
class Recipe:
    name: str = "run"
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "ctn-resnet34", "pretrained": False})
    init: str | None = None  # a checkpoint to start from (fine-tuning)
    train: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic", "seed": 0, "n": 2000, "size": 128})
    val: dict[str, Any] | None = field(default_factory=lambda: {"kind": "synthetic", "seed": 10_000, "n": 100, "size": 128})
    rule: str = "mosaic"  # or S: complete labels, every task's loss at every pixel (the MHN/STN baselines)
    val_rule: str = "S"  # S = every task everywhere, one encoding decoded five times
    loss_weights: dict[str, float] | None = None
    focal_gamma: float = 2.0
    optimizer: dict[str, Any] = field(default_factory=lambda: {
        "lr_decoder": 1e-3, "lr_encoder": 1e-5, "weight_decay": 1e-5, "betas": [0.9, 0.999]})
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "plateau", "factor": 0.3, "patience": 12})
    augment: dict[str, Any] | None = field(default_factory=lambda: {"hflip": True, "scale": [0.8, 1.25], "photometric": True})
    epochs: int = 100
    batch_size: int = 10
    workers: int = 2
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0
    max_steps_per_epoch: int | None = None
    bn_recalibration_batches: int = 20
    grad_clip: float | None = None  # max global gradient norm, None = no clipping
    source: str | None = None

    @classmethod
    def from_dict(cls, data: dict, source: str | None = None) -> "Recipe":
        where = f" in {source}" if source else ""
        if not isinstance(data, dict):
            raise RecipeError(f"a recipe is a mapping{where}")
        known = {f.name for f in fields(cls)} - {"source"}
        unknown = set(data) - known
        if unknown:
            raise RecipeError(f"unknown recipe key(s) {sorted(unknown)}{where}; known: {sorted(known)}")
        r = cls(**copy.deepcopy(data), source=source)
        r.validate(where)
        return r

    def validate(self, where: str = "") -> None:
        from composite_tasking.model import PRESETS
        from composite_tasking.palette import load_rule
        from composite_tasking.tasks import TASK_NAMES

        if self.init is None and self.model.get("preset") not in PRESETS:
            raise RecipeError(f"unknown model preset {self.model.get('preset')!r}{where}; "
                              f"presets: {', '.join(PRESETS)}")  # fmt: skip
        for key in ("train", "val"):
            spec = getattr(self, key)
            if spec is not None:
                parse_data_spec(spec)
        is_palette_net = self.model.get("preset", "").startswith("palette")
        if self.rule == "S" and is_palette_net:
            raise RecipeError(f"rule S (every task everywhere) trains a CTN, MHN or STN, not a palette "
                              f"network: give the palette network a rule to learn{where}")  # fmt: skip
        try:
            if self.rule != "S":
                load_rule(self.rule)
            if self.val_rule != "S":
                load_rule(self.val_rule)
        except ValueError as e:
            raise RecipeError(f"{e}{where}") from None
        if self.loss_weights:
            bad = set(self.loss_weights) - set(TASK_NAMES)
            if bad:
                raise RecipeError(f"unknown task(s) {sorted(bad)} in loss_weights{where}")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise RecipeError(f"precision is auto, bf16 or fp32, not {self.precision!r}{where}")
        if self.schedule.get("kind") not in ("plateau", "step", "none"):
            raise RecipeError(f"schedule kind is plateau, step or none{where}")
        for k in ("epochs", "batch_size"):
            if int(getattr(self, k)) < 1:
                raise RecipeError(f"{k} must be >= 1{where}")

    def to_dict(self) -> dict:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        d.pop("source")
        return d


def load_recipe(path: str | Path, overrides: dict | None = None) -> Recipe:
    """Read a recipe file (or a built-in recipe by name, e.g. ``ctn-synthetic``)."""
    p = Path(path)
    if not p.exists() and not p.suffix:
        return builtin_recipe(str(path), overrides)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise RecipeError(f"cannot read recipe {p}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {p} is not valid YAML: {e}") from None
    if overrides:
        data = {**(data or {}), **overrides}
    return Recipe.from_dict(data, source=str(p))


def builtin_recipe(name: str, overrides: dict | None = None) -> Recipe:
    ref = resources.files("composite_tasking.training") / "recipes" / f"{name}.yaml"
    if not ref.is_file():
        names = sorted(p.name[:-5] for p in (resources.files("composite_tasking.training") / "recipes").iterdir()
                       if p.name.endswith(".yaml"))  # fmt: skip
        raise RecipeError(f"no recipe file {name!r} and no built-in recipe of that name; built-in: {names}")
    data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    if overrides:
        data = {**data, **overrides}
    return Recipe.from_dict(data, source=f"built-in recipe {name}")
