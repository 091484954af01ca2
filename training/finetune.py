"""Fine-tune on what a person checked: one function for ``ctn finetune``, the napari
Fine-tune widget and scripts (no Qt, no napari).

:func:`finetune` trains the CTN on the images of a label store that hold labels a person
checked, and (optionally) the palette network on the palettes a person chose, then
decides whether the new CTN replaces the old one:

- **What is trained on** is what a person checked (:meth:`LabelStore.checked_masks`):
  the corrected pixels of a ``corrected`` task, every labelled pixel of a ``reviewed``
  or ``ground-truth`` task, nothing of a ``pseudo`` task (unless ``select="all"``:
  self-training on every pseudo-label). Each image trains under its stored palette: a
  palette a person edited is the person's, whatever rule first filled it; ``rule`` only
  makes palettes for images stored without one (and, given, refuses stored palettes a
  rule made that contradict it: :func:`composite_tasking.datasets.check_stored_palettes`).
- **BatchNorm keeps its statistics** (the ``finetune`` recipe's ``freeze_batchnorm``): a
  few images re-estimating them wrecked the model (3 images: edges odsF 88.4 -> 76.8).
- **Never worse**: with :data:`HOLDOUT_MIN_IMAGES` or more checked images, a fixed
  share of them (:func:`split_holdout`, chosen by a hash of the id, so the same images
  are held out run after run) is held out of training, and the effort on them (the
  share of checked pixels whose label is wrong, :mod:`composite_tasking.effort`) is
  measured before and after. The new model is *accepted* when the mean over tasks did
  not rise; else it is *rolled back*: the run folder keeps it for inspection, its
  ``decision.json`` says why, and :func:`composite_tasking.inference.resolve_model`
  refuses the run folder, so the previous model stays in use. With fewer images nothing
  can be held out, and the result says so.
- A store whose only edits are palettes (no checked task labels) fine-tunes the palette
  network alone (when one is given); the palette network is scored the same way on its
  held-out palettes (palette mIoU, higher is better).

Progress: ``progress`` gets the trainer's dicts (``{"epoch", "epochs", "step", "steps",
"loss"}`` per step, ``{"epoch_done": record}`` per epoch), each with ``"network"``
(``"ctn"`` or ``"palette"``), plus ``{"network", "stage": "start", "images", "out"}`` and
``{"network", "stage": "score", "which": "before" | "after"}``; ``should_stop`` is asked
before every step, and a True raises :class:`FinetuneCancelled` (finished epochs stay in
the run folder; nothing is put in use).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from composite_tasking.store.location import Remote

__all__ = ["finetune", "FinetuneResult", "FinetuneCancelled", "checked_ids", "palette_ids",
           "split_holdout", "heldout_effort", "HOLDOUT_MIN_IMAGES", "HOLDOUT_FRACTION",
           "PALETTE_SUBDIR", "DECISION", "NETWORK_NAMES", "palette_dataset"]  # fmt: skip

#: fewest checked images from which some are held out to decide on the new model
HOLDOUT_MIN_IMAGES = 5
#: share of the checked images held out (at least one)
HOLDOUT_FRACTION = 0.2
#: the palette network's run folder inside the fine-tune run folder
PALETTE_SUBDIR = "palette"
#: the file in a run folder that records the decision (accepted or rolled back, and why)
DECISION = "decision.json"
#: the ``"network"`` of progress dicts -> words for a person
NETWORK_NAMES = {"ctn": "CTN", "palette": "palette network"}
#: the largest training crop: images up to it train whole (padded to the largest)
MAX_CROP = 256

Progress = Callable[[dict], None] | None
ShouldStop = Callable[[], bool] | None


class FinetuneCancelled(Exception):
    """The run was stopped (``should_stop``). ``ctn``: a CTN checkpoint fine-tuned before
    the stop (during the palette stage), not put in use; else None."""

    def __init__(self, message: str = "fine-tuning cancelled", ctn: Path | None = None):
        super().__init__(message)
        self.ctn = ctn


@dataclass
class NetworkResult:
    """One network's fine-tune: the new checkpoint and the decision on it."""

    network: str
    checkpoint: Path
    accepted: bool
    #: one line for a person: what was measured and what was decided
    decision: str
    train_ids: list[str]
    holdout_ids: list[str]
    #: held-out scores before / after (None: nothing held out); per task and "mean"
    before: dict | None = None
    after: dict | None = None
    seconds: float = 0.0


