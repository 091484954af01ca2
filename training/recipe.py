"""Training recipes: YAML files that say everything about a run.

A recipe names the model, the data, the rule that makes the training palettes, the loss
weights, the optimiser with the paper's two learning rates (encoder, decoder + task
representation), the schedule, the augmentation, the epochs and the precision. Unknown
keys are errors naming the file, at every level (``optimizer: {lr: ...}``, a task name
in ``loss_weights``, ...), and so are values out of range, so a typo never silently
changes a run.

Data specs, in a recipe or on the command line (``--data``)::

    synthetic:seed=K,n=N[,size=S][,world=W]  scenes of the synthetic world (W: a named
                                           world, default or shifted; see synthetic.worlds)
    pascal-mt:ROOT[,split=train|val]       PASCAL-MT on disk
    STORE.zarr                             a label store

or, in a recipe, a mapping with ``kind`` and the keys of that kind
(:data:`DATA_KEYS`), e.g. ``{kind: store, root: labels.zarr, select: all, size: 96}``.
A PASCAL-MT spec without a split means the train split where a model is trained and the
val split where it is evaluated (``default_split`` of :func:`parse_data_spec`). A
store spec trains on the images holding labels a person corrected or ground truth
(``select: corrected``, the default) or on every image, pseudo-labels a model wrote
included (``select: all``: self-training). ``size`` is the side of the training crop
(smaller images are padded, padding has no task); 256 unless given.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Recipe", "RecipeError", "DataSpec", "DATA_KEYS", "SELECT", "parse_data_spec",
           "load_recipe", "builtin_recipe", "builtin_recipe_names", "recipe_data"]  # fmt: skip


class RecipeError(ValueError):
    """A recipe or data spec is invalid."""


#: the keys each kind of data spec reads (beside ``kind``)
DATA_KEYS: dict[str, tuple[str, ...]] = {
    "synthetic": ("seed", "n", "size", "world"),
    "pascal-mt": ("root", "split", "size"),
    "store": ("root", "select", "size"),
}
#: which images of a store a store spec takes: those with labels a person corrected or
#: ground truth, or all (pseudo-labels too)
SELECT = ("corrected", "all")


@dataclass(frozen=True)
class DataSpec:
    kind: str  # synthetic | pascal-mt | store
    seed: int = 0
    n: int = 0
    size: int = 256
    root: str = ""
    split: str = "train"
    select: str = "corrected"  # store: see SELECT
    world: str = "default"  # synthetic: a name of composite_tasking.synthetic.WORLDS

    def to_string(self) -> str:
        if self.kind == "synthetic":
            world = "" if self.world == "default" else f",world={self.world}"
            return f"synthetic:seed={self.seed},n={self.n},size={self.size}{world}"
        if self.kind == "pascal-mt":
            return f"pascal-mt:{self.root},split={self.split}"
        return self.root

    def to_dict(self) -> dict:
        """The recipe mapping of this spec: ``kind`` and the keys of its kind (a synthetic
        spec's ``world`` only when it is not the default world, as before worlds existed)."""
        keys = [k for k in DATA_KEYS[self.kind] if not (k == "world" and self.world == "default")]
        return {"kind": self.kind, **{k: getattr(self, k) for k in keys}}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_data_spec(spec: str | dict | DataSpec, default_split: str = "train", key: str = "data",
                    where: str = "") -> DataSpec:  # fmt: skip
    """``synthetic:seed=K,n=N[,size=S][,world=W]``, ``pascal-mt:ROOT[,split=S]``, a store path, or a
    mapping with ``kind`` (see the module doc). ``default_split`` is the PASCAL-MT split
    when the spec names none: ``train`` to train, ``val`` to evaluate. ``key`` and
    ``where`` name the spec in errors (``train``, `` in recipe.yaml``)."""
    if isinstance(spec, DataSpec):
        return spec
    if isinstance(spec, dict):
        return _data_from_dict(spec, default_split, key, where)
    if not isinstance(spec, str):
        raise RecipeError(f"{key}{where}: a data spec is a string or a mapping with kind, got {spec!r}")
    text = spec.strip()
    if text.startswith("synthetic:") or text == "synthetic":
        opts = _options(text.partition(":")[2], text, DATA_KEYS["synthetic"], where)
        vals: dict[str, Any] = {}
        for k, v in opts.items():
            if k == "world":
                vals[k] = v
                continue
            try:
                vals[k] = int(v)
            except ValueError:
                raise RecipeError(f"data spec {text!r}{where}: {k} is an integer, got {v!r}") from None
        if "n" not in vals:
            raise RecipeError(f"data spec {text!r}{where}: give n=N (number of scenes, >= 1)")
        return _data_from_dict({"kind": "synthetic", **vals}, default_split, f"data spec {text!r}", where)
    if text.startswith("pascal-mt:"):
        root, _, rest = text[len("pascal-mt:") :].partition(",")
        opts = _options(rest, text, ("split", "size"), where)
        if "size" in opts:
            try:
                opts["size"] = int(opts["size"])
            except ValueError:
                raise RecipeError(f"data spec {text!r}{where}: size is an integer, got {opts['size']!r}") from None
        return _data_from_dict({"kind": "pascal-mt", "root": root, **opts}, default_split,
                               f"data spec {text!r}", where)  # fmt: skip
    if not text:
        raise RecipeError(f"{key}{where}: empty data spec")
    return DataSpec("store", root=text)


def _data_from_dict(spec: dict, default_split: str, key: str, where: str) -> DataSpec:
    kind = spec.get("kind")
    if kind not in DATA_KEYS:
        raise RecipeError(f"{key}{where}: kind is {', '.join(DATA_KEYS)}, not {kind!r}")
    allowed = DATA_KEYS[kind]
    unknown = sorted(set(spec) - {"kind", *allowed})
    if unknown:
        raise RecipeError(f"{key}{where}: unknown key(s) {unknown} for data of kind {kind}; "
                          f"allowed: {', '.join(allowed)}")  # fmt: skip
    values = {k: v for k, v in spec.items() if k != "kind"}
    minimum = {"seed": 0, "n": 1, "size": 1}
    for k, low in minimum.items():
        if k in values and not (_is_int(values[k]) and values[k] >= low):
            raise RecipeError(f"{key}{where}: {k} must be an integer >= {low}, got {values[k]!r}")
    if kind == "synthetic" and "n" not in values:
        raise RecipeError(f"{key}{where}: give n (number of scenes, >= 1)")
    if kind == "synthetic" and "world" in values:
        from composite_tasking.synthetic.worlds import WORLDS

        if not isinstance(values["world"], str) or values["world"] not in WORLDS:
            raise RecipeError(f"{key}{where}: unknown world {values['world']!r}; known worlds: "
                              f"{', '.join(WORLDS)}")  # fmt: skip
    if kind != "synthetic":
        root = values.get("root")
        if not isinstance(root, str) or not root.strip():
            what = "the PASCAL-MT root folder" if kind == "pascal-mt" else "the label store's path"
            raise RecipeError(f"{key}{where}: give root, {what}")
    if kind == "pascal-mt":
        values.setdefault("split", default_split)
        if not isinstance(values["split"], str) or not values["split"]:
            raise RecipeError(f"{key}{where}: split is a split name (train, val), got {values['split']!r}")
    if kind == "store" and values.get("select", "corrected") not in SELECT:
        raise RecipeError(f"{key}{where}: select is {' or '.join(SELECT)}, not {values['select']!r}")
    return DataSpec(kind=kind, **values)


def _options(text: str, whole: str, allowed: tuple[str, ...], where: str) -> dict[str, Any]:  # str values
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, eq, v = part.partition("=")
        if not eq:
            raise RecipeError(f"data spec {whole!r}{where}: expected key=value, got {part!r}")
        out[k.strip()] = v.strip()
    unknown = sorted(set(out) - set(allowed))
    if unknown:
        raise RecipeError(f"data spec {whole!r}{where}: unknown option(s) {unknown}; "
                          f"use {', '.join(allowed)}")  # fmt: skip
    return out


#: the keys of each nested section that the trainer reads (trainer.py: Trainer,
#: build_augment, _Schedule); anything else in them is a typo
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("preset", "pretrained"),
    "optimizer": ("lr_decoder", "lr_encoder", "weight_decay", "betas"),
    "augment": ("crop", "hflip", "scale", "photometric"),
}
#: the keys of ``schedule`` for each of its kinds
SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "plateau": ("kind", "factor", "patience"),
    "step": ("kind", "factor", "milestones"),
    "none": ("kind",),
}


