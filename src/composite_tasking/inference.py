"""The Predictor: a checkpoint turned into per-task pseudo-labels for images and palettes.

- loads a checkpoint (``"default"`` = the bundled model) without unpickling anything;
- device ``auto`` (CUDA if present), ``torch.inference_mode``, channels_last, float32
  by default and bf16 (or fp16) autocast when asked (``precision``);
- batches images of equal size (:meth:`Predictor.predict_batch`);
- tiles images larger than ``tile`` pixels on a side into overlapping tiles and blends
  the seams with linear ramps over the overlap;
- caches encoder features per image key, so a new palette for the same image re-runs
  only the decoder (:meth:`Predictor.encode`);
- with a CTN, decodes only the parts of the image the palette asks for (region-limited
  decoding, :mod:`.model.region`), and after a palette edit only what the edit can reach
  (:meth:`Predictor.repredict`);
- decodes the 3-channel output into each task's label and confidence only where the
  palette asks for that task (elsewhere: 255 / NaN / zero vectors);
- with ``scale`` (:mod:`.scale`), predicts at a working resolution (``auto``: the size
  the model was trained at) and brings the labels back to the image's own pixels.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from pathlib import Path
from typing import Hashable, cast

import numpy as np
import torch

from .device import pick_device
from .model import CompositeTaskingNet, Encoded, PaletteModel, load_checkpoint
from .model.checkpoint import CheckpointInfo
from .model.resolve import resolve_model
from .model.base import pad_to_stride
from .model.region import Window, change_box, palette_reach, reach_box
from .palette import Rule, load_rule, validate_palette
from .prediction import Prediction, TaskOutput, decode_labels, empty_task_output
from .scale import downsample_palette, parse_scale, trained_size, upsample_composite, working_shape
from .tasks import TASKS, get_task
from .tiling import blend_ramp, tile_starts

__all__ = ["Predictor", "PendingBatch", "Prediction", "TaskOutput", "decode_labels", "resolve_model", "PALETTE_SOURCES"]

PALETTE_SOURCES = ("semantics", "net")


def resize_images(x: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Images (N, 3, H, W) float at ``shape``: the mean of the pixels each new pixel
    covers when shrinking (exact for integer factors, as a camera of fewer pixels would
    see it), bilinear when enlarging."""
    h, w = x.shape[-2:]
    if shape[0] <= h and shape[1] <= w:
        return torch.nn.functional.interpolate(x, size=tuple(shape), mode="area")
    return torch.nn.functional.interpolate(x, size=tuple(shape), mode="bilinear", align_corners=False)


