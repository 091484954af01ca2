"""Train a CTN (or an MHN / STN baseline) from a recipe.

- device auto (CUDA, else CPU); bf16 autocast on GPUs and on CPUs with native bf16
  (``avx512_bf16`` / ``amx_bf16``), channels_last memory on both;
- progress with the loss of each task; validation metrics each epoch;
- a checkpoint after every epoch, written to a temporary folder and renamed into place,
  then pointed at by ``RUN_DIR/latest.json`` (replaced atomically); the previous epoch's
  folder is then removed, so a run keeps its newest checkpoint only. It holds the model
  (safetensors + JSON, :mod:`composite_tasking.model.checkpoint`) and the training state
  (optimiser tensors as safetensors, everything else as JSON: nothing is pickled);
- ``resume=True`` continues exactly: data, palettes and augmentation are functions of
  (seed, index, epoch) and the shuffling of (seed, epoch), so epochs after a resume see
  the same batches as an uninterrupted run;
- ``should_stop`` (a callable) is asked before every epoch and, in a single process,
  before every step; a stop in the middle of an epoch drops that epoch (nothing of it is
  written; the newest checkpoint is the last finished epoch's, and a resume redoes it);
- a NaN or infinite loss stops the run with :class:`TrainingDiverged` before anything is
  written, so the last good checkpoint stays intact;
- ``RUN_DIR/curves.png``: loss and validation curves; every JSON file is strict JSON
  (a NaN metric, e.g. a task with nothing to score, is written as null);
- ``out`` is a new or empty folder, or (``resume``) a run folder: a folder that holds
  something else (a label store, say) is refused, so nothing is ever written into it;
- several processes through ``torchrun`` (DistributedDataParallel; gloo on CPU, NCCL on
  GPU): each process reads its own shard of every epoch, rank 0 validates and writes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from composite_tasking.device import cpu_has_bf16, pick_autocast_dtype, pick_device
from composite_tasking.files import file_sha256
from composite_tasking.model import build_model, load_checkpoint, save_checkpoint
from composite_tasking.model.checkpoint import (
    CheckpointError,
    json_safe,
    state_dict_mismatch,
)
from composite_tasking.tasks import get_task

from .data import build_dataset, check_palettes, collate, ordered_loader
from .losses import LossResult, composite_loss, palette_loss
from .recipe import Recipe, RecipeError, parse_data_spec

__all__ = ["Trainer", "TrainingDiverged", "pick_device", "pick_autocast_dtype", "cpu_has_bf16",
           "build_dataset", "LATEST"]  # fmt: skip

LATEST = "latest.json"
LABEL_KEYS = ("semseg", "parts", "edges", "saliency", "normals")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def _trainer_leftovers(folder: Path) -> bool:
    """Only what an interrupted first save leaves: hidden temporary files and folders."""
    return all(p.name.startswith(".") and ".tmp" in p.name for p in folder.iterdir())


def _flat(d, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _param_groups(model: torch.nn.Module, lr_encoder: float, lr_decoder: float):
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    enc = [p for name, p in trained if name.startswith("encoder")]
    rest = [p for name, p in trained if not name.startswith("encoder")]
    return [{"params": enc, "lr": lr_encoder, "name": "encoder"},
            {"params": rest, "lr": lr_decoder, "name": "decoder"}]  # fmt: skip


@dataclass
class _Schedule:
    """The learning-rate factor: step decay at epochs or decay on a validation plateau.
    Plain numbers only, so its state is JSON."""

    kind: str
    factor: float = 0.3
    patience: int = 12
    milestones: list[int] = field(default_factory=list)
    scale: float = 1.0
    best: float = math.inf
    bad_epochs: int = 0

    def at_epoch(self, epoch: int) -> float:
        if self.kind == "step":
            return self.factor ** sum(epoch >= m for m in self.milestones)
        return self.scale

    def observe(self, value: float) -> None:
        if self.kind != "plateau" or not math.isfinite(value):
            return
        if value < self.best - 1e-8:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1
            if self.bad_epochs > self.patience:
                self.scale *= self.factor
                self.bad_epochs = 0

    def state(self) -> dict:
        return {"scale": self.scale, "best": self.best if math.isfinite(self.best) else None,
                "bad_epochs": self.bad_epochs}  # fmt: skip

    def load(self, s: dict) -> None:
        self.scale = s["scale"]
        self.best = math.inf if s["best"] is None else s["best"]
        self.bad_epochs = s["bad_epochs"]


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        pid, _, k = key.partition(".")
        state.setdefault(int(pid), {})[k] = v
    for pid, st in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(st)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _atomic_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


Progress = Callable[[dict], None]


class Trainer:
    """Runs a :class:`Recipe` into ``out``; ``fit()`` returns the history.

    ``train_set`` replaces the data set of the recipe's ``train`` spec (the napari
    Fine-tune widget passes the images it chose); a label store's stored palettes are
    checked against the rule either way (:func:`check_palettes`)."""

    def __init__(self, recipe: Recipe, out: str | Path, resume: bool = False,
                 device: str = "auto", progress: Progress | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 train_set: torch.utils.data.Dataset | None = None):  # fmt: skip
        self.recipe = recipe
        self.out = Path(out)
        self.progress = progress
        self.should_stop = should_stop
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1 and not torch.distributed.is_initialized():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if device == "auto" and torch.cuda.is_available():
                device = f"cuda:{local}"
            backend = "nccl" if device.startswith("cuda") else "gloo"
            torch.distributed.init_process_group(backend)
        self.device = pick_device(device)
        if self.device.type == "cuda":
            if self.device.index is None:  # "cuda" / "auto": set_device needs an index
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True  # fixed training shapes: pick the fastest kernels
        self.autocast = pick_autocast_dtype(recipe.precision, self.device)
        self._check_out(resume)

        torch.manual_seed(recipe.seed)
        self.provenance_init = None
        if recipe.init:
            self.model, info = load_checkpoint(recipe.init)
            self.provenance_init = {"init": str(recipe.init), "init_sha256": info.sha256}
        else:
            m = recipe.model
            self.model = build_model(m.get("preset", "ctn-resnet34"), pretrained=m.get("pretrained", False))
        if self.is_palette_net and recipe.rule == "S":  # the recipe saw a preset, not the checkpoint
            raise RecipeError(f"rule S (every task everywhere) trains a CTN, MHN or STN; {recipe.init} is "
                              "a palette network: give it a rule to learn (e.g. R2)")  # fmt: skip
        self.model.to(self.device).to(memory_format=torch.channels_last)
        self._task_names = tuple(getattr(self.model.config, "tasks", ()))  # decode_all's order
        opt = recipe.optimizer
        self.optimizer = torch.optim.Adam(
            _param_groups(self.model, float(opt.get("lr_encoder", 1e-5)), float(opt.get("lr_decoder", 1e-3))),
            betas=tuple(opt.get("betas", (0.9, 0.999))), weight_decay=float(opt.get("weight_decay", 1e-5)),
        )  # fmt: skip
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        sch = recipe.schedule
        self.schedule = _Schedule(sch.get("kind", "plateau"), float(sch.get("factor", 0.3)),
                                  int(sch.get("patience", 12)), list(sch.get("milestones", [])))  # fmt: skip
        # rule S (complete labels: every task everywhere) needs no palette from the data
        train_rule = "mosaic" if recipe.rule == "S" else recipe.rule
        if train_set is None:
            train_set = build_dataset(recipe.train, train_rule, recipe.augment, recipe.seed, "train")
        self.train_set = train_set
        check_palettes(self.train_set, recipe.rule)
        self.val_set = None
        if recipe.val is not None and self.rank == 0:
            rule = recipe.rule if self.is_palette_net else recipe.val_rule
            self.val_set = build_dataset(recipe.val, "mosaic" if rule == "S" else rule, None,
                                         recipe.seed + 1, "val")  # fmt: skip
            check_palettes(self.val_set, rule)
        self.epoch = 0
        self.history: list[dict] = []
        #: recipe values that differ from the run's when resuming ("key: old -> new")
        self.resume_changes: list[str] = []
        self.ddp = None
        if resume:
            self._load_state()
        elif self.rank == 0:  # every check passed: only now is anything written
            self.out.mkdir(parents=True, exist_ok=True)
        if self.world > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )

    def _check_out(self, resume: bool) -> None:
        """``out`` must be new, empty or a run (with ``resume``, a run); never a folder of
        something else, nor inside the label store trained on."""
        out = self.out
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"{out} is a file, not a run folder: choose a folder for the run")
        is_run = (out / LATEST).exists()
        if resume and not is_run:
            raise FileNotFoundError(f"nothing to resume in {out}: no {LATEST}")
        if not resume and is_run:
            raise FileExistsError(f"{out} holds a run already; pass --resume to continue it "
                                  "or choose another folder")  # fmt: skip
        if not is_run and out.is_dir() and not _trainer_leftovers(out):
            raise FileExistsError(f"{out} exists, is not empty and is not a run folder (no {LATEST}): "
                                  "choose a new or empty folder for the run")  # fmt: skip
        for key in ("train", "val"):
            spec = getattr(self.recipe, key)
            if spec is None:
                continue
            spec = parse_data_spec(spec)
            if spec.kind == "store" and out.resolve().is_relative_to(Path(spec.root).resolve()):
                raise FileExistsError(f"{out} is inside the label store {spec.root}: choose a run "
                                      "folder outside it")  # fmt: skip

    # ------------------------------------------------------------------ data
    def _loader(self, dataset, epoch: int, shuffle: bool):
        dataset.set_epoch(epoch)
        workers = int(self.recipe.workers)
        if not shuffle:  # validation: no augmentation, images of one size per batch
            return ordered_loader(dataset, int(self.recipe.batch_size), workers,
                                   pin_memory=self.device.type == "cuda")  # fmt: skip
        g = torch.Generator().manual_seed(self.recipe.seed * 1_000_003 + epoch)
        sampler: torch.utils.data.DistributedSampler | None = None
        if self.world > 1:
            sampler = torch.utils.data.DistributedSampler(dataset, self.world, self.rank,
                                                          shuffle=True, seed=self.recipe.seed)  # fmt: skip
            sampler.set_epoch(epoch)
        return torch.utils.data.DataLoader(
            dataset, batch_size=int(self.recipe.batch_size), shuffle=sampler is None,
            sampler=sampler, num_workers=workers, generator=g,
            drop_last=len(dataset) >= int(self.recipe.batch_size) * self.world,
            persistent_workers=False, pin_memory=self.device.type == "cuda",
            collate_fn=collate,
        )  # fmt: skip

    def _to_device(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, dict]:
        nb = self.device.type == "cuda"
        image = batch["image"].to(self.device, non_blocking=nb).contiguous(memory_format=torch.channels_last)
        palette = batch["palette"].to(self.device, non_blocking=nb)
        targets = {k: batch[k].to(self.device, non_blocking=nb) for k in LABEL_KEYS if k in batch}
        return image, palette, targets

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    # ------------------------------------------------------------------ loop
    def fit(self) -> list[dict]:
        r = self.recipe
        net = self.ddp or self.model
        while self.epoch < r.epochs:
            if self.should_stop is not None and self.should_stop():
                break
            epoch = self.epoch
            factor = self.schedule.at_epoch(epoch)
            for g, base in zip(self.optimizer.param_groups, self.base_lrs):
                g["lr"] = base * factor
            net.train()
            if r.freeze_batchnorm:
                for m in self._batchnorms():
                    m.eval()  # running statistics kept; weight and bias still learn
            loader = self._loader(self.train_set, epoch, shuffle=True)
            n_steps = len(loader) if r.max_steps_per_epoch is None else min(len(loader), int(r.max_steps_per_epoch))
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            t0 = time.perf_counter()
            images = 0
            stopped = False
            for step, batch in enumerate(loader):
                if step >= n_steps:
                    break
                if self.world == 1 and step and self.should_stop is not None and self.should_stop():
                    stopped = True  # mid-epoch: that epoch is dropped, nothing is written
                    break
                image, palette, targets = self._to_device(batch)
                losses = self._losses(net, image, palette, targets)
                total = losses["total"]
                if not torch.isfinite(total):
                    bad = {k: float(v.detach()) for k, v in losses.items()}
                    raise TrainingDiverged(
                        f"epoch {epoch + 1}, step {step + 1}: the loss is {float(total.detach())} "
                        f"(per task: {bad}); stopped before writing anything, the last good "
                        f"checkpoint in {self.out} is intact. Lower the learning rate or "
                        "check the data."
                    )
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                if r.grad_clip:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), float(r.grad_clip))
                self.optimizer.step()
                images += image.shape[0]
                for k, v in losses.items():
                    if k == "total" or losses.pixels.get(k, 1) > 0:
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                        counts[k] = counts.get(k, 0) + 1
                if self.progress is not None and self.rank == 0:
                    self.progress({"epoch": epoch + 1, "epochs": r.epochs, "step": step + 1,
                                   "steps": n_steps, "loss": {k: sums[k] / counts[k] for k in sums}})  # fmt: skip
            if stopped:
                break
            seconds = time.perf_counter() - t0
            self.recalibrate_batchnorm(epoch)
            # a finite loss can still give non-finite gradients and weights: never save
            # those as the newest checkpoint (every rank checks: DDP keeps them equal)
            bad_params = [n for n, t in self.model.state_dict().items()
                          if t.is_floating_point() and not torch.isfinite(t).all()]  # fmt: skip
            if bad_params:
                raise TrainingDiverged(
                    f"epoch {epoch + 1}: the weights became NaN or infinite ({', '.join(bad_params[:3])}"
                    f"{', ...' if len(bad_params) > 3 else ''}); stopped before writing anything, the "
                    f"last good checkpoint in {self.out} is intact. Lower the learning rate or check the data."
                )
            record: dict[str, Any] = {"epoch": epoch + 1, "train_loss": {k: sums[k] / counts[k] for k in sums},
                      "lr": [g["lr"] for g in self.optimizer.param_groups],
                      "images_per_s": images * self.world / max(seconds, 1e-9), "seconds": seconds}  # fmt: skip
            if self.rank == 0:
                if self.val_set is not None:
                    record["val"] = self.validate()
                    self.schedule.observe(record["val"]["loss"])
                else:
                    self.schedule.observe(record["train_loss"].get("total", math.inf))
                self.history.append(record)
                self.epoch = epoch + 1
                self._save_state()
                self._plot()
                if self.progress is not None:
                    self.progress({"epoch_done": record})
            else:
                self.history.append(record)
                self.epoch = epoch + 1
            if self.world > 1:
                # rank 0 alone observed the loss that drives the schedule: every rank must
                # use its learning rate, or the replicas' weights drift apart
                s = torch.tensor([self.schedule.scale, self.schedule.best, self.schedule.bad_epochs],
                                 dtype=torch.float64, device=self.device)  # fmt: skip
                torch.distributed.broadcast(s, src=0)
                self.schedule.scale, self.schedule.best, self.schedule.bad_epochs = float(s[0]), float(s[1]), int(s[2])
                torch.distributed.barrier()
        return self.history

    @torch.no_grad()
    def recalibrate_batchnorm(self, epoch: int) -> None:
        """Re-estimate BatchNorm running statistics for the weights as they are now.

        With the learning rates of the recipe the weights move faster than the running
        averages follow (momentum 0.1), and eval-mode outputs lag behind: on the synthetic
        world after one epoch, the eval-mode loss was 18x the train-mode loss on the same
        batch (edges and saliency off the most); a cumulative average over a few batches
        with the final weights brought it back to 1.03x. The batches come from a loader of
        their own, seeded by the epoch, so resuming stays exact.
        """
        n = int(self.recipe.bn_recalibration_batches)
        bns = self._batchnorms()
        if n <= 0 or not bns or self.recipe.freeze_batchnorm:
            return
        momenta = [m.momentum for m in bns]
        for m in bns:
            m.reset_running_stats()
            m.momentum = None  # cumulative average
        self.model.train()
        loader = self._loader(self.train_set, 10_000_000 + epoch, shuffle=True)
        for i, batch in enumerate(loader):
            if i >= n:
                break
            image, palette, _ = self._to_device(batch)
            with self._autocast():
                self.model(image) if self.is_palette_net else self.model(image, palette)
        for m, mom in zip(bns, momenta):
            m.momentum = mom

    def _batchnorms(self) -> list[torch.nn.modules.batchnorm._BatchNorm]:
        return [m for m in self.model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]

    @property
    def is_palette_net(self) -> bool:
        return self.model.config.kind == "palette"

    def _losses(self, net, image, palette, targets) -> LossResult:
        """The CTN's composite loss, or the palette network's cross-entropy against the
        rule's palette (the dataset's palette is the target, not an input, then)."""
        r = self.recipe
        if r.rule == "S":  # complete labels: every task's output and loss at every pixel
            with self._autocast():
                outputs = net(image, None)  # (N, T, 3, H, W), one forward (DDP-safe)
            result = LossResult()
            result.pixels = {}
            total = outputs.float().sum() * 0.0  # float16 sums overflow to inf, and inf * 0 is NaN
            for k, task in enumerate(self._task_names):
                if task not in targets:
                    continue
                everywhere = torch.full_like(palette, get_task(task).palette_value)
                one = composite_loss(outputs[:, k], everywhere, {task: targets[task]}, r.loss_weights,
                                     r.focal_gamma, r.loss)  # fmt: skip
                result[task] = one[task]
                result.pixels[task] = one.pixels[task]
                total = total + one["total"]
            result["total"] = total
            return result
        with self._autocast():
            output = net(image) if self.is_palette_net else net(image, palette)
        if self.is_palette_net:
            loss = palette_loss(output, palette, targets.get("semseg"))
            result = LossResult(palette=loss, total=loss)
            result.pixels = {"palette": int(palette.numel())}
            return result
        return composite_loss(output, palette, targets, r.loss_weights, r.focal_gamma, r.loss)

    @torch.inference_mode()
    def validate(self) -> dict:
        from .evaluate import evaluate_loader, evaluate_palette_loader

        self.model.eval()
        loader = self._loader(self.val_set, 0, shuffle=False)
        if self.is_palette_net:
            return evaluate_palette_loader(self.model, loader, self.device, autocast=self.autocast)
        return evaluate_loader(self.model, loader, self.device, rule=self.recipe.val_rule,
                               autocast=self.autocast, loss_weights=self.recipe.loss_weights,
                               loss=self.recipe.loss)  # fmt: skip

    # ------------------------------------------------------------------ state
    def _save_state(self) -> None:
        name = f"epoch-{self.epoch:04d}"
        final = self.out / name
        tmp = self.out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        last = self.history[-1]
        save_checkpoint(self.model, tmp / "model", provenance={
            "recipe": self.recipe.to_dict(), "recipe_source": self.recipe.source,
            "epoch": self.epoch, "val": last.get("val"), **(self.provenance_init or {})})  # fmt: skip
        tensors, meta = _optimizer_state(self.optimizer)
        save_file(tensors, str(tmp / "optimizer.safetensors"))
        _atomic_json(tmp / "state.json", {
            "epoch": self.epoch, "optimizer": meta, "schedule": self.schedule.state(),
            "optimizer_sha256": file_sha256(tmp / "optimizer.safetensors"),
            "history": self.history, "recipe": self.recipe.to_dict()})  # fmt: skip
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        previous = None
        if (self.out / LATEST).exists():
            previous = json.loads((self.out / LATEST).read_text()).get("state")
        _atomic_json(self.out / LATEST, {"state": name, "model": f"{name}/model", "epoch": self.epoch})
        _atomic_json(self.out / "history.json", self.history)
        if previous and previous != name:  # keep the newest state only (~60 MB each)
            shutil.rmtree(self.out / previous, ignore_errors=True)

    def _load_state(self) -> None:
        def read_json(path: Path):
            try:
                return json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise CheckpointError(f"{path}: not a readable JSON file ({e})") from None

        latest = read_json(self.out / LATEST)
        try:
            folder = self.out / latest["state"]
        except (KeyError, TypeError):
            raise CheckpointError(f"{self.out / LATEST}: names no state folder") from None
        state_file = folder / "state.json"
        state = read_json(state_file)
        keys = ("epoch", "optimizer", "schedule", "history", "recipe")
        missing = [k for k in keys if not isinstance(state, dict) or k not in state]
        if missing:
            raise CheckpointError(f"{state_file}: no {', '.join(repr(k) for k in missing)} (the file is "
                                  "incomplete or not a training state)")  # fmt: skip
        self._compare_recipes(state["recipe"], folder)
        model, _ = load_checkpoint(folder / "model")
        if model.config != self.model.config:
            raise CheckpointError(f"{folder / 'model'}: the run's model ({_describe(model.config)}) differs "
                                  f"from the recipe's ({_describe(self.model.config)}): resume with the "
                                  "run's recipe, or train into another folder")  # fmt: skip
        problem = state_dict_mismatch(self.model, model.state_dict())
        if problem:
            raise CheckpointError(f"{folder / 'model'} does not fit the recipe's model: {problem}")
        self.model.load_state_dict(model.state_dict())
        opt_file = folder / "optimizer.safetensors"
        try:
            digest = file_sha256(opt_file)
            tensors = load_file(str(opt_file))
        except Exception as e:
            raise CheckpointError(f"{opt_file}: unreadable ({e})") from None
        if state.get("optimizer_sha256", digest) != digest:
            raise CheckpointError(f"{opt_file}: sha256 {digest[:12]}... does not match state.json's "
                                  f"{state['optimizer_sha256'][:12]}...; the file was changed or is incomplete")  # fmt: skip
        # load_state_dict moves the moments to their parameters' device; Adam's step
        # counts stay on the CPU, where (not capturable) it reads them every step
        try:
            _load_optimizer_state(self.optimizer, tensors, state["optimizer"])
            self.schedule.load(state["schedule"])
            self.epoch = int(state["epoch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{state_file} or {opt_file.name} does not fit this run: "
                                  f"{str(e)[:300]}") from None  # fmt: skip
        self.history = state["history"]  # null where a metric was NaN: see _plot

    def _compare_recipes(self, saved: dict, folder: Path) -> None:
        """The run's recipe (state.json) against this one: another model is an error
        (its weights cannot be loaded); other changes are listed in
        :attr:`resume_changes` (e.g. more epochs)."""
        now = self.recipe.to_dict()
        if not isinstance(saved, dict):
            raise CheckpointError(f"{folder / 'state.json'}: 'recipe' is not a mapping")
        if not now.get("init") and not saved.get("init") and saved.get("model") != now["model"]:
            raise RecipeError(f"the recipe's model {now['model']} differs from the run's {saved.get('model')} "
                              f"(checkpoint {folder / 'model'}): resume with the run's recipe, or train "
                              "into another folder")  # fmt: skip
        old, new = _flat(saved), _flat(now)
        self.resume_changes = [f"{k}: {old.get(k)!r} -> {new.get(k)!r}"
                               for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]  # fmt: skip

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:  # plotting is a convenience
            return
        epochs = [h["epoch"] for h in self.history]
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        keys = sorted({k for h in self.history for k in h["train_loss"]})
        for k in keys:
            axes[0].plot(epochs, [_num(h["train_loss"].get(k)) for h in self.history], label=k)
        axes[0].set_yscale("log")
        axes[0].set_xlabel("epoch")
        axes[0].set_title("training loss")
        axes[0].legend(fontsize=8)
        vals = [(h.get("val") or {}).get("primary") or {} for h in self.history]
        for k in sorted({k for v in vals for k in v}):
            axes[1].plot(epochs, [_num(v.get(k)) for v in vals], label=k)
        axes[1].set_xlabel("epoch")
        axes[1].set_title("validation (normals: mean error in degrees)")
        if axes[1].lines:
            axes[1].legend(fontsize=8)
        fig.tight_layout()
        tmp = self.out / ".curves.png.tmp.png"
        fig.savefig(tmp, dpi=90)
        plt.close(fig)
        os.replace(tmp, self.out / "curves.png")


def _num(value) -> float:
    """A value of history.json for a plot: null (a NaN when it was written) -> NaN."""
    return np.nan if value is None else float(value)


def _describe(config) -> str:
    return f"{config.kind} {getattr(config, 'encoder', '')}".strip()
