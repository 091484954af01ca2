"""The label store: real zarr v3 stores on disk, small synthetic samples."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from composite_tasking.store import (
    TILE,
    LabelStore,
    StoreError,
    chunk_shape,
    validate_image_id,
)
from composite_tasking.tasks import IGNORE, TASK_NAMES, TASKS, get_task

H, W = 24, 40
ALL_PSEUDO = {t: "pseudo" for t in TASK_NAMES}


def make_sample(rng, h=H, w=W, *, with_maps=True):
    """A full canonical sample; each task defined only where the palette asks for it."""
    palette = rng.integers(0, len(TASKS) + 1, (h, w)).astype(np.uint8)

    def where(task, values):
        return np.where(palette == get_task(task).palette_value, values, IGNORE).astype(np.uint8)

    normals = rng.normal(size=(h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[palette != get_task("normals").palette_value] = 0.0
    sample = {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "palette": palette,
        "semseg": where("semseg", rng.integers(0, 21, (h, w))),
        "parts": where("parts", rng.integers(0, 7, (h, w))),
        "edges": where("edges", rng.integers(0, 2, (h, w))),
        "saliency": where("saliency", rng.integers(0, 2, (h, w))),
        "normals": normals,
    }
    if with_maps:
        for task in ("edges", "saliency"):
            ask = palette == get_task(task).palette_value
            sample[f"{task}_prob"] = np.where(ask, rng.random((h, w)), np.nan).astype(np.float32)
        sample["confidence_semseg"] = rng.random((h, w)).astype(np.float32)
    return sample


@pytest.fixture
def store(tmp_path):
    return LabelStore.create(tmp_path / "labels.zarr", attrs={"model_id": "ctn-resnet18",
                                                              "model_sha256": "ab" * 32})


@pytest.fixture
def sample(rng):
    return make_sample(rng)


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


# ------------------------------------------------------------------------- round trip


def test_full_sample_round_trips_bit_exact(store, sample):
    store.write_sample("img_001", sample, provenance=ALL_PSEUDO,
                       attrs={"rule": "random", "palette_origin": "rule"})
    got = store.read_sample("img_001")
    assert got.image.dtype == np.uint8 and np.array_equal(got.image, sample["image"])
    assert got.palette.dtype == np.uint8 and np.array_equal(got.palette, sample["palette"])
    assert list(got.labels) == list(TASK_NAMES)
    for task in ("semseg", "parts", "edges", "saliency"):
        assert got.labels[task].dtype == np.uint8
        assert np.array_equal(got.labels[task], sample[task]), task
    assert got.labels["normals"].dtype == np.float32
    assert got.labels["normals"].shape == (H, W, 3)
    assert got.labels["normals"].tobytes() == sample["normals"].tobytes()  # bit-exact
    assert set(got.maps) == {"edges_prob", "saliency_prob", "confidence_semseg"}
    for name, arr in got.maps.items():
        assert arr.dtype == np.float32
        assert arr.tobytes() == sample[name].tobytes(), name  # NaN included
    assert got.provenance == ALL_PSEUDO
    assert got.attrs["rule"] == "random" and got.attrs["palette_origin"] == "rule"
    assert got.attrs["shape"] == [H, W] and got.shape == (H, W)
    assert got.attrs["complete"] is True
    assert got.image_sha256 == hashlib.sha256(sample["image"].tobytes()).hexdigest()
    assert got.attrs["image"]["sha256_of"] == "pixels"
    # the canonical sample comes back as it went in
    back = got.to_sample()
    assert set(back) == set(sample)
    # the store's own attributes
    assert store.attrs["format"] == "ctn-label-store"
    assert store.attrs["format_version"] == 2
    assert store.attrs["model_id"] == "ctn-resnet18"
    assert "created" in store.attrs


def _as_format_1(store, image_id):
    """Rewrite a stored image as format version 1 kept its float maps: an array per map."""
    group = zarr.open_group(str(store.path / image_id), mode="r+", zarr_format=3)
    scores = group["maps/scores"]
    channels = scores.attrs["composite_tasking"]["channels"]
    data = scores[...]
    del group["maps/scores"]
    for k, name in enumerate(channels):
        arr = group["maps"].create_array(name, shape=data.shape[1:], dtype=np.float32, fill_value=float("nan"))
        arr[...] = data[k]
    attrs = group.attrs.asdict()
    own = attrs["composite_tasking"]
    own["maps"] = [n for n in own["maps"] if n != "scores"] + channels
    own["format_version"] = 1
    group.attrs.put(attrs)
    return channels


def test_images_of_format_1_are_read_as_before(store, sample):
    """Format 1 kept each float map as an array of its own: such images (and stores that
    hold both versions) read back the same."""
    store.write_sample("old", sample, provenance=ALL_PSEUDO)
    store.write_sample("new", sample, provenance=ALL_PSEUDO)
    new = store.read_sample("new")
    channels = _as_format_1(store, "old")
    assert channels == ["edges_prob", "saliency_prob", "confidence_semseg"]
    assert (store.path / "old/maps/edges_prob/zarr.json").is_file()
    old = store.read_sample("old")
    assert old.attrs["format_version"] == 1 and new.attrs["format_version"] == 2
    assert list(old.maps) == list(new.maps) == channels
    for name in channels:
        assert old.maps[name].tobytes() == new.maps[name].tobytes() == sample[name].tobytes()
    assert old.labels["normals"].tobytes() == new.labels["normals"].tobytes()
    assert store.ids() == ["new", "old"]


def test_scores_whose_channels_are_not_named_are_refused_by_name(store, sample):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    meta_path = store.path / "img/maps/scores/zarr.json"
    meta = read_json(meta_path)
    meta["attributes"]["composite_tasking"]["channels"] = ["edges_prob"]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreError, match="'img'.*maps/scores has 3 channels and names 1"):
        store.read_sample("img")


def test_confidence_may_come_as_a_dict_and_partial_samples_store_only_what_they_hold(store, rng):
    s = make_sample(rng, with_maps=False)
    sample = {"image": s["image"], "semseg": s["semseg"],
              "confidence": {"semseg": rng.random((H, W)).astype(np.float32)}}
    store.write_sample("a", sample, provenance={"semseg": "ground-truth"})
    got = store.read_sample("a")
    assert got.palette is None
    assert list(got.labels) == ["semseg"]
    assert list(got.maps) == ["confidence_semseg"]
    assert np.array_equal(got.maps["confidence_semseg"], sample["confidence"]["semseg"])
    group = zarr.open_group(store.path / "a", mode="r")
    assert group["labels"].attrs["ome"]["labels"] == ["semseg"]


def test_listing_contains_len_iter(store, sample):
    assert store.ids() == [] and len(store) == 0
    for image_id in ("b", "a", "c"):
        store.write_sample(image_id, sample, provenance=ALL_PSEUDO)
    assert store.ids() == ["a", "b", "c"]
    assert list(store) == ["a", "b", "c"] and len(store) == 3
    assert "a" in store and "zzz" not in store and "../x" not in store
    reopened = LabelStore(store.path)  # mode "r"
    assert reopened.ids() == ["a", "b", "c"]
    assert reopened.is_complete("b")
    assert reopened.image_attrs("b")["provenance"] == ALL_PSEUDO


# ------------------------------------------------------------------ OME-Zarr metadata


def test_ome_zarr_0_5_metadata_by_hand(store, sample):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    root = store.path / "img"

    meta = read_json(root / "zarr.json")
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    (ms,) = ome["multiscales"]
    assert "version" not in ms  # 0.5: the version lives at the "ome" level only
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert [a["type"] for a in ms["axes"]] == ["channel", "space", "space"]
    (ds,) = ms["datasets"]
    assert ds["path"] == "0"
    scales = [t for t in ds["coordinateTransformations"] if t["type"] == "scale"]
    assert len(scales) == 1 and len(scales[0]["scale"]) == 3
    arr = read_json(root / "0" / "zarr.json")
    assert arr["node_type"] == "array" and arr["shape"] == [3, H, W]
    assert arr["data_type"] == "uint8" and arr["dimension_names"] == ["c", "y", "x"]
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]

    labels = read_json(root / "labels" / "zarr.json")["attributes"]["ome"]
    assert labels["version"] == "0.5"
    assert labels["labels"] == ["palette", "semseg", "parts", "edges", "saliency"]
    for name in labels["labels"]:
        lmeta = read_json(root / "labels" / name / "zarr.json")["attributes"]
        lome = lmeta["ome"]
        assert lome["version"] == "0.5"
        (lms,) = lome["multiscales"]
        assert [a["name"] for a in lms["axes"]] == ["y", "x"]
        assert [a["type"] for a in lms["axes"]] == ["space", "space"]
        assert [d["path"] for d in lms["datasets"]] == ["0"]  # as many levels as the image
        assert lms["datasets"][0]["coordinateTransformations"] == [
            {"type": "scale", "scale": [1.0, 1.0]}
        ]
        larr = read_json(root / "labels" / name / "0" / "zarr.json")
        assert larr["data_type"] == "uint8" and larr["shape"] == [H, W]
        assert larr["dimension_names"] == ["y", "x"]
        il = lome["image-label"]
        assert il["source"] == {"image": "../../"}
        colors = {c["label-value"]: c["rgba"] for c in il["colors"]}
        props = {p["label-value"]: p for p in il["properties"]}
        assert set(colors) == set(props)  # the same label values in both
        assert len(colors) == len(il["colors"])  # unique
        for rgba in colors.values():
            assert len(rgba) == 4 and all(isinstance(v, int) and 0 <= v <= 255 for v in rgba)
        if name == "palette":
            assert colors[0][3] == 0 and props[0]["class"] == "none"
            for t in TASKS:
                assert colors[t.palette_value] == [*t.color, 255]
                assert props[t.palette_value]["task"] == t.name
            assert lmeta["composite_tasking"]["no_task"] == 0
            continue
        task = get_task(name)
        assert colors[IGNORE][3] == 0 and props[IGNORE]["class"] == "ignore"
        assert lmeta["composite_tasking"]["ignore"] == IGNORE
        if task.kind == "classes":
            assert len(colors) == task.num_classes + 1
            for i, (cls, rgb) in enumerate(zip(task.classes, task.class_colors())):
                assert colors[i] == [*map(int, rgb), 255]
                assert props[i]["class"] == cls
        else:
            assert sorted(colors) == [0, 1, IGNORE]
            assert colors[1] == [*task.color, 255]


def test_plain_zarr_opens_the_store_without_this_package(store, sample):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    root = zarr.open_group(str(store.path), mode="r", zarr_format=3)
    assert root.attrs["composite_tasking"]["format"] == "ctn-label-store"
    img = root["img"]
    assert img["0"].shape == (3, H, W) and img["0"].dtype == np.uint8
    assert np.array_equal(img["0"][...], np.moveaxis(sample["image"], -1, 0))
    assert np.array_equal(img["labels/semseg/0"][...], sample["semseg"])
    assert np.array_equal(img["labels/palette/0"][...], sample["palette"])
    assert img["maps/normals"].shape == (3, H, W) and img["maps/normals"].dtype == np.float32
    assert np.array_equal(img["maps/normals"][...], np.moveaxis(sample["normals"], -1, 0))
    scores = img["maps/scores"]
    assert np.isnan(scores.fill_value) and scores.dtype == np.float32
    channels = scores.attrs["composite_tasking"]["channels"]
    assert channels == ["edges_prob", "saliency_prob", "confidence_semseg"]
    assert scores.attrs["composite_tasking"]["channel_kinds"] == ["probability", "probability", "confidence"]
    for k, name in enumerate(channels):
        assert np.array_equal(scores[k], sample[name], equal_nan=True)
    assert sorted(img["maps"].array_keys()) == ["normals", "scores"]
    semseg = img["labels/semseg"].attrs["ome"]["image-label"]
    names = [p["class"] for p in semseg["properties"]]
    assert names[:3] == ["background", "aeroplane", "bicycle"] and names[-1] == "ignore"
    assert sorted(root.group_keys()) == ["img"]


def test_ome_zarr_py_reader_opens_an_image_group(store, sample):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    nodes = list(Reader(parse_url(str(store.path / "img")))())
    image = nodes[0]
    assert image.data[0].shape == (3, H, W)
    assert np.array_equal(np.asarray(image.data[0]), np.moveaxis(sample["image"], -1, 0))
    assert [a["name"] for a in image.metadata["axes"]] == ["c", "y", "x"]
    by_name = {n.metadata.get("name"): n for n in nodes[1:] if n.data}
    assert set(by_name) == {"palette", "semseg", "parts", "edges", "saliency"}
    semseg = by_name["semseg"]
    assert np.array_equal(np.asarray(semseg.data[0]), sample["semseg"])
    cat = SEMSEG_INDEX["cat"]
    assert semseg.metadata["properties"][cat]["class"] == "cat"
    rgb = get_task("semseg").class_colors()[cat]
    assert semseg.metadata["color"][cat] == [*(c / 255 for c in rgb), 1.0]


SEMSEG_INDEX = {c: i for i, c in enumerate(get_task("semseg").classes)}


def test_ome_zarr_models_validate_the_groups(store, sample):
    pytest.importorskip("ome_zarr_models")
    from ome_zarr_models.v05 import Image, ImageLabel, Labels

    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    image = Image.from_zarr(zarr.open_group(str(store.path / "img"), mode="r"))
    assert image.labels.label_paths == ["palette", "semseg", "parts", "edges", "saliency"]
    # a reference-only image: its labels stay valid OME-Zarr on their own
    store.write_sample("ref", {k: v for k, v in sample.items() if k != "image"},
                       provenance=ALL_PSEUDO, store_image=False, image_source="x.png",
                       image_sha256="0" * 64)  # fmt: skip
    labels = Labels.from_zarr(zarr.open_group(str(store.path / "ref" / "labels"), mode="r"))
    assert labels.label_paths[0] == "palette"
    ImageLabel.from_zarr(zarr.open_group(str(store.path / "ref/labels/semseg"), mode="r"))


# ------------------------------------------------------------------------- chunking


def test_chunks_whole_image_when_small_tiles_when_large(store, rng):
    assert chunk_shape(375, 500) == (375, 500)
    assert chunk_shape(1024, 1024) == (1024, 1024)
    assert chunk_shape(1025, 1024) == (TILE, TILE)
    assert chunk_shape(3000, 200) == (3000, 200)
    assert chunk_shape(5000, 300) == (TILE, 300)
    h, w = 1100, 1000
    sem = np.full((h, w), IGNORE, np.uint8)
    sem[:10, :10] = 3
    store.write_sample("big", {"semseg": sem, "image": np.zeros((h, w, 3), np.uint8),
                               "edges_prob": np.full((h, w), np.nan, np.float32)},
                       provenance={"semseg": "pseudo"})  # fmt: skip
    img = zarr.open_group(str(store.path / "big"), mode="r")
    assert img["0"].chunks == (1, TILE, TILE)
    assert img["labels/semseg/0"].chunks == (TILE, TILE)
    assert img["maps/scores"].chunks == (1, TILE, TILE)  # the sample's one float map
    codecs = read_json(store.path / "big/labels/semseg/0/zarr.json")["codecs"]
    assert "zstd" in [c["name"] for c in codecs]
    # chunks that hold only the ignore value are not written
    chunk_files = list((store.path / "big/labels/semseg/0/c").rglob("*"))
    assert sum(p.is_file() for p in chunk_files) == 1
    assert np.array_equal(store.read_sample("big").labels["semseg"], sem)


# ---------------------------------------------------------------- complete marker


def _fail_on_call(monkeypatch, n):
    """Make the n-th array write raise, as a crash or a full disk would (new images write
    their arrays through ``writing._write_new_array``, corrections through
    ``writing._write_array``)."""
    from composite_tasking.store import writing

    original, original_new = writing._write_array, writing._write_new_array
    calls = {"n": 0}

    def counted(fn):
        def flaky(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise OSError("disk full (simulated)")
            return fn(*args, **kwargs)

        return flaky

    monkeypatch.setattr(writing, "_write_array", counted(original))
    monkeypatch.setattr(writing, "_write_new_array", counted(original_new))
    return calls


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("h, w", [(H, W), (2 * TILE + 40, 2 * TILE + 8)])  # whole, tiled
def test_new_images_are_written_file_for_file_as_zarr_writes_them(tmp_path, rng, monkeypatch, h, w):
    """write_sample writes a new image as plain files (composite_tasking.store.fast_files); the
    same image written through zarr's API gives the same files, byte for byte (the image
    group's timestamps aside): metadata documents, chunk names, compressed chunks, and no
    file for chunks that hold only the fill value."""
    from composite_tasking.store import fast_files as _zarr_files

    sample = make_sample(rng, h, w)
    sample["saliency_prob"][:] = np.nan  # a map with nothing in it: no chunk file
    sample["normals"][: h // 2] = 0.0
    sample["normals"][0, 0] = -0.0  # zarr compares a float fill of 0 bit for bit
    stores = {}
    for way in ("files", "zarr"):
        if way == "zarr":
            def unsupported(kwargs):
                raise _zarr_files.Unsupported("test: through zarr's API")

            monkeypatch.setattr(_zarr_files, "prepare_array", unsupported)
        store = LabelStore.create(tmp_path / f"{way}.zarr")
        store.write_sample("img", sample, provenance=ALL_PSEUDO, attrs={"rule": "random"})
        stores[way] = store
    fast, ref = (_files(stores[k].path / "img") for k in ("files", "zarr"))
    assert sorted(fast) == sorted(ref)
    assert "maps/scores/zarr.json" in ref and not any(k.startswith("maps/saliency_prob") for k in ref)
    if h > TILE:
        assert "labels/semseg/0/c/2/2" in ref  # edge chunks, padded with the fill value
    for key in ref:
        if key == "zarr.json":
            a, b = json.loads(fast[key]), json.loads(ref[key])
            for doc in (a, b):
                for stamp in ("created", "updated"):
                    doc["attributes"]["composite_tasking"].pop(stamp)
            assert a == b
        else:
            assert fast[key] == ref[key], key
    got = stores["files"].read_sample("img")
    assert np.array_equal(got.labels["normals"], sample["normals"])
    assert np.array_equal(got.maps["edges_prob"], sample["edges_prob"], equal_nan=True)


def test_interrupted_write_is_not_listed_and_is_rewritten(store, sample, monkeypatch):
    store.write_sample("done", sample, provenance=ALL_PSEUDO)
    _fail_on_call(monkeypatch, 3)
    with pytest.raises(OSError, match="simulated"):
        store.write_sample("half", sample, provenance=ALL_PSEUDO)
    monkeypatch.undo()
    assert store.ids() == ["done"]
    assert store.ids(complete_only=False) == ["done", "half"]
    assert not store.is_complete("half") and "half" not in store and len(store) == 1
    assert store.image_attrs("half")["complete"] is False
    with pytest.raises(StoreError, match="incompletely written"):
        store.read_sample("half")
    store.read_sample("half", allow_incomplete=True)

    def arrays(image_id):  # the image's arrays on disk (the failed one was never created)
        return sum(json.loads(p.read_text())["node_type"] == "array"
                   for p in (Path(store.path) / image_id).rglob("zarr.json"))  # fmt: skip

    assert 0 < arrays("half") < arrays("done")
    # the next write of that id rewrites it; no overwrite needed
    store.write_sample("half", sample, provenance=ALL_PSEUDO)
    assert store.ids() == ["done", "half"]
    got = store.read_sample("half")
    assert np.array_equal(got.labels["saliency"], sample["saliency"])


def test_an_overwrite_cut_short_while_deleting_leaves_the_image_incomplete(store, sample, monkeypatch):
    """Replacing a complete image deletes its folder first; a deletion that stops half way
    (Ctrl-C, a file held open on Windows) must not leave the old completion marker on
    what remains: the image is unmarked before anything is deleted."""
    import shutil as shutil_mod

    from composite_tasking.store import label_store as store_mod

    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    real_rmtree = shutil_mod.rmtree

    def half_rmtree(path, *args, **kwargs):
        real_rmtree(Path(path) / "labels")
        raise PermissionError("a chunk file is open elsewhere (simulated)")

    monkeypatch.setattr(store_mod.shutil, "rmtree", half_rmtree)
    with pytest.raises(PermissionError, match="simulated"):
        store.write_sample("img", sample, provenance=ALL_PSEUDO, overwrite=True)
    monkeypatch.undo()
    assert not store.is_complete("img") and store.ids() == []
    store.write_sample("img", sample, provenance=ALL_PSEUDO)  # rewritten without overwrite=True
    assert np.array_equal(store.read_sample("img").labels["semseg"], sample["semseg"])


def test_interrupted_update_leaves_the_image_incomplete(store, sample, monkeypatch):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    fixed = np.where(sample["semseg"] == IGNORE, 0, sample["semseg"]).astype(np.uint8)
    _fail_on_call(monkeypatch, 2)
    with pytest.raises(OSError, match="simulated"):
        store.update_labels("img", {"semseg": fixed, "parts": sample["parts"]})
    monkeypatch.undo()
    assert store.ids() == [] and not store.is_complete("img")
    assert store.image_attrs("img")["update_pending"] == ["semseg", "parts"]
    with pytest.raises(StoreError, match="incompletely written"):
        store.update_labels("img", {"semseg": fixed})
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    assert store.ids() == ["img"]
    assert "update_pending" not in store.image_attrs("img")


# --------------------------------------------------------------------- validation


def _assert_nothing_written(store, image_id):
    assert store.ids(complete_only=False) == []
    assert not (store.path / image_id).exists()


@pytest.mark.parametrize(
    "change, key, problem",
    [
        (lambda s: s.update(semseg=np.full((H, W), 30, np.uint8)), "semseg", "found 30"),
        (lambda s: s.update(parts=np.full((H, W), 7, np.uint8)), "parts", "found 7"),
        (lambda s: s.update(edges=np.full((H, W), 2, np.uint8)), "edges", "found 2"),
        (lambda s: s.update(palette=np.full((H, W), 7, np.uint8)), "palette", "found 7"),
        (lambda s: s.update(semseg=np.zeros((H, W), np.float32)), "semseg", "dtype float32"),
        (lambda s: s.update(semseg=np.zeros((H, W + 1), np.uint8)), "semseg", "shape"),
        (lambda s: s.update(normals=np.zeros((3, H, W), np.float32)), "normals", "(H, W, 3)"),
        (lambda s: s.update(normals=np.zeros((H, W), np.float32)), "normals", "(H, W, 3)"),
        (lambda s: s.update(normals=np.full((H, W, 3), 2.0, np.float32)), "normals",
         "unit length"),
        (lambda s: s.update(normals=np.full((H, W, 3), np.nan, np.float32)), "normals", "NaN"),
        (lambda s: s.update(normals=np.zeros((H, W, 3), np.uint8)), "normals", "dtype uint8"),
        (lambda s: s.update(image=np.zeros((H, W), np.uint8)), "image", "(H, W, 3)"),
        (lambda s: s.update(image=np.zeros((H, W, 3), np.float32)), "image", "uint8"),
        (lambda s: s.update(edges_prob=np.full((H, W), 1.5, np.float32)), "edges_prob",
         "[0, 1]"),
        (lambda s: s.update(semseg_prob=np.zeros((H, W), np.float32)), "semseg_prob",
         "unknown key"),
        (lambda s: s.pop("image"), "image", "store_image=False"),
    ],
)
def test_invalid_samples_name_image_task_problem_and_write_nothing(store, sample, change, key,
                                                                   problem):  # fmt: skip
    change(sample)
    with pytest.raises(StoreError) as err:
        store.write_sample("img_7", sample, provenance=ALL_PSEUDO)
    msg = str(err.value)
    assert "'img_7'" in msg and key in msg and problem in msg, msg
    assert "nothing was written" in msg
    _assert_nothing_written(store, "img_7")


@pytest.mark.parametrize(
    "provenance, problem",
    [
        ({**ALL_PSEUDO, "semseg": "guess"}, "'guess'"),
        ({t: "pseudo" for t in TASK_NAMES if t != "parts"}, "missing for parts"),
        ({**ALL_PSEUDO, "palette": "painted"}, "palette_origin"),
        ({**ALL_PSEUDO, "depth": "pseudo"}, "unknown task 'depth'"),
    ],
)
def test_invalid_provenance_writes_nothing(store, sample, provenance, problem):
    with pytest.raises(StoreError, match=re.escape(problem)) as err:
        store.write_sample("p", sample, provenance=provenance)
    assert "'p'" in str(err.value) and "provenance" in str(err.value)
    _assert_nothing_written(store, "p")


def test_provenance_for_a_task_the_sample_lacks_is_refused(store, sample):
    del sample["normals"]
    with pytest.raises(StoreError, match="no 'normals' map"):
        store.write_sample("p", sample, provenance=ALL_PSEUDO)


def test_attrs_must_be_json_and_not_reserved(store, sample):
    with pytest.raises(StoreError, match="JSON"):
        store.write_sample("a", sample, provenance=ALL_PSEUDO, attrs={"x": np.float32(1)})
    with pytest.raises(StoreError, match="complete"):
        store.write_sample("a", sample, provenance=ALL_PSEUDO, attrs={"complete": True})
    _assert_nothing_written(store, "a")


@pytest.mark.parametrize(
    "image_id",
    ["", "a/b", "..", ".hidden", "labels", "maps", "LABELS", "zarr.json", "a\\b", "a:b",
     " x", "x ", "x.", "con", "NUL.png", "a\nb", "x" * 201, 7, None],
)
def test_bad_image_ids_are_refused_with_the_id_named(store, sample, image_id):
    with pytest.raises(StoreError) as err:
        store.write_sample(image_id, sample, provenance=ALL_PSEUDO)
    assert repr(image_id) in str(err.value)
    assert store.ids(complete_only=False) == []


def test_good_image_ids(store, sample):
    for image_id in ("2008_000123", "IMG 0001.jpg", "a-b_c.d", "été", "0", "c"):
        assert validate_image_id(image_id) == image_id
    store.write_sample("IMG 0001.jpg", sample, provenance=ALL_PSEUDO)
    assert store.ids() == ["IMG 0001.jpg"]


# ---------------------------------------------------------------------- overwriting


def test_a_complete_image_is_not_overwritten_without_overwrite(store, sample, rng):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    other = make_sample(rng)
    with pytest.raises(StoreError, match="already in label store.*overwrite=True"):
        store.write_sample("img", other, provenance=ALL_PSEUDO)
    assert np.array_equal(store.read_sample("img").labels["semseg"], sample["semseg"])
    # a bad sample with overwrite=True leaves the old image intact
    bad = dict(other, semseg=np.full((H, W), 99, np.uint8))
    with pytest.raises(StoreError, match="found 99"):
        store.write_sample("img", bad, provenance=ALL_PSEUDO, overwrite=True)
    assert store.is_complete("img")
    assert np.array_equal(store.read_sample("img").labels["semseg"], sample["semseg"])
    # and a good one replaces it, dropping what the new sample does not hold
    del other["parts"]
    store.write_sample("img", other, provenance={t: "pseudo" for t in TASK_NAMES
                                                 if t != "parts"}, overwrite=True)  # fmt: skip
    got = store.read_sample("img")
    assert np.array_equal(got.labels["semseg"], other["semseg"])
    assert "parts" not in got.labels and "parts" not in got.provenance
    assert not (store.path / "img/labels/parts").exists()


# ---------------------------------------------------------------------- corrections


def test_update_labels_marks_corrected_and_keeps_the_rest(store, sample):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    before = store.image_attrs("img")
    fixed = sample["semseg"].copy()
    fixed[:, :5] = 15  # a person paints "person" beyond the palette's semseg region
    store.update_labels("img", {"semseg": fixed}, provenance={"semseg": "corrected"})
    got = store.read_sample("img")
    assert np.array_equal(got.labels["semseg"], fixed)
    assert got.provenance["semseg"] == "corrected"
    assert all(got.provenance[t] == "pseudo" for t in TASK_NAMES if t != "semseg")
    for task in ("parts", "edges", "saliency"):
        assert np.array_equal(got.labels[task], sample[task])
    assert got.labels["normals"].tobytes() == sample["normals"].tobytes()
    assert np.array_equal(got.image, sample["image"])
    assert np.array_equal(got.palette, sample["palette"])
    assert got.maps["edges_prob"].tobytes() == sample["edges_prob"].tobytes()
    assert got.attrs["updated"] >= before["updated"]
    assert got.attrs["created"] == before["created"]
    assert got.attrs["complete"] is True and "update_pending" not in got.attrs
    # a correction counts wherever it is not ignore, not only where the palette asked
    assert np.array_equal(got.valid["semseg"], fixed != IGNORE)
    assert got.valid["semseg"][:, :5].all()


def test_update_labels_defaults_to_corrected_and_can_add_a_task_and_the_palette(store, sample):
    partial = {k: v for k, v in sample.items() if k not in ("parts", "normals")}
    store.write_sample("img", partial,
                       provenance={t: "pseudo" for t in ("semseg", "edges", "saliency")})
    new_palette = np.full((H, W), get_task("parts").palette_value, np.uint8)
    parts = np.zeros((H, W), np.uint8)
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 2] = 1.0
    store.update_labels("img", {"parts": parts, "normals": normals, "palette": new_palette},
                        attrs={"palette_origin": "painted"})  # fmt: skip
    got = store.read_sample("img")
    assert got.attrs["palette_origin"] == "painted"
    assert got.provenance["parts"] == "corrected" and got.provenance["normals"] == "corrected"
    assert list(got.labels) == list(TASK_NAMES)
    assert np.array_equal(got.palette, new_palette)
    assert got.labels["normals"].tobytes() == normals.tobytes()
    meta = read_json(store.path / "img/labels/zarr.json")["attributes"]["ome"]
    assert meta["labels"] == ["palette", "semseg", "parts", "edges", "saliency"]


def test_update_labels_validates_first(store, sample):
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    with pytest.raises(StoreError, match=r"'img'.*semseg.*shape"):
        store.update_labels("img", {"semseg": np.zeros((H + 1, W), np.uint8)})
    with pytest.raises(StoreError, match=r"'img'.*parts.*found 9"):
        store.update_labels("img", {"semseg": sample["semseg"],
                                    "parts": np.full((H, W), 9, np.uint8)})  # fmt: skip
    with pytest.raises(StoreError, match="unknown key"):
        store.update_labels("img", {"image": sample["image"]})
    with pytest.raises(StoreError, match="not in label store"):
        store.update_labels("nope", {"semseg": sample["semseg"]})
    with pytest.raises(StoreError, match="set by the store"):
        store.update_labels("img", {"semseg": sample["semseg"]}, attrs={"provenance": {}})
    with pytest.raises(StoreError, match="nothing to update"):
        store.update_labels("img", {})
    got = store.read_sample("img")
    assert got.provenance == ALL_PSEUDO and got.attrs["complete"] is True
    assert np.array_equal(got.labels["parts"], sample["parts"])


# ------------------------------------------------------------- image as a reference


def test_store_image_false_keeps_only_the_reference_and_sha256(store, sample, tmp_path):
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"not really a jpeg, but bytes to hash")
    store.write_sample("ref", sample, provenance=ALL_PSEUDO, store_image=False,
                       image_source=src)  # fmt: skip
    group = store.path / "ref"
    assert not (group / "0").exists()
    meta = read_json(group / "zarr.json")["attributes"]
    assert "ome" not in meta  # not an OME image without pixels
    info = meta["composite_tasking"]["image"]
    st = src.stat()  # its size and mtime beside the sha256: a later check reads it only when they change
    assert info == {"stored": False, "path": None, "source": str(src),
                    "sha256": hashlib.sha256(src.read_bytes()).hexdigest(),
                    "sha256_of": "file", "size": st.st_size, "mtime_ns": st.st_mtime_ns}  # fmt: skip
    il = read_json(group / "labels/semseg/zarr.json")["attributes"]["ome"]["image-label"]
    assert "source" not in il
    got = store.read_sample("ref")
    assert got.image is None
    assert got.image_source == str(src) and got.image_sha256 == info["sha256"]
    assert np.array_equal(got.labels["semseg"], sample["semseg"])

    # a given sha256 is kept as given; no image needed
    no_image = {k: v for k, v in sample.items() if k != "image"}
    store.write_sample("ref2", no_image, provenance=ALL_PSEUDO, store_image=False,
                       image_source="elsewhere/photo.png", image_sha256="AB" * 32)  # fmt: skip
    assert store.read_sample("ref2").image_sha256 == "ab" * 32
    assert "size" not in store.image_attrs("ref2")["image"]  # not known: not recorded
    # given with the stat of the bytes hashed: recorded as given
    store.write_sample("ref3", no_image, provenance=ALL_PSEUDO, store_image=False, image_source="x.png",
                       image_sha256="cd" * 32, image_stat={"size": 7, "mtime_ns": 123})  # fmt: skip
    assert {k: store.image_attrs("ref3")["image"][k] for k in ("size", "mtime_ns")} == {"size": 7, "mtime_ns": 123}
    with pytest.raises(StoreError, match="image_stat"):
        store.write_sample("ref4", no_image, provenance=ALL_PSEUDO, store_image=False, image_source="x.png",
                           image_sha256="cd" * 32, image_stat={"size": -1})  # fmt: skip


def test_an_image_by_reference_is_read_only_while_its_file_is_the_one_labelled(store, sample, tmp_path):
    """image_pixels hashes the bytes it decodes; source_problem reads the file only when
    its size or mtime changed (a store written before them: always)."""
    import os

    from PIL import Image

    from composite_tasking.images import ImageReadError

    src = tmp_path / "photo.png"
    Image.fromarray(sample["image"]).save(src)
    store.write_sample("ref", sample, provenance=ALL_PSEUDO, store_image=False, image_source=src)
    got = store.read_sample("ref")
    assert np.array_equal(store.image_pixels(got), sample["image"])
    assert store.source_problem("ref") is None
    os.utime(src, ns=(1, 1))  # touched, same bytes: hashed, unchanged
    assert store.source_problem("ref") is None and np.array_equal(store.image_pixels(got), sample["image"])
    Image.fromarray(255 - sample["image"]).save(src)  # same size, another picture
    changed = "changed since the image was labelled (its sha256 is not the one recorded)"
    assert store.source_problem("ref") == (str(src), changed)
    with pytest.raises(ImageReadError, match="changed since the image was labelled") as e:
        store.image_pixels(got)
    assert e.value.path == str(src)
    src.unlink()
    assert store.source_problem("ref") == (str(src), "is missing")
    # recorded of the pixels (the file was not there to hash): the decoded pixels compared, and their size
    store.write_sample("px", sample, provenance=ALL_PSEUDO, store_image=False, image_source=src)
    assert store.image_attrs("px")["image"]["sha256_of"] == "pixels"
    Image.fromarray(sample["image"]).save(src)
    assert np.array_equal(store.image_pixels(store.read_sample("px")), sample["image"])
    Image.fromarray(sample["image"][:, :-4]).save(src)
    with pytest.raises(ImageReadError, match="changed since the image was labelled"):
        store.image_pixels(store.read_sample("px"))
    assert store.source_problem("ref") is not None  # its bytes are still others
    store.write_sample("own", sample, provenance=ALL_PSEUDO)  # its pixels stored: no file to check
    assert store.source_problem("own") is None


def test_store_image_false_needs_a_source_and_a_hash(store, sample):
    no_image = {k: v for k, v in sample.items() if k != "image"}
    with pytest.raises(StoreError, match="image_source"):
        store.write_sample("r", no_image, provenance=ALL_PSEUDO, store_image=False)
    with pytest.raises(StoreError, match="image_sha256"):
        store.write_sample("r", no_image, provenance=ALL_PSEUDO, store_image=False,
                           image_source="missing.png")  # fmt: skip
    with pytest.raises(StoreError, match="64 hex"):
        store.write_sample("r", no_image, provenance=ALL_PSEUDO, store_image=False,
                           image_source="missing.png", image_sha256="abc")  # fmt: skip
    _assert_nothing_written(store, "r")
    # the pixels, when given, are hashed instead of a missing file
    store.write_sample("r", sample, provenance=ALL_PSEUDO, store_image=False,
                       image_source="missing.png")  # fmt: skip
    attrs = store.image_attrs("r")["image"]
    assert attrs["sha256_of"] == "pixels"
    assert attrs["sha256"] == hashlib.sha256(sample["image"].tobytes()).hexdigest()


# -------------------------------------------------------------------- valid masks


def test_valid_masks_follow_the_palette_for_pseudo_labels_only(store, sample):
    palette = sample["palette"]
    # labels defined beyond the palette: only the palette's region counts for pseudo labels
    sample["semseg"] = np.full((H, W), 4, np.uint8)
    sample["parts"] = np.full((H, W), 2, np.uint8)
    normals = np.zeros((H, W, 3), np.float32)
    normals[..., 0] = 1.0
    normals[0] = 0.0  # first row invalid
    sample["normals"] = normals
    prov = {**ALL_PSEUDO, "parts": "ground-truth"}
    store.write_sample("img", sample, provenance=prov)
    got = store.read_sample("img")
    for task in ("semseg", "edges", "saliency"):
        expected = (got.labels[task] != IGNORE) & (palette == get_task(task).palette_value)
        assert np.array_equal(got.valid[task], expected), task
    assert got.valid["semseg"].sum() == (palette == 1).sum()
    assert got.valid["parts"].all()  # ground truth: everywhere it is not ignore
    expected_n = (palette == get_task("normals").palette_value)
    expected_n[0] = False
    assert np.array_equal(got.valid["normals"], expected_n)
    assert all(v.dtype == bool and v.shape == (H, W) for v in got.valid.values())


def test_valid_masks_without_a_palette(store, sample):
    del sample["palette"]
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    got = store.read_sample("img")
    assert got.palette is None
    assert np.array_equal(got.valid["semseg"], sample["semseg"] != IGNORE)
    assert np.array_equal(got.valid["normals"], np.any(sample["normals"] != 0, axis=-1))


# -------------------------------------------------------------------------- modes


def test_modes(tmp_path, sample):
    path = tmp_path / "s.zarr"
    with pytest.raises(StoreError, match="no label store"):
        LabelStore(path)
    with pytest.raises(StoreError, match="no label store"):
        LabelStore(path, "r+")
    with pytest.raises(StoreError, match="unknown mode"):
        LabelStore(path, "x")
    store = LabelStore(path, "a", attrs={"rule": "R2"})
    assert store.attrs["rule"] == "R2"
    store.write_sample("img", sample, provenance=ALL_PSEUDO)
    # "a" on an existing store keeps it (attrs only apply at creation)
    again = LabelStore(path, "a", attrs={"rule": "R3"})
    assert again.ids() == ["img"] and again.attrs["rule"] == "R2"
    # read-only
    ro = LabelStore(path)
    with pytest.raises(StoreError, match="read-only"):
        ro.write_sample("x", sample, provenance=ALL_PSEUDO)
    with pytest.raises(StoreError, match="read-only"):
        ro.update_labels("img", {"semseg": sample["semseg"]})
    # "w" refuses a store with images unless overwrite=True
    with pytest.raises(StoreError, match="holds images"):
        LabelStore.create(path)
    assert LabelStore(path).ids() == ["img"]
    fresh = LabelStore.create(path, attrs={"rule": "R3"}, overwrite=True)
    assert fresh.ids() == [] and fresh.attrs["rule"] == "R3"
    # an empty store may be re-created without overwrite
    LabelStore.create(path, attrs={"rule": "mosaic"})
    assert LabelStore(path, "r+").attrs["rule"] == "mosaic"
    # store attributes can be added later, but not the store's own
    rw = LabelStore(path, "r+")
    rw.update_attrs({"note": "hi"})
    assert LabelStore(path).attrs["note"] == "hi"
    with pytest.raises(StoreError, match="format"):
        rw.update_attrs({"format": "other"})


def test_paths_that_are_not_label_stores_are_never_deleted(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "keep.jpg").write_bytes(b"x")
    for mode in ("r", "a", "w"):
        with pytest.raises(StoreError, match="not a label store"):
            LabelStore(folder, mode, overwrite=True)
    assert (folder / "keep.jpg").exists()
    other = tmp_path / "other.zarr"
    zarr.open_group(str(other), mode="w", zarr_format=3).create_group("g")
    with pytest.raises(StoreError, match="not a label store"):
        LabelStore.create(other, overwrite=True)
    assert (other / "g").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert LabelStore(empty, "a").ids() == []


def test_newer_format_version_is_refused(store):
    meta = read_json(store.path / "zarr.json")
    meta["attributes"]["composite_tasking"]["format_version"] = 99
    (store.path / "zarr.json").write_text(json.dumps(meta), encoding="utf-8")
    with pytest.raises(StoreError, match="newer"):
        LabelStore(store.path)


def test_remove(store, sample):
    store.write_sample("a", sample, provenance=ALL_PSEUDO)
    store.write_sample("b", sample, provenance=ALL_PSEUDO)
    store.remove("a")
    assert store.ids() == ["b"] and not (store.path / "a").exists()
    with pytest.raises(StoreError, match="not in label store"):
        store.remove("a")
    with pytest.raises(StoreError, match="not in label store"):
        store.read_sample("a")


def test_the_core_store_imports_no_gui(tmp_path):
    import subprocess
    import sys

    code = ("import sys, composite_tasking.store; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt5', "
            "'PyQt6', 'PySide2', 'PySide6')]; print(bad); assert not bad")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