class _Checks:
    """The value checks of :meth:`Recipe.validate`; each failure a :class:`RecipeError`
    naming the key, the problem and (``where``) the file."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, problem: str):
        raise RecipeError(f"{key}{self.where}: {problem}")

    def integer(self, key: str, value, low: int, none_ok: bool = False) -> None:
        if value is None and none_ok:
            return
        if not (_is_int(value) and value >= low):
            self.fail(key, f"must be an integer >= {low}{' or null' if none_ok else ''}, got {value!r}")

    def number(self, key: str, value, low: float, strict: bool, high: float | None = None) -> float:
        if isinstance(value, str):  # YAML reads 1e-3 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = _is_number(value) and (value > low if strict else value >= low)
        if ok and high is not None:
            ok = value <= high
        if not ok:
            bound = f"{'>' if strict else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}")
            self.fail(key, f"must be a finite number {bound}, got {value!r}")
        return value

    def section(self, key: str, value, allowed) -> dict:
        if not isinstance(value, dict):
            self.fail(key, f"must be a mapping with keys {', '.join(allowed)}, got {value!r}")
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            self.fail(key, f"unknown key(s) {unknown}; allowed: {', '.join(allowed)}")
        return value


@dataclass
class Recipe:
    name: str = "run"
    model: dict[str, Any] = field(default_factory=lambda: {"preset": "ctn-resnet34", "pretrained": False})
    init: str | None = None  # a checkpoint to start from (fine-tuning)
    train: dict[str, Any] = field(default_factory=lambda: {"kind": "synthetic", "seed": 0, "n": 2000, "size": 128})
    val: dict[str, Any] | None = field(
        default_factory=lambda: {"kind": "synthetic", "seed": 10_000, "n": 100, "size": 128}
    )
    rule: str | None = "mosaic"  # or S: complete labels, every task's loss at every pixel (the MHN/STN baselines)
    val_rule: str = "S"  # S = every task everywhere, one encoding decoded five times
    loss_weights: dict[str, float] | None = None
    focal_gamma: float = 2.0
    #: variants of the loss (training/losses.py, LOSS_DEFAULTS): ``{semantic: paper |
    #: distance, temperature: T, output_penalty: w}``; null or a key left out: the paper's
    loss: dict[str, Any] | None = None
    optimizer: dict[str, Any] = field(
        default_factory=lambda: {"lr_decoder": 1e-3, "lr_encoder": 1e-5, "weight_decay": 1e-5, "betas": [0.9, 0.999]}
    )
    schedule: dict[str, Any] = field(default_factory=lambda: {"kind": "plateau", "factor": 0.3, "patience": 12})
    augment: dict[str, Any] | None = field(
        default_factory=lambda: {"hflip": True, "scale": [0.8, 1.25], "photometric": True}
    )
    epochs: int = 100
    batch_size: int = 10
    workers: int = 2
    precision: str = "auto"  # auto | bf16 | fp32
    seed: int = 0
    max_steps_per_epoch: int | None = None
    bn_recalibration_batches: int = 20
    #: BatchNorm layers keep their running statistics (eval mode) while the rest trains:
    #: a fine-tune on a few images must not re-estimate them from those few (docs/finetune.md)
    freeze_batchnorm: bool = False
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
        """Every key and value the trainer reads; a :class:`RecipeError` names the key,
        the value and (``where``) the file. The sections in turn: the strings and the
        rule's kind, the model and the data, the rules, the loss, the optimiser, the
        schedule, the augmentation, the run's numbers."""
        check = _Checks(where)
        self._check_basics(check)
        model = self._check_model_and_data(check)
        self._check_rules(model, where)
        self._check_loss(check)
        self._check_optimizer(check)
        self._check_schedule(check)
        self._check_augment(check)
        self._check_run(check)

    def _check_basics(self, check: _Checks) -> None:
        for key in ("name", "val_rule", "precision"):
            if not isinstance(getattr(self, key), str):
                check.fail(key, f"must be a string, got {getattr(self, key)!r}")
        if self.rule is None:  # the data's own palettes: a label store's stored palettes
            if parse_data_spec(self.train, "train", "train", check.where).kind != "store":
                check.fail("rule", "null (train under the stored palettes) needs a label store as the "
                                   "training data; give a rule (e.g. R2) for other data")  # fmt: skip
        elif not isinstance(self.rule, str):
            check.fail("rule", f"must be a string (or null with a label store), got {self.rule!r}")
        if not isinstance(self.freeze_batchnorm, bool):
            check.fail("freeze_batchnorm", f"must be true or false, got {self.freeze_batchnorm!r}")
        if self.init is not None and not isinstance(self.init, str):
            check.fail("init", f"must be a checkpoint path or null, got {self.init!r}")

    def _check_model_and_data(self, check: _Checks) -> dict:
        from composite_tasking.model import PRESETS

        model = check.section("model", self.model, SECTION_KEYS["model"])
        if self.init is None and model.get("preset") not in PRESETS:
            check.fail("model.preset", f"unknown model preset {model.get('preset')!r}; presets: {', '.join(PRESETS)}")
        if not isinstance(model.get("pretrained", False), bool):
            check.fail("model.pretrained", f"must be true or false, got {model['pretrained']!r}")
        if self.train is None:
            check.fail("train", "give the training data")
        for key, split in (("train", "train"), ("val", "val")):
            spec = getattr(self, key)
            if spec is not None:
                parse_data_spec(spec, split, key, check.where)
        return model

    def _check_rules(self, model: dict, where: str) -> None:
        from composite_tasking.palette import load_rule

        is_palette_net = self.init is None and str(model.get("preset", "")).startswith("palette")
        if self.rule == "S" and is_palette_net:
            raise RecipeError(f"rule S (every task everywhere) trains a CTN, MHN or STN, not a palette "
                              f"network: give the palette network a rule to learn{where}")  # fmt: skip
        try:
            if self.rule not in ("S", None):
                load_rule(self.rule)
            if self.val_rule != "S":
                load_rule(self.val_rule)
        except ValueError as e:
            raise RecipeError(f"{e}{where}") from None

    def _check_loss(self, check: _Checks) -> None:
        from composite_tasking.tasks import TASK_NAMES

        if self.loss_weights is not None:
            weights = check.section("loss_weights", self.loss_weights, TASK_NAMES)
            for task, w in weights.items():
                weights[task] = check.number(f"loss_weights.{task}", w, 0, strict=False)
        self.focal_gamma = check.number("focal_gamma", self.focal_gamma, 0, strict=False)
        if self.loss is not None:
            from .losses import LOSS_DEFAULTS, SEMANTIC_LOSSES

            loss = check.section("loss", self.loss, tuple(LOSS_DEFAULTS))
            if "semantic" in loss and loss["semantic"] not in SEMANTIC_LOSSES:
                check.fail("loss.semantic", f"must be {' or '.join(SEMANTIC_LOSSES)}, got {loss['semantic']!r}")
            if "temperature" in loss:
                loss["temperature"] = check.number("loss.temperature", loss["temperature"], 0, strict=True)
            if "output_penalty" in loss:
                loss["output_penalty"] = check.number("loss.output_penalty", loss["output_penalty"], 0,
                                                      strict=False)  # fmt: skip

    def _check_optimizer(self, check: _Checks) -> None:
        opt = check.section("optimizer", self.optimizer, SECTION_KEYS["optimizer"])
        # lr_encoder 0 keeps the encoder's weights (its BatchNorm statistics still adapt)
        for key, strict in (("lr_decoder", True), ("lr_encoder", False), ("weight_decay", False)):
            if key in opt:
                opt[key] = check.number(f"optimizer.{key}", opt[key], 0, strict)
        if "betas" in opt:
            betas = opt["betas"]
            if not (isinstance(betas, (list, tuple)) and len(betas) == 2
                    and all(_is_number(b) and 0 <= b < 1 for b in betas)):  # fmt: skip
                check.fail("optimizer.betas", f"must be two numbers in [0, 1), got {betas!r}")

    def _check_schedule(self, check: _Checks) -> None:
        if not isinstance(self.schedule, dict) or self.schedule.get("kind") not in SCHEDULE_KEYS:
            kind = self.schedule.get("kind") if isinstance(self.schedule, dict) else self.schedule
            check.fail("schedule", f"kind must be plateau, step or none, got {kind!r}")
        sch = check.section("schedule", self.schedule, SCHEDULE_KEYS[self.schedule["kind"]])
        if "factor" in sch:
            sch["factor"] = check.number("schedule.factor", sch["factor"], 0, strict=True, high=1)
        if "patience" in sch:
            check.integer("schedule.patience", sch["patience"], 0)
        if "milestones" in sch:
            ms = sch["milestones"]
            if not (isinstance(ms, list) and all(_is_int(m) and m >= 1 for m in ms)):
                check.fail("schedule.milestones", f"must be a list of epochs (integers >= 1), got {ms!r}")

    def _check_augment(self, check: _Checks) -> None:
        if not self.augment:
            return
        aug = check.section("augment", self.augment, SECTION_KEYS["augment"])
        for key in ("hflip", "photometric"):
            if not isinstance(aug.get(key, True), bool):
                check.fail(f"augment.{key}", f"must be true or false, got {aug[key]!r}")
        if "crop" in aug:
            check.integer("augment.crop", aug["crop"], 1)
        scale = aug.get("scale")
        if scale is not None and scale is not False:
            if not (isinstance(scale, (list, tuple)) and len(scale) == 2
                    and all(_is_number(v) and v > 0 for v in scale) and scale[0] <= scale[1]):  # fmt: skip
                check.fail("augment.scale", f"must be [low, high] with 0 < low <= high (or null), got {scale!r}")

    def _check_run(self, check: _Checks) -> None:
        if self.precision not in ("auto", "bf16", "fp32"):
            check.fail("precision", f"must be auto, bf16 or fp32, got {self.precision!r}")
        check.integer("epochs", self.epochs, 1)
        check.integer("batch_size", self.batch_size, 1)
        check.integer("workers", self.workers, 0)
        check.integer("seed", self.seed, 0)
        check.integer("max_steps_per_epoch", self.max_steps_per_epoch, 1, none_ok=True)
        check.integer("bn_recalibration_batches", self.bn_recalibration_batches, 0)
        if self.grad_clip is not None:  # null = no clipping
            self.grad_clip = check.number("grad_clip", self.grad_clip, 0, strict=True)

    def to_dict(self) -> dict:
        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        d.pop("source")
        return d


