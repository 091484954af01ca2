"""Label stores in napari: the reader, the writer, and the correction masks.

Reader (``napari.yaml``: ``*.zarr`` folders): :func:`napari_get_reader` returns a reader
for a label store written by this package (its root, or one image group inside it) and
``None`` for anything else (other zarr stores, OME-Zarr images, files); it never raises.
Each image becomes the layers the plugin itself makes: the image, its Task Palette, one
layer per task and role (:mod:`.task_layers`) and the confidence, so that an annotation
saved from napari reopens as it was left.

Writer (``napari.yaml``: layers -> ``*.zarr``): :func:`write_store` writes the palette,
pseudo-label and image layers of each image into a store (created if absent, else
added to): task maps with provenance ``corrected`` when a person changed any pixel,
else as they were (``pseudo``, or ``ground-truth`` for layers read from such a store).

What the label store itself has no place for is kept beside it, inside the image group:

- ``maps/corrected_<task>``: (y, x) uint8, 1 where a person changed that task's label in
  napari (zstd, one chunk per image up to 1024 x 1024 pixels, as the store's maps).
  :meth:`LabelStore.read_sample` reads only the maps the image's ``maps`` attribute
  lists, so it and OME-Zarr readers pass over these arrays.
- the image attribute ``"napari"``: ``{"version": 1, "layers": [[task, role], ...],
  "corrected": [tasks with a mask]}``: which layers the annotation had, so that
  reopening shows the same ones (a store written by ``ctn label`` has no such
  attribute: every map it holds is shown).

The masks are written after the store's own write of the image (which replaces the
whole image group), so an interrupted save can leave a task marked ``corrected`` with
no mask: it then reopens with no pixel marked, and the provenance still says corrected.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..store import CORRECTED_PREFIX, NS, STORE_FORMAT, LabelStore, StoreError, validate_image_id
from ..store.location import Remote, locate, source_name
from ..tasks import IGNORE, TASKS, get_task
from .palette_layer import METADATA_KEY, PALETTE_KIND, palette_features, task_colormap
from .task_layers import (
    TASK_KIND,
    normals_rgba,
    probability_colormap,
    rgb8_from,
    rgba_normals,
    task_label_colormap,
    task_label_features,
)

__all__ = [
    "NAPARI_ATTR",
    "CORRECTED_PREFIX",
    "MAX_IMAGES",
    "store_target",
    "napari_get_reader",
    "read_store",
    "image_layer_data",
    "write_store",
    "image_id_for",
    "read_corrected_masks",
]

#: image attribute holding the napari annotation's own state
NAPARI_ATTR = "napari"
#: a store root with more images opens its first MAX_IMAGES (each image group opens alone)
MAX_IMAGES = 16
IMAGE_FORMAT = "ctn-label-image"

LayerData = tuple[Any, dict, str]


# --------------------------------------------------------------------------- reader


def _attrs(folder: Path | Remote) -> dict | None:
    """The ``composite_tasking`` attributes of a zarr v3 group folder (or prefix of an
    object store), or None."""
    meta_file = folder / "zarr.json"
    if not meta_file.is_file():
        return None
    meta = json.loads(meta_file.read_bytes().decode("utf-8"))
    if meta.get("zarr_format") != 3 or meta.get("node_type") != "group":
        return None
    own = (meta.get("attributes") or {}).get(NS)
    return own if isinstance(own, dict) else None


def store_target(path: str | Path) -> tuple[Path | Remote, list[str] | None] | None:
    """(store root, [image id] or None for all) when ``path`` is one of our label stores
    or an image group in one, on the local disk or in an object store
    (``s3://bucket/labels.zarr``: :mod:`composite_tasking.store.location`, with the
    storage options of ``CTN_STORAGE_OPTIONS`` and the AWS environment); None otherwise.
    Never raises."""
    try:
        p = locate(path)
        if isinstance(p, Path) and not p.is_dir():
            return None
        own = _attrs(p)
        if own is None:
            return None
        if own.get("format") == STORE_FORMAT:
            return p, None
        if own.get("format") == IMAGE_FORMAT:
            parent = _attrs(p.parent)
            if parent is not None and parent.get("format") == STORE_FORMAT:
                return p.parent, [p.name]
        return None
    except Exception:  # noqa: BLE001 - a reader must never raise while napari asks
        return None


def napari_get_reader(path: str | Sequence[str]):
    """npe2 reader command: a reader function for our label stores, else None."""
    if isinstance(path, (list, tuple)):
        if len(path) != 1:
            return None
        path = path[0]
    target = store_target(path)
    if target is None:
        return None
    root, ids = target

    def reader(_path) -> list[LayerData]:
        return read_store(root, ids)

    return reader


def read_store(path: str | Path, ids: Iterable[str] | None = None) -> list[LayerData]:
    """Layer data of the images ``ids`` (default: every complete image, at most
    :data:`MAX_IMAGES`) of the label store at ``path``; only the first image's layers are
    visible."""
    store = LabelStore(path, mode="r")
    all_ids = store.ids()
    if ids is None:
        ids = all_ids[:MAX_IMAGES]
        if len(all_ids) > MAX_IMAGES:
            import warnings

            warnings.warn(
                f"label store {path} holds {len(all_ids)} images; opened the first "
                f"{MAX_IMAGES}. Open one image by its folder: {locate(path) / all_ids[MAX_IMAGES]}",
                stacklevel=2,
            )
    out: list[LayerData] = []
    for i, image_id in enumerate(ids):
        out += image_layer_data(store, image_id, visible=i == 0)
    return out


def store_image_key(store_path: str | Path, image_id: str, copy: str | None = None) -> str:
    """The ``image_key`` of an image read from a store: ``<store>::<image id>``, and
    ``::<copy>`` when given. The reader gives each opened copy its own ``copy`` token, so
    that a store opened twice gives two independent images (predicting one never
    updates the other's layers)."""
    key = f"{source_name(store_path)}::{image_id}"
    return f"{key}::{copy}" if copy else key


def read_corrected_masks(store_path: str | Path, image_id: str) -> dict[str, np.ndarray]:
    """The correction masks (task -> bool (H, W)) kept beside one image; may be empty
    (:meth:`LabelStore.correction_masks`; nothing when the store or image is missing)."""
    try:
        return LabelStore(store_path, mode="r").correction_masks(image_id)
    except (StoreError, FileNotFoundError, KeyError, ValueError):
        return {}


def _meta(**kwargs) -> dict:
    return {METADATA_KEY: kwargs}


def image_layer_data(store: LabelStore, image_id: str, *, visible: bool = True) -> list[LayerData]:
    """The layers of one stored image: image, palette, task layers, confidence."""
    import uuid

    s = store.read_sample(image_id)
    key = store_image_key(store.path, image_id, uuid.uuid4().hex[:8])  # one key per copy
    napari_attrs = s.attrs.get(NAPARI_ATTR) if isinstance(s.attrs.get(NAPARI_ATTR), dict) else {}
    shown = napari_attrs.get("layers")
    wanted = None if shown is None else {(t, r) for t, r in shown}
    masks = read_corrected_masks(store.path, image_id)
    common = {"visible": visible}
    model = {k: s.attrs[k] for k in ("model_id", "model_sha256") if k in s.attrs}

    def want(task: str | None, role: str) -> bool:
        return wanted is None or (task, role) in wanted

    layers: list[LayerData] = []
    from ..images import ImageReadError

    try:
        image = store.image_pixels(s)
    except (ImageReadError, OSError):
        image = None
    if image is not None:
        layers.append((image, {
            "name": image_id, "rgb": True, **common,
            "metadata": _meta(kind="image", image_key=key, store=str(store.path),
                              image_id=image_id),
        }, "image"))  # fmt: skip
    if s.palette is not None:
        layers.append((s.palette, {
            "name": f"{image_id} palette", "colormap": task_colormap(),
            "features": palette_features(), "opacity": 0.5, **common,
            "metadata": _meta(kind=PALETTE_KIND, image_key=key, image_id=image_id,
                              origin=s.attrs.get("palette_origin", "store"),
                              **{k: s.attrs[k] for k in ("rule", "rule_sha256") if k in s.attrs}),
        }, "labels"))  # fmt: skip
    for task in TASKS:
        name = task.name
        prov = s.provenance.get(name, "pseudo")
        if name == "normals" and "normals" in s.labels and want(name, "normals"):
            layers.append((normals_rgba(s.labels["normals"]), {
                "name": f"{image_id} normals", "rgb": True, "contrast_limits": (0.0, 1.0),
                "blending": "translucent", **common,
                "metadata": _meta(kind=TASK_KIND, task=name, role="normals", image_key=key,
                                  provenance=prov, **model),
            }, "image"))  # fmt: skip
            continue
        prob = s.maps.get(f"{name}_prob")
        if prob is not None and want(name, "prob"):
            layers.append((prob, {
                "name": f"{image_id} {name} prob", "colormap": probability_colormap(task),
                "contrast_limits": (0.0, 1.0), "blending": "translucent", **common,
                "metadata": _meta(kind=TASK_KIND, task=name, role="prob", image_key=key,
                                  provenance=prov, **model),
            }, "image"))  # fmt: skip
        label = s.labels.get(name)
        if label is not None and name != "normals" and want(name, "label"):
            mask = masks.get(name)
            if mask is None or mask.shape != label.shape:
                mask = np.zeros(label.shape, bool)
            layers.append((label, {
                "name": f"{image_id} {name}", "colormap": task_label_colormap(task),
                "features": task_label_features(task), "opacity": 0.6, **common,
                "metadata": _meta(kind=TASK_KIND, task=name, role="label", image_key=key,
                                  provenance=prov, reference=label.copy(), corrected=mask,
                                  **model),
            }, "labels"))  # fmt: skip
    conf = [s.maps[f"confidence_{t.name}"] for t in TASKS if f"confidence_{t.name}" in s.maps]
    if conf and want(None, "confidence"):
        merged = np.full(conf[0].shape, np.nan, np.float32)
        for c in conf:
            merged = np.where(np.isnan(c), merged, c)
        layers.append((merged, {
            "name": f"{image_id} confidence", "colormap": "viridis",
            "contrast_limits": (0.0, 1.0), "blending": "translucent", "visible": False,
            "metadata": _meta(kind=TASK_KIND, task=None, role="confidence", image_key=key),
        }, "image"))  # fmt: skip
    return layers


# --------------------------------------------------------------------------- writer


def image_id_for(name: str) -> str:
    """A store image id from a layer name (characters a folder name may not hold -> _)."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).strip("._") or "image"
    return validate_image_id(base[:200])


def _own(attrs: dict) -> dict:
    meta = (attrs.get("metadata") or {}).get(METADATA_KEY)
    return meta if isinstance(meta, dict) else {}


class _Group:
    """The layers of one image, from the writer's layer data."""

    def __init__(self, key: str | None):
        self.key = key
        self.image: LayerData | None = None
        self.palette: LayerData | None = None
        self.tasks: dict[tuple[str | None, str], LayerData] = {}

    def meta_of(self, item: LayerData | None) -> dict:
        return _own(item[1]) if item is not None else {}


def group_layers(layer_data: Sequence[LayerData]) -> list[_Group]:
    groups: dict[str | None, _Group] = {}
    loose_images: list[LayerData] = []
    for item in layer_data:
        data, attrs, kind = item
        own = _own(attrs)
        key = own.get("image_key")
        if own.get("kind") == TASK_KIND:
            g = groups.setdefault(key, _Group(key))
            g.tasks[(own.get("task"), own.get("role"))] = item
        elif own.get("kind") == PALETTE_KIND and kind == "labels":
            g = groups.setdefault(key, _Group(key))
            if g.palette is not None:
                raise StoreError(f"two palette layers for one image: {g.palette[1].get('name')!r} "
                                 f"and {attrs.get('name')!r}; select one")  # fmt: skip
            g.palette = item
        elif kind == "image":
            if key is not None:
                groups.setdefault(key, _Group(key)).image = item
            else:
                loose_images.append(item)
    # a palette not yet tied to an image (made but never predicted) goes with the one
    # image group that has no palette
    loose = groups.get(None)
    if loose is not None and loose.palette is not None and loose.image is None \
            and not loose.tasks:  # fmt: skip
        paletteless = [g for k, g in groups.items() if k is not None and g.palette is None]
        if len(paletteless) == 1:
            paletteless[0].palette = loose.palette
            del groups[None]
    # an image layer without a key goes with the one group that has no image
    imageless = [g for g in groups.values() if g.image is None]
    if loose_images:
        if len(loose_images) == 1 and len(imageless) <= 1:
            if imageless:
                imageless[0].image = loose_images[0]
            else:
                g = _Group(None)
                g.image = loose_images[0]
                groups[None] = g
        else:
            names = ", ".join(repr(i[1].get("name")) for i in loose_images)
            raise StoreError(f"cannot tell which palette belongs to the image layer(s) {names}: "
                             "save one image with its palette and pseudo-label layers at a time")  # fmt: skip
    if not groups:
        raise StoreError("nothing to save: select a Task Palette, pseudo-label layers or an image")
    return list(groups.values())


def _sample_of(g: _Group) -> tuple[dict, dict, dict[str, np.ndarray], list]:
    """(sample, provenance, correction masks, shown layers) of one image group."""
    sample: dict[str, Any] = {}
    prov: dict[str, str] = {}
    masks: dict[str, np.ndarray] = {}
    if g.image is not None:
        data, attrs, _ = g.image
        sample["image"] = rgb8_from(data, bool(attrs.get("rgb")), attrs.get("contrast_limits"),
                                    attrs.get("name", "image"))  # fmt: skip
    palette = None
    if g.palette is not None:
        palette = np.asarray(g.palette[0])
        sample["palette"] = palette
    shown = sorted(([t, r] for t, r in g.tasks), key=lambda x: (str(x[0]), x[1]))
    for task in TASKS:
        name = task.name
        label_item = g.tasks.get((name, "label"))
        prob_item = g.tasks.get((name, "prob"))
        norm_item = g.tasks.get((name, "normals"))
        item = label_item or prob_item or norm_item
        if item is None:
            continue
        before = _own(item[1]).get("provenance", "pseudo")
        if label_item is not None:
            data, attrs, _ = label_item
            label = np.asarray(data)
            own = _own(attrs)
            mask = own.get("corrected")
            mask = np.zeros(label.shape, bool) if mask is None or mask.shape != label.shape \
                else np.asarray(mask, bool).copy()  # fmt: skip
            ref = own.get("reference")
            if ref is not None and np.shape(ref) == label.shape:
                mask |= label != ref
            sample[name] = label
            masks[name] = mask
        if prob_item is not None:
            prob = np.asarray(prob_item[0], np.float32)
            sample[f"{name}_prob"] = prob
            if label_item is None:  # the store keeps a thresholded map of each probability
                from ..prediction import THRESHOLD

                lab = np.full(prob.shape, IGNORE, np.uint8)
                defined = ~np.isnan(prob)
                lab[defined] = prob[defined] >= THRESHOLD
                sample[name] = lab
        if norm_item is not None:
            sample["normals"] = rgba_normals(np.asarray(norm_item[0]))
        corrected = name in masks and bool(masks[name].any())
        if before in ("ground-truth", "reviewed"):  # corrections of checked labels stay checked
            prov[name] = before
        else:
            prov[name] = "corrected" if corrected or before == "corrected" else "pseudo"
    conf_item = g.tasks.get((None, "confidence"))
    if conf_item is not None and palette is not None:
        conf = np.asarray(conf_item[0], np.float32)
        per_task = {}
        for task in TASKS:
            if task.name in prov:
                region = palette == task.palette_value
                per_task[task.name] = np.where(region, conf, np.nan).astype(np.float32)
        sample["confidence"] = per_task
    return sample, prov, masks, shown


def _check_same_image(store: LabelStore, image_id: str, image: np.ndarray, img_meta: dict) -> None:
    """Refuse to replace another image of the store that has this id: an image layer
    not read from this store (its name made the id) whose pixels differ from the stored
    image's. A save replaces the stored image with its labels, corrections included."""
    if image_id not in store:
        return
    own = img_meta.get("store")
    if own and source_name(own) == source_name(store.path) and img_meta.get("image_id") == image_id:
        return  # read from this store: saved back to it
    info = store.image_attrs(image_id).get("image") or {}
    pixels = np.ascontiguousarray(np.asarray(image, np.uint8))
    if info.get("sha256_of") == "pixels" and info.get("sha256") == hashlib.sha256(pixels.tobytes()).hexdigest():
        return  # the same picture, saved again
    raise StoreError(f"label store {store.path} already holds another image named {image_id!r} "
                     f"(from {info.get('source') or 'elsewhere'}): rename the image layer, or "
                     "save to another store")  # fmt: skip


def save_group(store: LabelStore, g: _Group, image_id: str | None = None) -> str:
    """Write one image's layers into ``store``; returns the image id."""
    sample, prov, masks, shown = _sample_of(g)
    img_meta = g.meta_of(g.image)
    if image_id is None:
        image_id = img_meta.get("image_id")
        if not image_id:
            name = g.image[1].get("name") if g.image is not None else None
            if name is None:  # a palette read from a store knows its image id
                name = g.meta_of(g.palette).get("image_id") or None
            if name is None:
                raise StoreError("cannot name the image: add the image layer to the selection")
            image_id = image_id_for(name)
    attrs: dict[str, Any] = {}
    for item in [*g.tasks.values(), g.palette]:
        own = g.meta_of(item)
        for k in ("model_id", "model_sha256"):
            if own.get(k) and k not in attrs:
                attrs[k] = own[k]
    # the rule that made the palette (palette_layer.record_rule): kept through a save, so
    # fine-tuning can refuse a rule the palette contradicts; none known: none recorded
    attrs.update({k: v for k, v in g.meta_of(g.palette).items() if k in ("rule", "rule_sha256") and v})
    if g.palette is not None:
        attrs["palette_origin"] = str(g.meta_of(g.palette).get("origin") or "napari")
    with_masks = sorted(masks, key=lambda t: get_task(t).id)
    attrs[NAPARI_ATTR] = {"version": 1, "layers": shown, "corrected": with_masks}
    if "image" in sample:
        _check_same_image(store, image_id, sample["image"], img_meta)
        store.write_sample(image_id, sample, provenance=prov, attrs=attrs, overwrite=True)
    elif image_id in store:
        labels = {k: v for k, v in sample.items()
                  if k == "palette" or k in {t.name for t in TASKS}}  # fmt: skip
        store.update_labels(image_id, labels, provenance=prov, attrs=attrs)
    else:
        raise StoreError(f"image {image_id!r} is not in label store {store.path} and no image "
                         "layer was given: add the image layer to the selection")  # fmt: skip
    if masks:
        store.write_correction_masks(image_id, masks)
    return image_id


def write_store(path: str, layer_data: list[LayerData]) -> list[str]:
    """npe2 writer command: the selected layers into the label store at ``path``."""
    p = Path(path)
    if p.suffix != ".zarr":
        p = p.with_name(p.name + ".zarr")
    groups = group_layers(layer_data)
    store = LabelStore(p, mode="a")
    for g in groups:
        save_group(store, g)
    return [str(p)]


__all__ += ["save_group", "store_image_key"]