@dataclass
class FinetuneResult:
    """What :func:`finetune` made. ``ctn`` / ``palette``: the checkpoints to use now: the
    new one when accepted, else the one given (None: that network was not trained)."""

    ctn: Path | None
    palette: Path | None = None
    #: why the palette network was not fine-tuned, when it was asked for and was not
    palette_note: str | None = None
    runs: dict[str, NetworkResult] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        """Every network trained was accepted."""
        return all(r.accepted for r in self.runs.values())

    def summary(self) -> str:
        """One line per network trained (and the palette note), for a status line."""
        lines = [r.decision for r in self.runs.values()]
        if self.palette_note:
            lines.append(self.palette_note)
        return "\n".join(lines)


# ------------------------------------------------------------------ choosing images


def checked_ids(store: str | Path | Remote, select: str = "corrected") -> list[str]:
    """Images of a store holding labels a person checked (``select="all"``: every image);
    empty when there is none (:func:`composite_tasking.datasets.training_ids`)."""
    from composite_tasking.datasets import training_ids

    return training_ids(store, select, required=False)


def palette_ids(store: str | Path | Remote) -> list[str]:
    """Images whose stored palette a person chose: the image holds a palette and was
    saved from napari (its ``"napari"`` attribute) or has a task a person checked.
    Palettes ``ctn label`` wrote and nobody looked at are a rule's or the network's own
    output: they would teach the palette network itself."""
    from composite_tasking.store import PERSON_PROVENANCES, LabelStore

    records = LabelStore(store, mode="r").image_records()
    out = []
    for i in sorted(records):
        attrs = records[i]
        if "palette" not in attrs.get("labels", []):
            continue
        prov = (attrs.get("provenance") or {}).values()
        if "napari" in attrs or any(p in PERSON_PROVENANCES and p != "ground-truth" for p in prov):
            out.append(i)
    return out


def split_holdout(ids: list[str], fraction: float = HOLDOUT_FRACTION,
                  minimum: int = HOLDOUT_MIN_IMAGES) -> tuple[list[str], list[str]]:  # fmt: skip
    """(train, held out): below ``minimum`` images nothing is held out; else
    ``max(1, round(fraction * n))`` images, those with the smallest sha1 of their id (an
    image stays held out as more are corrected, so a later run's decision is measured
    on images no run trained on)."""
    ids = list(ids)
    if len(ids) < minimum or fraction <= 0:
        return ids, []
    k = max(1, int(round(fraction * len(ids))))
    ranked = sorted(ids, key=lambda i: hashlib.sha1(i.encode("utf-8")).hexdigest())
    held = set(ranked[:k])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


# ------------------------------------------------------------------------ scoring


def _scoring_model(checkpoint: str | Path, device: str):
    """(model on its device, device) for scoring held-out images."""
    import torch

    from composite_tasking.device import pick_device
    from composite_tasking.model import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    dev = pick_device(device)
    return model.to(dev).to(memory_format=torch.channels_last), dev


def heldout_effort(checkpoint: str | Path, store: str | Path | Remote, ids: list[str], *,
                   device: str = "auto", batch_size: int = 4) -> dict:  # fmt: skip
    """The CTN's effort on the checked pixels of ``ids``: per task ``{"share": % of the
    checked pixels whose label must change, "pixels"}`` and ``"mean"`` (the mean share
    over tasks). Each image is scored under its stored palette."""
    from composite_tasking.datasets import StoreDataset

    from .data import ordered_loader
    from .evaluate import evaluate_loader

    model, dev = _scoring_model(checkpoint, device)
    dataset = StoreDataset(store, rule=None, ids=ids, checked_only=True)
    result = evaluate_loader(model, ordered_loader(dataset, batch_size), dev, rule="stored palettes")
    tasks = {t: {"share": float(v["share"]), "pixels": int(v["pixels"])}
             for t, v in result["effort"].items() if t != "mean" and v.get("pixels")}  # fmt: skip
    shares = [v["share"] for v in tasks.values()]
    return {**tasks, "mean": float(np.mean(shares)) if shares else math.nan}