def builtin_recipe_names() -> list[str]:
    """The names of the built-in recipes (``training/recipes/*.yaml``)."""
    folder = resources.files("composite_tasking.training") / "recipes"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, where: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RecipeError(f"recipe {where} is not valid YAML: {e}") from None


def _source(spec: str | Path, beside: Path | None = None, builtin_only: bool = False) -> tuple[str, str]:
    """``(text, where)`` of a recipe: a file (first relative to ``beside``, the folder of
    the recipe naming it as its base), or a built-in recipe by name (no suffix);
    ``builtin_only``: the built-in one, whatever files are around."""
    p = Path(spec)
    files = [] if builtin_only else ([beside / p] if beside is not None and not p.is_absolute() else []) + [p]
    for cand in files:
        if cand.is_file():
            try:
                return cand.read_text(encoding="utf-8"), str(cand)
            except OSError as e:
                raise RecipeError(f"cannot read recipe {cand}: {e.strerror or e}") from None
    if not p.suffix or builtin_only:
        ref = resources.files("composite_tasking.training") / "recipes" / f"{spec}.yaml"
        if ref.is_file():
            return ref.read_text(encoding="utf-8"), f"built-in recipe {spec}"
        raise RecipeError(f"no recipe file {str(spec)!r} and no built-in recipe of that name; "
                          f"built-in: {builtin_recipe_names()}")  # fmt: skip
    raise RecipeError(f"cannot read recipe {p}: No such file or directory")


