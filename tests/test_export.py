"""`ctn export`: a label store's labels as PASCAL-MT, PNG and TIFF files, read back."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import zarr
from PIL import Image

from composite_tasking.datasets import PascalMT, PascalMTDataset, decode_normals
from composite_tasking.export import MANIFEST, ExportError, export_store, voc_colormap
from composite_tasking.store import LabelStore, StoreError
from composite_tasking.synthetic.export import write_synthetic
from composite_tasking.tasks import IGNORE, TASK_NAMES, palette_value

H, W = 32, 40
CLASS_TASKS = ("semseg", "parts", "edges", "saliency")


def _unit_normals(rng, shape=(H, W)):
    n = rng.normal(size=(*shape, 3)).astype(np.float32)
    n[..., 2] = np.abs(n[..., 2]) + 0.2
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def synth_store(tmp_path_factory):
    """What `ctn synth` writes: every task of every scene is ground truth."""
    return write_synthetic(tmp_path_factory.mktemp("synth"), 3, (H, W), seed=3).store


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """A store of every provenance, written and edited through the store's public API.

    - ``mixed``: semseg pseudo (its palette asks for it on the left half only), parts
      corrected (the correction mask: one block), edges reviewed, saliency ground truth
      (with ignored pixels), normals pseudo (asked for on the right half);
    - ``pseudo``: pseudo-labels only;
    - ``jpeg``: ground-truth semseg, its image decoded from a JPEG file it names;
    - ``gone``: ground truth, its image stored by reference to a file since deleted;
    - ``cut``: an interrupted write (not complete).
    """
    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(0)
    store = LabelStore(root / "labels.zarr", mode="w")
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    palette = np.full((H, W), palette_value("semseg"), np.uint8)
    palette[:, W // 2:] = palette_value("normals")
    saliency = rng.integers(0, 2, (H, W)).astype(np.uint8)
    saliency[:4] = IGNORE
    parts = rng.integers(0, 7, (H, W)).astype(np.uint8)
    sample = {"image": image, "palette": palette,
              "semseg": rng.integers(0, 21, (H, W)).astype(np.uint8), "parts": parts,
              "edges": rng.integers(0, 2, (H, W)).astype(np.uint8), "saliency": saliency,
              "normals": _unit_normals(rng)}  # fmt: skip
    prov = {"semseg": "pseudo", "parts": "pseudo", "edges": "pseudo", "saliency": "ground-truth",
            "normals": "pseudo"}  # fmt: skip
    store.write_sample("mixed", sample, provenance=prov)
    fixed = parts.copy()
    fixed[10:20, 5:15] = (parts[10:20, 5:15] + 1) % 7  # every pixel of the block changes
    store.correct("mixed", {"parts": fixed})
    store.mark_reviewed("mixed", ["edges"])

    store.write_sample("pseudo", {"image": image, "palette": np.ones((H, W), np.uint8),
                                  "semseg": np.zeros((H, W), np.uint8)}, provenance={"semseg": "pseudo"})  # fmt: skip

    jpg = root / "photo.jpg"
    Image.fromarray(image).save(jpg, quality=90)
    decoded = np.asarray(Image.open(jpg).convert("RGB"))
    store.write_sample("jpeg", {"image": decoded, "semseg": np.full((H, W), 15, np.uint8)},
                       provenance={"semseg": "ground-truth"}, image_source=str(jpg))  # fmt: skip

    gone = root / "gone.png"
    Image.fromarray(image).save(gone)
    store.write_sample("gone", {"saliency": saliency}, provenance={"saliency": "ground-truth"},
                       store_image=False, image_source=str(gone))  # fmt: skip
    gone.unlink()

    store.write_sample("cut", {"image": image, "semseg": np.zeros((H, W), np.uint8)},
                       provenance={"semseg": "ground-truth"})  # fmt: skip
    group = zarr.open_group(str(root / "labels.zarr" / "cut"), mode="r+", zarr_format=3)
    attrs = group.attrs.asdict()
    attrs["composite_tasking"]["complete"] = False  # as an interrupted write leaves it
    group.attrs.put(attrs)
    return {"store": store, "root": root, "sample": sample, "fixed": fixed, "jpg": jpg}


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


# --------------------------------------------------------------------------- round trip


def test_pascal_mt_export_of_a_synth_store_loads_back_array_for_array(synth_store, tmp_path):
    from composite_tasking.training.recipe import parse_data_spec

    out = tmp_path / "pascal"
    summary = export_store(synth_store, out, format="pascal-mt", select="all")
    store = LabelStore(synth_store)
    assert summary.images == store.ids() and summary.ok
    # a task counts where it has a labelled pixel (parts: where the scene has a person)
    assert summary.tasks == {t: sum(store.read_sample(i).valid[t].any() for i in store.ids()) for t in TASK_NAMES}
    assert (out / "ImageSets/Context/train.txt").read_text().split() == store.ids()

    spec = parse_data_spec(f"pascal-mt:{out}")  # what ctn train / finetune / evaluate take
    pascal = PascalMT(spec.root, spec.split)  # every task, the default normals_mask="nyu"
    items = PascalMTDataset(spec.root, spec.split, rule="R2")
    for k, image_id in enumerate(store.ids()):
        stored = store.read_sample(image_id)
        loaded = pascal.load(image_id)
        item = items[k]
        assert item["id"] == image_id
        for task in CLASS_TASKS:
            assert np.array_equal(loaded[task], stored.labels[task]), (image_id, task)
            assert np.array_equal(item[task].numpy(), stored.labels[task]), (image_id, task)
        n0, n1 = stored.labels["normals"], loaded["normals"]
        valid = np.any(n0 != 0, axis=-1)
        assert np.array_equal(np.any(n1 != 0, axis=-1), valid)
        # 8 bits per component, renormalised by the loader: within 2/255 per component
        assert np.abs(n1 - n0)[valid].max() <= 2 / 255
        assert np.abs(loaded["image"].astype(int) - stored.image).mean() < 4  # JPEG, quality 95


def test_checked_keeps_only_what_a_person_checked_and_pascal_mt_reads_it(mixed, tmp_path):
    out = tmp_path / "checked"
    summary = export_store(mixed["store"], out, format="pascal-mt")  # select="checked"
    assert summary.images == ["jpeg", "mixed"]
    assert summary.unselected == ["pseudo"]  # pseudo-labels only
    assert summary.incomplete == ["cut"]
    assert [i for i, _ in summary.skipped] == ["gone"] and "missing" in summary.skipped[0][1]
    assert summary.tasks == {"semseg": 1, "parts": 1, "edges": 1, "saliency": 1}

    s = mixed["sample"]
    loaded = PascalMT(out, "train").load("mixed")
    block = np.zeros((H, W), bool)
    block[10:20, 5:15] = True
    # the corrected task: its corrected pixels, every other pixel ignore
    assert np.array_equal(loaded["parts"], np.where(block, mixed["fixed"], IGNORE))
    assert np.array_equal(loaded["edges"], s["edges"])  # reviewed: whole
    assert np.array_equal(loaded["saliency"], s["saliency"])  # ground truth, its ignore kept
    # pseudo tasks are not exported: all-ignore files, since PASCAL-MT needs every file
    assert (loaded["semseg"] == IGNORE).all() and not loaded["normals"].any()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["images"]["mixed"]["tasks"] == {"parts": "corrected", "edges": "reviewed",
                                                    "saliency": "ground-truth"}  # fmt: skip
    assert manifest["images"]["mixed"]["pixels"]["parts"] == block.sum()
    # an image whose JPEG source decodes to its pixels is copied, not re-encoded
    assert (out / "JPEGImages/jpeg.jpg").read_bytes() == mixed["jpg"].read_bytes()
    assert manifest["images"]["jpeg"]["image"] == "copied"


@pytest.mark.parametrize(("select", "expected"), [
    ("reviewed", {"edges": "all", "saliency": "all"}),
    ("corrected", {"parts": "all", "edges": "all", "saliency": "all"}),
    ("all", {"semseg": "left", "parts": "all", "edges": "all", "saliency": "all", "normals": "right"}),
])  # fmt: skip
def test_other_selections(mixed, tmp_path, select, expected):
    out = tmp_path / select
    summary = export_store(mixed["store"], out, format="png", select=select, tasks=None)
    assert "mixed" in summary.images and ("pseudo" in summary.images) == (select == "all")
    s = {**mixed["sample"], "parts": mixed["fixed"]}
    half = {"all": np.ones((H, W), bool), "left": np.zeros((H, W), bool)}
    half["left"][:, : W // 2] = True
    half["right"] = ~half["left"]
    assert sorted(p.parent.name for p in out.glob("*/mixed.png")) == sorted(["images", *expected])
    for task, where in expected.items():
        if task == "normals":
            rgb = _png(out / "normals/mixed.png")
            assert not rgb[half["left"]].any() and rgb[half["right"]].all()
            continue
        want = np.where(half[where], s[task], IGNORE)
        assert np.array_equal(_png(out / task / "mixed.png"), want), task


# --------------------------------------------------------------------------- encodings


def test_png_color_keeps_values_and_normals_round_trip_within_one_step(synth_store, tmp_path):
    store = LabelStore(synth_store)
    image_id = store.ids()[0]
    stored = store.read_sample(image_id)
    plain = export_store(store, tmp_path / "plain", format="png", select="all")
    color = export_store(store, tmp_path / "color", format="png", select="all", color=True)
    assert plain.tasks == color.tasks
    voc = voc_colormap()
    assert voc[15].tolist() == [192, 128, 128] and voc[255].tolist() == [224, 224, 192]  # person, void
    for task in CLASS_TASKS:
        p = Image.open(tmp_path / "plain" / task / f"{image_id}.png")
        c = Image.open(tmp_path / "color" / task / f"{image_id}.png")
        assert p.mode == "L" and c.mode == "P"
        assert np.array_equal(np.asarray(p), stored.labels[task])
        assert np.array_equal(np.asarray(c), stored.labels[task])  # the index values
        lut = np.asarray(c.getpalette(), np.uint8).reshape(-1, 3)
        if task in ("semseg", "parts"):
            assert np.array_equal(lut[:256], voc)
        else:
            assert lut[0].tolist() == [0, 0, 0] and lut[1].tolist() == [255, 255, 255]
        assert np.array_equal(np.asarray(c.convert("RGB")), lut[stored.labels[task]])
    assert np.array_equal(_png(tmp_path / "plain/images" / f"{image_id}.png"), stored.image)  # lossless

    rgb = _png(tmp_path / "plain/normals" / f"{image_id}.png")
    n = stored.labels["normals"]
    valid = np.any(n != 0, axis=-1)
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3)
    assert not rgb[~valid].any()
    raw = rgb.astype(np.float32) / 255 * 2 - 1  # PASCAL-MT's decoding
    assert np.abs(raw - n)[valid].max() <= 1 / 255 + 1e-6
    assert np.abs(decode_normals(rgb) - n)[valid].max() <= 2 / 255


def test_tiff_is_single_channel_uint8_and_float32_normals(synth_store, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    summary = export_store(synth_store, tmp_path / "t", format="tiff", select="all", tasks="semseg,normals")
    assert summary.tasks == {"semseg": 3, "normals": 3}
    stored = LabelStore(synth_store).read_sample(summary.images[0])
    sem = Image.open(tmp_path / "t/semseg" / f"{summary.images[0]}.tif")
    assert sem.mode == "L" and np.array_equal(np.asarray(sem), stored.labels["semseg"])
    normals = tifffile.imread(tmp_path / "t/normals" / f"{summary.images[0]}.tif")
    assert normals.dtype == np.float32 and np.array_equal(normals, stored.labels["normals"])
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == [MANIFEST, "images", "normals", "semseg"]


# ----------------------------------------------------------------------------- refusals


def test_refusals_write_nothing(synth_store, mixed, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=f"{out}.*not empty.*--overwrite"):
        export_store(synth_store, out, format="png")
    # --overwrite replaces an earlier export only, never a folder of other files
    with pytest.raises(ExportError, match=f"{out} is not empty and is not an earlier export"):
        export_store(synth_store, out, format="png", overwrite=True)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    # a path that is not a store; an export inside the store; nothing selected
    with pytest.raises(StoreError, match="not a label store"):
        export_store(out, tmp_path / "a", format="png")
    with pytest.raises(ExportError, match="label store"):
        export_store(synth_store, synth_store / "export", format="png")
    with pytest.raises(ExportError, match="nothing to export.*--select all"):
        export_store(mixed["store"], tmp_path / "b", format="png", tasks=["normals"])
    with pytest.raises(ExportError, match="unknown task"):
        export_store(synth_store, tmp_path / "c", format="png", tasks="semseg,colour")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no hidden leftovers either

    earlier = tmp_path / "earlier"
    export_store(synth_store, earlier, format="png", select="all", tasks="semseg")
    summary = export_store(synth_store, earlier, format="png", select="all", tasks="edges", overwrite=True)
    assert summary.tasks == {"edges": 3}
    assert sorted(p.name for p in earlier.iterdir()) == [MANIFEST, "edges", "images"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier", "out"]


def test_an_error_while_writing_leaves_nothing(synth_store, tmp_path, monkeypatch):
    import composite_tasking.export as ex

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ex, "_write_normals", full_disk)
    with pytest.raises(OSError, match="No space"):
        export_store(synth_store, tmp_path / "deep/er/out", format="png", select="all")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------- CLI


def test_cli_export_exits_0_and_prints_the_summary(synth_store, mixed, tmp_path):
    def ctn_export(*args):
        return subprocess.run([sys.executable, "-m", "composite_tasking.cli", "export", *map(str, args)],
                              check=False, capture_output=True, text=True, timeout=120)  # fmt: skip

    res = ctn_export(synth_store, tmp_path / "o", "--format", "pascal-mt", "--select", "all", "--color")
    assert res.returncode == 0, res.stderr
    assert "exported 3 image(s)" in res.stdout and "semseg 3" in res.stdout and "skipped 0" in res.stdout
    assert Image.open(next((tmp_path / "o/semseg/VOC12").iterdir())).mode == "P"
    # a skipped image (its file is gone): exit 1, named with the reason
    res = ctn_export(mixed["store"].path, tmp_path / "p", "--format", "png")
    assert res.returncode == 1, res.stderr
    assert "skipped 1" in res.stdout and "skipped gone:" in res.stdout and "1 incompletely written" in res.stdout
    res = ctn_export(synth_store, tmp_path / "p", "--format", "png")
    assert res.returncode == 2 and f"{tmp_path / 'p'} exists and is not empty" in res.stderr