class Predictor:
    """Pseudo-labels from a CTN checkpoint; see the module docstring."""

    def __init__(self, model: str | Path | torch.nn.Module = "default", device: str = "auto",
                 precision: str = "auto", tile: int = 1024, overlap: int = 128,
                 cache_size: int = 4, palette_model: str | Path | torch.nn.Module | None = None,
                 scale: str = "none"):  # fmt: skip
        self.device = pick_device(device)
        #: the working resolution (:mod:`.scale`): ``none`` predicts at every pixel
        self.scale = parse_scale(scale)
        self.info: CheckpointInfo | None = None
        if isinstance(model, torch.nn.Module):  # a CTN, MHN or STN (a palette network: refused below)
            self.model: PaletteModel = cast(PaletteModel, model)
        else:
            self.model, self.info = load_checkpoint(resolve_model(model))
        if getattr(getattr(self.model, "config", None), "kind", None) == "palette":
            from .model.checkpoint import CheckpointError

            where = str(self.info.path) if self.info else type(self.model).__name__
            raise CheckpointError(f"{where} is a palette network, not a CTN: give it as the "
                                  "palette network (palette_model), and a CTN checkpoint "
                                  "as the model")  # fmt: skip
        self.model.eval().to(self.device).to(memory_format=torch.channels_last)
        if precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision is auto, fp32, bf16 or fp16, not {precision!r}")
        self.autocast = None
        # auto = float32 everywhere: on CPUs for labels that do not depend on the CPU; on
        # an H200 bf16 autocast did not pay (0.98x the float32 time at 4 x 512 x 512,
        # 1.28x at 1 x 256 x 256: the decoder is bound by launches and elementwise work,
        # and float32 convolutions already run on TF32 tensor cores; docs/benchmarks.md)
        if precision == "bf16":
            if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
                self.autocast = torch.float16
            else:
                self.autocast = torch.bfloat16
        elif precision == "fp16":
            self.autocast = torch.float16
        if tile < 64 or overlap < 0 or overlap >= tile // 2:
            raise ValueError(f"need tile >= 64 and 0 <= overlap < tile / 2, got tile={tile}, overlap={overlap}")
        self.tile, self.overlap = int(tile), int(overlap)
        self._cache: OrderedDict[Hashable, list] = OrderedDict()
        self.cache_size = int(cache_size)
        self.tasks = tuple(self.model.config.tasks)
        #: (size, largest augmentation scale) the model was trained at, for ``scale="auto"``
        self.trained = trained_size(getattr(self.model, "provenance", None))  # load_checkpoint sets it
        #: decode only the pixels a palette asks for (CTNs; exact there, see model.region).
        #: Not on CUDA: there the decoder is bound by kernel launches, not arithmetic, and
        #: decoding windows level by level took 1.5x the whole image's time at 5-50%
        #: coverage on an H200 (docs/benchmarks.md, "region"); on CPUs it pays.
        self.region_decoding = isinstance(self.model, CompositeTaskingNet) and self.device.type != "cuda"
        self._palette_spec = palette_model
        self._palette_net: torch.nn.Module | None = None
        self.palette_info: CheckpointInfo | None = None

    # ------------------------------------------------------------------ identity
    @property
    def model_id(self) -> str:
        """The checkpoint folder as an absolute path (what a store records: a path relative
        to wherever ``ctn`` ran would mean nothing later), or the model's class name."""
        return str(Path(self.info.path).resolve()) if self.info else type(self.model).__name__

    @property
    def model_sha256(self) -> str:
        return self.info.sha256 if self.info else ""

    @property
    def precision(self) -> str:
        """What the model computes in: ``fp32``, or ``bf16`` / ``fp16`` autocast."""
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    # ------------------------------------------------------------------ helpers
    def _ctx(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast)

    def _to_device(self, arr: np.ndarray) -> torch.Tensor:
        """A host array on the device; on CUDA through pinned memory without waiting (a
        copy from pageable memory would wait for everything queued on the stream)."""
        t = torch.from_numpy(arr)
        if self.device.type == "cuda":
            return t.pin_memory().to(self.device, non_blocking=True)
        return t.to(self.device)

    def _image_tensor(self, images: list[np.ndarray]) -> torch.Tensor:
        arr = np.stack([np.asarray(im) for im in images])
        if arr.ndim != 4 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (H, W, 3) of one size, got {arr.dtype} {arr.shape[1:]}")
        t = self._to_device(arr).permute(0, 3, 1, 2).float().div_(255.0)
        return t.contiguous(memory_format=torch.channels_last)

    def working_shape(self, shape: tuple[int, int]) -> tuple[int, int]:
        """The (h, w) an image of ``shape`` is predicted at (:func:`.scale.working_shape`)."""
        return working_shape(shape[:2], self.scale, self.trained)

    @torch.inference_mode()
    def resize(self, image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """``image`` (H, W, 3) uint8 at ``shape``, on the device: shrunk by averaging the
        full-size pixels each working pixel covers (``area``), enlarged bilinearly."""
        if tuple(shape) == np.asarray(image).shape[:2]:
            return np.asarray(image)
        x = self._image_tensor([np.asarray(image)])
        y = resize_images(x, (shape[0], shape[1]))
        return y[0].mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def _boxes(self, h: int, w: int) -> list[tuple[int, int, int, int]]:
        ys = tile_starts(h, self.tile, self.overlap)
        xs = tile_starts(w, self.tile, self.overlap)
        return [(y, min(y + self.tile, h), x, min(x + self.tile, w)) for y in ys for x in xs]

    # ------------------------------------------------------------------ encoder
    @torch.inference_mode()
    def encode(self, image: np.ndarray | None, key: Hashable | None = None) -> list[tuple[tuple, Encoded]]:
        """Encoder features of one image (None: the cached) as (tile box, features) pairs, cached by ``key``."""
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        if image is None:
            raise KeyError(f"no cached features for {key!r}")
        h, w = np.asarray(image).shape[:2]
        feats = []
        with self._ctx():
            for box in self._boxes(h, w):
                y0, y1, x0, x1 = box
                feats.append((box, self.model.encode(self._image_tensor([np.asarray(image)[y0:y1, x0:x1]]))))
        if key is not None:
            self._cache[key] = feats
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return feats

    def forget(self, key: Hashable | None = None) -> None:
        """Drop cached features (of one image, or all)."""
        if key is None:
            self._cache.clear()
        else:
            self._cache.pop(key, None)
            for k in [
                k for k in self._cache if isinstance(k, tuple) and len(k) == 3 and k[0] == "scaled" and k[1] == key
            ]:
                del self._cache[k]

    # ------------------------------------------------------------------ decoder
    def _region_arg(self, region: np.ndarray | str | None, palette: np.ndarray) -> np.ndarray | None:
        """What the model's decode takes as ``region`` (None: the whole image)."""
        if region is None or not self.region_decoding:
            return None
        if isinstance(region, str):
            if region != "palette":
                raise ValueError(f"region is None, 'palette' or a boolean mask, not {region!r}")
            region = palette > 0
        region = np.asarray(region)
        if region.dtype != bool or region.shape != palette.shape:
            raise ValueError(f"a region is a boolean mask of shape {palette.shape}, got "
                             f"{region.dtype} {region.shape}")  # fmt: skip
        return region

    def _decode_one(self, enc: Encoded, pal: torch.Tensor, region: np.ndarray | None) -> torch.Tensor:
        if region is None:
            return self.model.decode(enc, pal)
        r = torch.from_numpy(np.ascontiguousarray(region)).to(self.device)
        return cast(CompositeTaskingNet, self.model).decode(enc, pal, region=r)  # region_decoding: a CTN

    @torch.inference_mode()
    def decode(self, feats: list[tuple[tuple, Encoded]], palette: np.ndarray,
               region: np.ndarray | str | None = "palette") -> np.ndarray:  # fmt: skip
        """The composite output (3, H, W) float32 for one image's features and palette.

        ``region``: where the output is needed; ``"palette"`` (default) is where the
        palette asks for a task, a boolean (H, W) mask is that, None is everywhere. A CTN
        decodes only the parts of the image the region touches (exact there; 0 where
        nothing was computed; :mod:`.model.region`); other models decode everything.
        """
        palette = validate_palette(palette)
        mask = self._region_arg(region, palette)
        h, w = palette.shape
        if len(feats) == 1:
            with self._ctx():
                out = self._decode_one(feats[0][1], torch.from_numpy(palette).to(self.device)[None].long(), mask)
            return out[0].float().cpu().numpy()
        acc = np.zeros((3, h, w), np.float32)
        wsum = np.zeros((h, w), np.float32)
        for (y0, y1, x0, x1), enc in feats:
            sub = None if mask is None else mask[y0:y1, x0:x1]
            if sub is not None and not sub.any():
                continue  # this tile holds none of the region
            pal = torch.from_numpy(np.ascontiguousarray(palette[y0:y1, x0:x1])).to(self.device)[None].long()
            with self._ctx():
                o = self._decode_one(enc, pal, sub)[0].float().cpu().numpy()
            wy = blend_ramp(y1 - y0, self.overlap, y0 == 0, y1 == h)
            wx = blend_ramp(x1 - x0, self.overlap, x0 == 0, x1 == w)
            wt = wy[:, None] * wx[None, :]
            acc[:, y0:y1, x0:x1] += o * wt
            wsum[y0:y1, x0:x1] += wt
        return acc / np.maximum(wsum, 1e-12)

    @torch.inference_mode()
    def repredict(self, image: np.ndarray, palette: np.ndarray, previous: Prediction,
                  key: Hashable | None = None) -> Prediction:  # fmt: skip
        """The prediction after a palette edit, computing only what the edit can change.

        ``previous`` is the prediction of the same image under the palette before the
        edit. The output can change only in the box :func:`~.model.region.change_box`
        follows through the decoder from the changed pixels (within
        :func:`~.model.region.palette_reach` of them); that box is decoded
        (region-limited, with the cached encoder features) and its labels replace
        ``previous``'s there; everything else is kept.
        The result equals :meth:`predict` under the new palette up to float rounding.
        """
        palette = validate_palette(palette)
        scaled = bool(self.upscale(palette.shape))
        if previous is None or previous.palette.shape != palette.shape or (previous.working is not None) != scaled:
            return cast(Prediction, self.predict(image, palette, key=key))  # (the working resolution changed)
        if scaled:
            return self._repredict_scaled(image, palette, previous, key)
        if not self.region_decoding:  # (predict decodes: a Prediction)
            return cast(Prediction, self.predict(image, palette, key=key))
        changed = palette != previous.palette
        if not changed.any():
            return previous
        feats = self.encode(image, key)
        if len(feats) == 1:  # exactly what the change reaches (change_box), cropped back
            padded = pad_to_stride(torch.from_numpy(changed)[None])[0]  # as the palette pads
            box = change_box(padded, cast(CompositeTaskingNet, self.model).decoder)  # (region_decoding)
            assert box is not None  # something changed (above)
            h, w = palette.shape
            box = Window(box.y0, min(box.y1, h), box.x0, min(box.x1, w))
        else:  # tiles blend: bound it by the reach
            box = reach_box(torch.from_numpy(changed), self.palette_reach)
            assert box is not None
        region = np.zeros(palette.shape, bool)
        region[box.y0 : box.y1, box.x0 : box.x1] = True
        new = self.decode(feats, palette, region=region & (palette > 0))
        output = previous.output.copy()
        sl = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        output[(slice(None), *sl)] = new[(slice(None), *sl)]
        return self._merge(previous, palette, output, box)

    def _repredict_scaled(self, image, palette: np.ndarray, previous: Prediction, key) -> Prediction:
        """:meth:`repredict` at a working resolution: the working palette is decoded
        again (cheap: the working image is small), and the full-size labels are made
        again only in the box its changes, and the full-size palette's, reach."""
        changed = palette != previous.palette
        if not changed.any():
            return previous
        ws, feats, _ = self._scaled(image, key)
        small_pal = downsample_palette(palette, ws)
        small_out = self.decode(feats, small_pal)
        old = previous.working
        h, w = palette.shape
        if old is None or old[0].shape != small_pal.shape:
            box = Window(0, h, 0, w)
        else:  # working pixels whose palette or output changed, as a full-size box
            # (a change below 1e-4 is the float rounding of another decode, not the edit's)
            moved = (old[0] != small_pal) | (np.abs(old[1] - small_out).max(axis=0) > 1e-4)
            full = np.zeros(palette.shape, bool)
            if moved.any():
                ys, xs = np.nonzero(moved)
                fy, fx = h / ws[0], w / ws[1]
                full[max(0, int((ys.min() - 1) * fy)) : min(h, int(np.ceil((ys.max() + 2) * fy))),
                     max(0, int((xs.min() - 1) * fx)) : min(w, int(np.ceil((xs.max() + 2) * fx)))] = True  # fmt: skip
            full |= changed
            ys, xs = np.nonzero(full)
            pad = int(np.ceil(2 * self.upscale(palette.shape))) + 2  # edge thinning's reach
            box = Window(max(0, ys.min() - pad), min(h, ys.max() + 1 + pad),
                         max(0, xs.min() - pad), min(w, xs.max() + 1 + pad))  # fmt: skip
        win = (box.y0, box.y1, box.x0, box.x1)
        part, working = self._scaled_output(image, palette, key, window=win, working=(small_pal, small_out))
        output = previous.output.copy()
        output[:, box.y0 : box.y1, box.x0 : box.x1] = part
        merged = self._merge(previous, palette, output, box)
        merged.working = working
        return merged

    def _merge(self, previous: Prediction, palette: np.ndarray, output: np.ndarray, box: Window) -> Prediction:
        """``previous`` with its labels in ``box`` decoded again from ``output``."""
        sl = (slice(box.y0, box.y1), slice(box.x0, box.x1))
        crop = decode_labels(output[(slice(None), *sl)], palette[sl], self.tasks,
                             thin_edges=self.upscale(palette.shape))  # fmt: skip
        tasks = {}
        for task in TASKS:
            if task.name not in self.tasks or not (palette == task.palette_value).any():
                continue
            old = previous.tasks.get(task.name)
            if old is None:  # new in this palette: empty everywhere but the box
                old = empty_task_output(task, palette.shape)
            part = crop.get(task.name) or empty_task_output(task, (box.y1 - box.y0, box.x1 - box.x0))
            merged = TaskOutput(old.label.copy(), None if old.prob is None else old.prob.copy(),
                                old.confidence.copy())  # fmt: skip
            merged.label[sl] = part.label
            merged.confidence[sl] = part.confidence
            if merged.prob is not None:
                merged.prob[sl] = part.prob
            tasks[task.name] = merged
        return Prediction(palette, output, tasks)

    @property
    def palette_reach(self) -> int:
        """How far a palette change can reach in the output (:func:`~.model.region.palette_reach`)."""
        return palette_reach(cast(CompositeTaskingNet, self.model).decoder)  # a CTN's

    def decode_labels(self, output: np.ndarray, palette: np.ndarray) -> dict[str, TaskOutput]:
        """Per-task labels and confidences where the palette asks (numpy in, numpy out);
        :func:`decode_labels` with this model's tasks (edges thinned when the image is
        predicted at a smaller working resolution: :meth:`upscale`)."""
        return decode_labels(output, palette, self.tasks, thin_edges=self.upscale(np.shape(palette)))

    def upscale(self, shape: tuple[int, int]) -> float:
        """How many times an image of ``shape`` is enlarged back from its working
        resolution (0: predicted at its own resolution); the ``thin_edges`` of
        :func:`decode_labels`."""
        ws = self.working_shape(shape)
        return 0.0 if tuple(ws) == tuple(shape[:2]) else max(shape[:2]) / max(ws)

    # ------------------------------------------------------------------ working resolution
    def _scaled(self, image: np.ndarray, key: Hashable | None):
        """The working shape, the image's encoder features there, and its cache key."""
        ws = self.working_shape(np.asarray(image).shape[:2])
        skey = None if key is None else ("scaled", key, ws)
        if skey is not None and skey in self._cache:
            return ws, self.encode(None, skey), skey
        return ws, self.encode(self.resize(image, ws), skey), skey

    def _scaled_output(self, image: np.ndarray, palette: np.ndarray, key: Hashable | None,
                       window=None, working=None):  # fmt: skip
        """The composite output at full resolution (or of ``window`` of it) of an image
        predicted at its working resolution (:mod:`.scale`), and the working (palette,
        output) pair it came from (``working``: that pair, when already decoded)."""
        ws, feats, _ = self._scaled(image, key)
        if working is None:
            small_pal = downsample_palette(palette, ws)
            working = (small_pal, self.decode(feats, small_pal))

        def more(pal: np.ndarray, region: np.ndarray) -> np.ndarray:
            return self.decode(feats, pal, region=region)

        out = upsample_composite(more, palette, working[0], working[1], self.tasks, window=window)
        return out, working

    # ------------------------------------------------------------------ palettes
    def semantics(self, image: np.ndarray, key: Hashable | None = None) -> np.ndarray:
        """The predicted semantic map (S:semseg everywhere), for semantic rules."""
        h, w = np.asarray(image).shape[:2]
        pal = np.full((h, w), get_task("semseg").palette_value, np.uint8)
        out = self.output(image, pal, key)[0]
        return self.decode_labels(out, pal)["semseg"].label

    def features(self, image: np.ndarray, key: Hashable | None = None) -> None:
        """Encode ``image`` (at its working resolution) into the cache under ``key``, so
        that :meth:`output` only decodes (the napari plugin shows the two steps)."""
        if self.upscale(np.asarray(image).shape[:2]):
            self._scaled(image, key)
        else:
            self.encode(image, key)

    def output(self, image: np.ndarray, palette: np.ndarray, key: Hashable | None = None):
        """The composite output (3, H, W) of ``image`` under ``palette``, at the working
        resolution where there is one, and the working (palette, output) pair (or None)."""
        palette = validate_palette(palette)
        if self.upscale(palette.shape):
            return self._scaled_output(image, palette, key)
        return self.decode(self.encode(image, key), palette), None

    def palette_for(self, image: np.ndarray, rule: str | Rule, key: Hashable | None = None,
                    rng: np.random.Generator | int | None = None) -> np.ndarray:  # fmt: skip
        """A palette for ``image`` from ``rule`` (semantic rules use predicted semantics)."""
        rule = load_rule(rule)
        h, w = np.asarray(image).shape[:2]
        if rule.needs_semantics:
            return rule.palette(semantics=self.semantics(image, key))
        return rule.palette((h, w), rng=rng)

    @property
    def palette_net(self):
        """The palette network (loaded on first use; ``palette_model="default"`` is the
        bundled one)."""
        if self._palette_net is None:
            spec = self._palette_spec
            if spec is None:
                raise ValueError("this Predictor has no palette network (palette_model=None)")
            if isinstance(spec, torch.nn.Module):
                net = spec
            else:
                path = resolve_model("palette") if str(spec) == "default" else resolve_model(spec)
                net, self.palette_info = load_checkpoint(path)
            if (config := getattr(net, "config", None)) is None or config.kind != "palette":
                raise ValueError(f"{spec!r} is not a palette network checkpoint")
            self._palette_net = net.eval().to(self.device).to(memory_format=torch.channels_last)
        return self._palette_net

    @torch.inference_mode()
    def palette_from_net(self, image: np.ndarray) -> np.ndarray:
        """The palette the palette network predicts for ``image`` (H, W) uint8."""
        image = np.asarray(image)
        shape = image.shape[:2]
        ws = working_shape(shape, self.scale, trained_size(getattr(self.palette_net, "provenance", None)))
        x = self._image_tensor([self.resize(image, ws)])
        with self._ctx():
            logits = self.palette_net(x)
        if tuple(ws) != tuple(shape):  # the logits at full size, then the best task per pixel
            logits = torch.nn.functional.interpolate(logits.float(), size=shape, mode="bilinear", align_corners=False)
        return logits.argmax(1)[0].to(torch.uint8).cpu().numpy()

    # ------------------------------------------------------------------ all in one
    def predict(self, image: np.ndarray, palette: np.ndarray | None = None, rule: str | Rule | None = None,
                key: Hashable | None = None, rng=None,
                decode: bool = True) -> Prediction | tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Predict one image under ``palette`` (or one made by ``rule``); ``decode=False``:
        the ``(palette, output)`` pair, not decoded into labels (see :meth:`predict_batch`)."""
        if palette is None:
            if rule is None:
                raise ValueError("give a palette or a rule")
            palette = self.palette_for(image, rule, key, rng)
        palette = validate_palette(palette)
        if palette.shape != np.asarray(image).shape[:2]:
            raise ValueError(f"palette shape {palette.shape} differs from the image's {np.asarray(image).shape[:2]}")
        out, working = self.output(image, palette, key)
        if not decode:
            return palette, out
        pred = Prediction(palette, out, self.decode_labels(out, palette))
        pred.working = working
        return pred

    def predict_batch(self, images: list[np.ndarray], palettes: list[np.ndarray] | None = None,
                      decode: bool = True, rule: str | Rule | None = None,
                      ) -> list[Prediction] | list[tuple[np.ndarray, np.ndarray]]:  # fmt: skip
        """Images of one size (no larger than ``tile``) in one forward pass.

        ``palettes``, or ``rule``: a semantic rule (R2, R3, a rule file) applied to each
        image's predicted semantics, from the same encoder pass (the batch is decoded
        twice: semantics everywhere, then under the rule's palettes; one image at a time
        where :attr:`region_decoding` is on).
        ``decode=False``: ``(palette, output)`` pairs instead of Predictions, the
        validated uint8 palette and the composite output (3, H, W) float32, not decoded
        into labels (:func:`decode_labels` does that, e.g. in another process).
        """
        return self.start_batch(images, palettes, decode=decode, rule=rule).result()

    @torch.inference_mode()
    def start_batch(self, images: list[np.ndarray], palettes: list[np.ndarray] | None = None,
                    decode: bool = True, rule: str | Rule | None = None) -> "PendingBatch":  # fmt: skip
        """:meth:`predict_batch` without waiting for the device to finish: on CUDA the
        batch's uploads (through pinned memory), its kernels and the copy of its output
        back (into pinned memory) are queued, and :meth:`PendingBatch.result` waits for
        them and gives what :meth:`predict_batch` gives. Meanwhile the caller can prepare
        the next batch or hand on the previous one, so the GPU is not idle while the
        host works (``ctn label`` keeps one batch in flight). This returns once the
        decoder's kernels are queued: the decoder's own host syncs (the model's palette
        check; the palette-aware conditioning) wait for what is queued before them, the
        batch's encoder included, so the host's next work overlaps the decoder and the
        copy back, not the encoder. A semantic rule waits for the batch's semantics too
        (its palettes are made on the host). Elsewhere than CUDA the batch is computed
        before this returns.
        """
        if not images:
            return PendingBatch(list)
        if (palettes is None) == (rule is None):
            raise ValueError("give palettes or a semantic rule")
        if rule is not None:
            rule = load_rule(rule)
            if not rule.needs_semantics:
                raise ValueError(f"rule {rule.name!r} makes no palette from semantics: give its palettes")
        shapes = {np.asarray(im).shape for im in images}
        if len(shapes) != 1:
            raise ValueError(f"predict_batch needs images of one size, got {sorted(shapes)}")
        h, w = np.asarray(images[0]).shape[:2]
        # one image at a time: large images (tiled), and a semantic rule where the decoder is
        # region-limited (CPUs: each image's palette limits its decode, a batch's only to the
        # union; on the 2-core CPU the batch of 4 was 5 % slower, on a GPU it is the lever)
        if max(h, w) > self.tile or (rule is not None and self.region_decoding) or self.upscale((h, w)):
            if palettes is not None:
                results = [self.predict(im, p, decode=decode) for im, p in zip(images, palettes)]
                return PendingBatch(lambda: results)
            results = []
            for im in images:
                key = object()  # the semantics and the prediction share one (tiled) encoding
                try:
                    results.append(self.predict(im, rule=rule, key=key, decode=decode))
                finally:
                    self.forget(key)
            return PendingBatch(lambda: results)
        with self._on_device():
            return self._start(images, palettes, decode, rule, h, w)

    def _on_device(self):
        """CUDA calls on the Predictor's GPU (``cuda:1`` too: events and pinned memory
        otherwise go to the current device, 0)."""
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _start(self, images, palettes, decode: bool, rule, h: int, w: int) -> "PendingBatch":
        pals = None if palettes is None else [validate_palette(p) for p in palettes]
        pt = None if pals is None else self._to_device(np.stack(pals)).long()
        x = self._image_tensor(images)
        with self._ctx():
            enc = self.model.encode(x)
        if rule is not None:  # the batch's semantics, everywhere, then the rule's palettes
            value = get_task("semseg").palette_value
            sem = torch.full((len(images), h, w), value, dtype=torch.long, device=self.device)
            with self._ctx():
                sem_out = self.model.decode(enc, sem).float().cpu().numpy()
            everywhere = np.full((h, w), value, np.uint8)
            pals = [validate_palette(rule.palette(semantics=self.decode_labels(o, everywhere)["semseg"].label))
                    for o in sem_out]  # fmt: skip
            pt = self._to_device(np.stack(pals)).long()
        assert pals is not None and pt is not None  # palettes or a rule (start_batch)
        with self._ctx():
            if self.region_decoding:  # the union of the palettes' requested pixels
                out = cast(CompositeTaskingNet, self.model).decode(enc, pt, region=pt > 0)
            else:
                out = self.model.decode(enc, pt)
            out = out.float()
        host, done = out, None
        if out.device.type == "cuda":  # copied back while the host goes on
            host = torch.empty(out.shape, dtype=out.dtype, pin_memory=True)
            host.copy_(out, non_blocking=True)
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(out.device))  # the stream the copy is on

        def finish():
            if done is not None:
                done.synchronize()
            arr = host.cpu().numpy()  # (N, 3, H, W) float32; views of it go to the callers
            if not decode:
                return list(zip(pals, arr))
            return [Prediction(p, o, self.decode_labels(o, p)) for p, o in zip(pals, arr)]

        return PendingBatch(finish)


class PendingBatch:
    """A batch :meth:`Predictor.start_batch` has started; :meth:`result` waits for it
    (once; later calls give the same list)."""

    def __init__(self, finish):
        self._finish = finish
        self._result: list | None = None

    def result(self) -> list:
        if self._result is None:
            self._result = self._finish()
            self._finish = None
        return self._result