def recipe_data(spec: str | Path, beside: Path | None = None, _seen: tuple = (),
                builtin_only: bool = False) -> tuple[dict, str]:  # fmt: skip
    """A recipe's keys with its ``base:`` resolved, and where it came from.

    ``base: NAME-OR-FILE`` starts from another recipe (a built-in name, or a file relative
    to this one); the recipe's own keys replace the base's, each whole (a mapping such
    as ``optimizer`` is replaced, not merged), so a recipe reads as "the base, but ...".
    Bases may have bases; a cycle is an error naming it. ``builtin_only``: ``spec`` is a
    built-in recipe's name (not a file of that name)."""
    text, where = _source(spec, beside, builtin_only)
    data = _read_yaml(text, where)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError(f"a recipe is a mapping in {where}")
    base = data.pop("base", None)
    if base is None:
        return data, where
    if not isinstance(base, str) or not base.strip():
        raise RecipeError(f"base in {where}: names a recipe (a built-in name or a file), got {base!r}")
    if where in _seen:
        raise RecipeError(f"recipes base each other in a cycle: {' -> '.join((*_seen, where))}")
    folder = Path(where).parent if not where.startswith("built-in recipe") else None
    merged, _ = recipe_data(base, folder, (*_seen, where))
    return {**merged, **data}, where


def load_recipe(path: str | Path, overrides: dict | None = None, builtin_only: bool = False) -> Recipe:
    """Read a recipe file (or a built-in recipe by name, e.g. ``ctn-synthetic``), its
    ``base:`` resolved (:func:`recipe_data`)."""
    data, where = recipe_data(path, builtin_only=builtin_only)
    if overrides:
        data = {**data, **overrides}
    return Recipe.from_dict(data, source=where)


def builtin_recipe(name: str, overrides: dict | None = None) -> Recipe:
    """A built-in recipe by name (``training/recipes/NAME.yaml``)."""
    return load_recipe(name, overrides, builtin_only=True)
