"""Write synthetic scenes to disk: PNG images plus their ground truth in a label store.

``OUT/images/<id>.png`` holds each image and ``OUT/ground-truth.zarr`` the label store
(:mod:`composite_tasking.store`) with every task's exact label, provenance
``ground-truth``, and the scene description in the image attributes. Image ids are
``synth-s<seed>-<index>`` (index zero-padded) in the default world and
``synth-<world>-s<seed>-<index>`` in another named world (:mod:`.worlds`), so runs with
different seeds or worlds can share one folder; each image's attributes name its world.
A custom :class:`SceneConfig` that is no named world gets the default world's ids: give
it a folder of its own.

Writing is resumable: images already complete in the store (and whose PNG exists) are
skipped, so an interrupted run continues where it stopped; the store's completion marker
makes a half-written image invisible until it is written again.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import imageio.v3 as iio

from ..store import LabelStore
from .scene import SceneConfig, generate
from .worlds import DEFAULT_WORLD, get_world, world_name

__all__ = ["SynthSummary", "write_synthetic", "synthetic_id", "STORE_NAME", "IMAGES_DIR"]

STORE_NAME = "ground-truth.zarr"
IMAGES_DIR = "images"
TASKS = ("semseg", "parts", "edges", "saliency", "normals")


def synthetic_id(seed: int, index: int, world: str | None = None) -> str:
    """The image id of scene ``index`` of ``seed`` in ``world`` (None: the default)."""
    if world is None or world == DEFAULT_WORLD:
        return f"synth-s{seed}-{index:06d}"
    return f"synth-{world}-s{seed}-{index:06d}"


@dataclass
class SynthSummary:
    out: Path
    store: Path
    written: int
    skipped: int


def _atomic_png(path: Path, image) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    iio.imwrite(tmp, image, extension=".png")
    os.replace(tmp, path)


def write_synthetic(
    out: str | Path,
    n: int,
    size: int | tuple[int, int] = 256,
    seed: int = 0,
    start: int = 0,
    config: SceneConfig | str = SceneConfig(),
    progress: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> SynthSummary:
    """Generate scenes ``start .. start + n - 1`` of world ``seed`` into ``out``.

    ``config`` is a :class:`SceneConfig` or the name of a world (``"shifted"``, see
    :data:`.worlds.WORLDS`; an unknown name is a ``ValueError`` listing the known ones).

    ``progress(done, total)`` is called after each scene; ``should_stop()`` is polled
    before each scene and ends the run early (everything written so far stays valid).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    config = get_world(config)
    world = world_name(config)
    out = Path(out)
    images = out / IMAGES_DIR
    images.mkdir(parents=True, exist_ok=True)
    store_path = out / STORE_NAME
    store = LabelStore(store_path, mode="a", attrs={"source": "synthetic", "generator": "composite_tasking.synthetic"})
    done = set(store.ids())
    written = skipped = 0
    for k, index in enumerate(range(start, start + n)):
        if should_stop is not None and should_stop():
            break
        image_id = synthetic_id(seed, index, world)
        png = images / f"{image_id}.png"
        if image_id in done and png.exists():
            skipped += 1
        else:
            sample = generate(seed, index, size, config)
            _atomic_png(png, sample["image"])
            meta = sample.pop("meta")
            if world is not None:
                meta["world"] = world
            store.write_sample(
                image_id,
                sample,
                provenance=dict.fromkeys(TASKS, "ground-truth"),
                attrs={"synthetic": meta},
                image_source=os.path.relpath(png, store_path),
                overwrite=True,
            )
            written += 1
        if progress is not None:
            progress(k + 1, n)
    return SynthSummary(out, store_path, written, skipped)