def heldout_palette_miou(checkpoint: str | Path, store: str | Path, ids: list[str], *,
                         device: str = "auto") -> dict:  # fmt: skip
    """The palette network's palette mIoU (%) on the stored palettes of ``ids``."""
    from .data import ordered_loader
    from .evaluate import evaluate_palette_loader

    model, dev = _scoring_model(checkpoint, device)
    dataset = palette_dataset(store, ids, None)
    res = evaluate_palette_loader(model, ordered_loader(dataset, 4), dev)
    return {"mean": float(res["primary"]["palette"])}


def palette_dataset(store, ids, augment, seed: int = 0):
    """The stored palettes of ``ids`` as the palette network's targets, every image pixel
    counting: the palette loss ignores "no task" where ``semseg`` is ignore (augmentation
    padding), and an image saved from napari has ``semseg`` only where its palette asks
    for it, which would hide every "no task" pixel the person left; the palette network
    needs no semantic labels, so ``semseg`` becomes 0 on the whole image."""
    from composite_tasking.datasets import StoreDataset

    class PaletteTargets(StoreDataset):
        def sample(self, index: int) -> dict:
            s = super().sample(index)
            s["semseg"] = np.zeros(np.asarray(s["image"]).shape[:2], np.uint8)
            return s

    return PaletteTargets(store, rule=None, augment=augment, seed=seed, ids=ids)


# ----------------------------------------------------------------------- training


def _crop(records: dict, ids) -> int:
    """The training crop: the largest side among the images (``records``: the store's
    image attributes), up to :data:`MAX_CROP`, in multiples of 32 (images of 128 px
    train at 128, not padded to 256)."""
    side = max(max(int(v) for v in records[i]["shape"]) for i in ids)
    return min(MAX_CROP, 32 * math.ceil(side / 32))


def _check_palettes_or_rule(store, records: dict, ids, rule) -> None:
    """Without a rule every image needs a stored palette: name those that have none."""
    if rule is not None:
        return
    bare = [i for i in ids if "palette" not in records[i].get("labels", [])]
    if bare:
        raise ValueError(f"label store {store}: {len(bare)} image(s) to train on (e.g. {bare[0]!r}) hold no "
                         "palette; give a rule to make theirs (--rule R2, or the widget's Rule)")  # fmt: skip


def _trainer(network: str, store, init: Path, out: Path, ids: list[str], *, rule, settings: dict,
             progress: Progress, should_stop: ShouldStop, select: str):  # fmt: skip
    """The :class:`~.trainer.Trainer` of one network's fine-tune. Making it checks
    everything (the run folder, the rule against the stored palettes) before anything
    is scored or written."""
    from composite_tasking.datasets import StoreDataset

    from .data import build_augment
    from .recipe import builtin_recipe, load_recipe, parse_data_spec
    from .trainer import Trainer

    name = NETWORK_NAMES[network]
    train = parse_data_spec({"kind": "store", "root": str(store), "select": select}).to_dict()
    overrides = {"init": str(init), "train": train, "rule": rule, "workers": 0}
    for key in ("epochs", "max_steps_per_epoch"):
        if settings.get(key) is not None:
            overrides[key] = int(settings[key])
    if settings.get("batch_size") is not None:
        overrides["batch_size"] = max(1, min(int(settings["batch_size"]), len(ids)))
    if settings.get("lr") is not None:
        overrides["optimizer"] = {"lr_decoder": float(settings["lr"]), "lr_encoder": float(settings["lr"]) / 10,
                                  "weight_decay": 1.0e-5}  # fmt: skip
    config = settings.get("config")
    recipe = load_recipe(config, overrides) if config else builtin_recipe("finetune", overrides)

    def report(info: dict) -> None:
        if should_stop is not None and should_stop():
            raise FinetuneCancelled(f"fine-tuning of the {name} cancelled")
        if progress is not None:
            progress({**info, "network": network})

    crop = (recipe.augment or {}).get("crop") or _crop(settings["records"], ids)
    augment = build_augment(recipe.augment, crop)
    if network == "ctn":
        train_set = StoreDataset(store, rule=rule, augment=augment, seed=recipe.seed, ids=ids,
                                 checked_only=select != "all")  # fmt: skip
    else:
        train_set = palette_dataset(store, ids, augment, recipe.seed)
    return Trainer(recipe, out, device=settings.get("device", "auto"), progress=report,
                   should_stop=should_stop, train_set=train_set)  # fmt: skip


def _fit(network: str, trainer, out: Path) -> Path:
    from composite_tasking.inference import resolve_model

    from .trainer import LATEST

    name = NETWORK_NAMES[network]
    trainer.fit()
    if trainer.epoch < trainer.recipe.epochs:  # the Trainer's own should_stop ended it early
        done = f"; {trainer.epoch} finished epoch(s) stay in {out}" if trainer.epoch else ""
        raise FinetuneCancelled(f"fine-tuning of the {name} cancelled{done}")
    if not (out / LATEST).is_file():
        raise FinetuneCancelled("fine-tuning stopped before the first epoch ended")
    return resolve_model(out)


def _fmt(scores: dict | None) -> str:
    return "?" if scores is None else f"{scores['mean']:.1f}%"


def _decide(network: str, before: dict | None, after: dict | None, n_train: int, n_held: int) -> tuple[bool, str]:
    """(accepted, one line). CTN: mean effort share must not rise; palette network:
    palette mIoU must not fall."""
    name = NETWORK_NAMES[network]
    if before is None or after is None or math.isnan(before["mean"]) or math.isnan(after["mean"]):
        if before is not None:  # --all-images: held-out images with nothing a person checked
            why = f"its {n_held} held-out image(s) hold no checked pixel to score"
        elif n_train >= HOLDOUT_MIN_IMAGES:
            why = "none held out (holdout 0)"
        else:
            why = f"too few to hold any out ({HOLDOUT_MIN_IMAGES} needed)"
        return True, f"{name}: fine-tuned on {n_train} image(s); {why}, so the new model is not checked"
    if network == "ctn":
        what = f"held-out effort ({n_held} image(s), % of checked pixels to correct)"
        ok = not after["mean"] > before["mean"] + 1e-9
    else:
        what = f"held-out palette mIoU ({n_held} image(s))"
        ok = not after["mean"] < before["mean"] - 1e-9
    verdict = "accepted: the new model is in use" if ok else "rolled back: the previous model stays in use"
    return ok, f"{name}: {what} {_fmt(before)} -> {_fmt(after)}; {verdict}"


def _run_network(network: str, store, init: Path, out: Path, ids: list[str], *, rule, select,
                 holdout: float, settings: dict, progress: Progress,
                 should_stop: ShouldStop) -> NetworkResult:  # fmt: skip
    train_ids, held = split_holdout(ids, holdout)
    score = heldout_effort if network == "ctn" else heldout_palette_miou
    device = settings.get("device", "auto")

    def scored(which: str, checkpoint: Path) -> dict | None:
        if not held:
            return None
        if progress is not None:
            progress({"network": network, "stage": "score", "which": which, "images": len(held)})
        return score(checkpoint, store, held, device=device)

    if should_stop is not None and should_stop():
        raise FinetuneCancelled(f"fine-tuning of the {NETWORK_NAMES[network]} cancelled")
    t0 = time.perf_counter()
    created = not out.exists()
    try:
        trainer = _trainer(network, store, init, out, train_ids, rule=rule, settings=settings, progress=progress,
                           should_stop=should_stop, select=select)  # fmt: skip
        before = scored("before", init)
        if progress is not None:
            progress({"network": network, "stage": "start", "images": len(train_ids), "out": str(out)})
        new = _fit(network, trainer, out)
    except BaseException:
        if created:  # the run folder this run made, still empty: not left behind
            try:
                out.rmdir()
            except OSError:  # not empty (a finished epoch), or gone: as it is
                pass
        raise
    after = scored("after", new)
    ok, line = _decide(network, before, after, len(train_ids), len(held))
    result = NetworkResult(network, new, ok, line, train_ids, held, before, after,
                           time.perf_counter() - t0)  # fmt: skip
    _write_decision(out, result, init)
    return result


def _write_decision(out: Path, r: NetworkResult, init: Path) -> None:
    from composite_tasking.model.checkpoint import json_safe

    data = {**asdict(r), "checkpoint": str(r.checkpoint), "previous": str(init)}
    tmp = out / f".{DECISION}.tmp"
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / DECISION)


def finetune(store: str | Path | Remote, model: str | Path, out: str | Path, *,
             palette_model: str | Path | None = None, rule: str | None = None,
             select: str = "corrected", holdout: float = HOLDOUT_FRACTION,
             epochs: int | None = None, lr: float | None = None, batch_size: int | None = None,
             max_steps_per_epoch: int | None = None, config: str | Path | None = None,
             device: str = "auto", progress: Progress = None,
             should_stop: ShouldStop = None) -> FinetuneResult:  # fmt: skip
    """Fine-tune ``model`` (and ``palette_model``) on what a person checked in ``store``
    into the run folder ``out`` (the palette network into ``out/palette``); see the module
    docstring. ``epochs``, ``lr`` (the decoder's; the encoder's is a tenth), ``batch_size``
    and ``max_steps_per_epoch`` override the built-in ``finetune`` recipe (or ``config``).
    ``holdout``: the share of checked images held out to decide (0: never checked).

    Raises ``ValueError`` (message names the store and what to do) when there is nothing
    to train on, :class:`composite_tasking.datasets.DatasetError` when an image stored
    by reference has a file that is missing or changed since it was labelled (every
    image trained on or held out is checked first: nothing is skipped),
    :class:`FinetuneCancelled` on a stop, and the trainer's and checkpoint loader's
    errors (a refused rule, an ``out`` that holds something else) before anything is
    written. A run folder this call made is removed when it fails before the first
    epoch is saved."""
    from composite_tasking.inference import resolve_model
    from composite_tasking.model import CheckpointError, read_checkpoint_info

    from composite_tasking.store.location import locate

    store, out = locate(store), Path(out)  # a store: a Path, or an object store's URL
    if not store.exists():
        raise FileNotFoundError(f"label store {store} not found")
    settings: dict[str, Any] = {"epochs": epochs, "lr": lr, "batch_size": batch_size, "config": config,
                "max_steps_per_epoch": max_steps_per_epoch, "device": device}  # fmt: skip
    init = resolve_model(model)
    pal_init, pal_ids, note = None, [], None
    if palette_model is not None:
        s = str(palette_model).strip() or "default"
        pal_init = resolve_model("palette" if s in ("default", "palette") else s)
        kind = read_checkpoint_info(pal_init).config.kind
        if kind != "palette":
            raise CheckpointError(f"{s!r} is a {kind!r} checkpoint, not a palette network (kind 'palette')")
        pal_ids = palette_ids(store)
        if not pal_ids:
            note = (f"label store {store} holds no palette a person chose (saved from napari, or of an "
                    "image with checked labels): the palette network was not fine-tuned")  # fmt: skip
    ids = checked_ids(store, select)
    if not ids and not pal_ids:
        from composite_tasking.datasets import training_ids

        training_ids(store, select, required=True)  # raises, naming the store and what to do
    from composite_tasking.store import LabelStore

    settings["records"] = LabelStore(store, mode="r").image_records()  # one pass, for the checks and the crop
    if ids:
        from composite_tasking.datasets import check_stored_palettes

        _check_palettes_or_rule(store, settings["records"], ids, rule)
        check_stored_palettes(store, rule, ids)  # all of them, held-out ones too
    from composite_tasking.datasets import check_sources

    check_sources(store, sorted(set(ids) | set(pal_ids)))  # by reference: each file still the one labelled
    result = FinetuneResult(ctn=init if ids else None, palette=pal_init, palette_note=note)
    if ids:
        run = _run_network("ctn", store, init, out, ids, rule=rule, select=select, holdout=holdout,
                           settings=settings, progress=progress, should_stop=should_stop)  # fmt: skip
        result.runs["ctn"] = run
        result.ctn = run.checkpoint if run.accepted else init
    elif pal_ids:
        result.palette_note = (f"label store {store} holds no task labels a person checked, only "
                               "palettes: the palette network alone was fine-tuned")  # fmt: skip
    if pal_init is not None and pal_ids:
        pal_out = out / PALETTE_SUBDIR if ids else out
        try:
            run = _run_network("palette", store, pal_init, pal_out, pal_ids, rule=None, select="corrected",
                               holdout=holdout, settings=settings, progress=progress,
                               should_stop=should_stop)  # fmt: skip
        except FinetuneCancelled as e:
            ctn = result.runs["ctn"].checkpoint if "ctn" in result.runs else None
            if ctn is None:
                raise
            raise FinetuneCancelled(f"{e} (the fine-tuned CTN is saved: {ctn})", ctn=ctn) from e
        result.runs["palette"] = run
        result.palette = run.checkpoint if run.accepted else pal_init
    return result
