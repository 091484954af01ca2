"""PASCAL-MT loader (on a fixture written here), joint augmentation, training data sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from composite_tasking.augment import (
    Brightness,
    Compose,
    Contrast,
    Gamma,
    GaussianBlur,
    GaussianNoise,
    HFlip,
    HueSaturation,
    RandomCrop,
    RandomScale,
    Sharpen,
    default_augment,
)
from composite_tasking.datasets import (
    DatasetError,
    DatasetNotFoundError,
    PascalMT,
    PascalMTDataset,
    SyntheticDataset,
    edges_from_labelmap,
    prepare_item,
)
from composite_tasking.palette import load_rule
from composite_tasking.tasks import IGNORE, SEMSEG_CLASSES, TASK_NAMES, palette_value

sio = pytest.importorskip("scipy.io")

H, W = 40, 48  # not square, to catch transposed axes
PERSON = SEMSEG_CLASSES.index("person")
DOG = SEMSEG_CLASSES.index("dog")
# PASCAL-Context (459) labels used in the LabelMap fixture
CTX_SKY, CTX_PERSON, CTX_TABLE = 360, 284, 397  # sky: no normals in the NYU mask

# PASCAL-Part parts of the fixture person: (name, rows, cols, expected 6-part id).
# Expected ids written out here, independently of the loader's table:
# 1 head, 2 torso, 3 upper arm, 4 lower arm (+hand), 5 upper leg, 6 lower leg (+foot).
PARTS = [
    ("hair", (20, 22), (2, 6), 1), ("head", (22, 25), (2, 6), 1), ("lear", (22, 23), (1, 2), 1),
    ("rebrow", (22, 23), (6, 7), 1), ("neck", (25, 26), (3, 5), 2), ("torso", (26, 32), (2, 8), 2),
    ("luarm", (26, 29), (8, 10), 3), ("ruarm", (26, 29), (0, 2), 3),
    ("llarm", (29, 31), (8, 10), 4), ("rlarm", (29, 31), (0, 2), 4),
    ("lhand", (31, 32), (8, 10), 4), ("rhand", (31, 32), (0, 2), 4),
    ("luleg", (32, 35), (5, 8), 5), ("ruleg", (32, 35), (2, 5), 5),
    ("llleg", (35, 38), (5, 8), 6), ("rlleg", (35, 38), (2, 5), 6),
    ("lfoot", (38, 39), (5, 8), 6), ("rfoot", (38, 39), (2, 5), 6),
]  # fmt: skip
PERSON1 = ((20, 40), (0, 12))  # person with parts
PERSON2 = ((20, 40), (14, 18))  # person nobody annotated with parts
DOG_BOX = ((5, 15), (30, 45))


def _box(rows, cols, shape=(H, W)):
    m = np.zeros(shape, np.uint8)
    m[rows[0] : rows[1], cols[0] : cols[1]] = 1
    return m


def _write_parts_mat(path, objects):
    """PASCAL-Part layout: anno.imname, anno.objects(i).{class, class_ind, mask, parts(j).
    {part_name, mask}} -- MATLAB struct arrays written through numpy record arrays."""
    objs = np.empty((1, len(objects)), dtype=[("class", "O"), ("class_ind", "O"),
                                              ("mask", "O"), ("parts", "O")])  # fmt: skip
    for i, (cls, ind, mask, parts) in enumerate(objects):
        if parts:
            arr = np.empty((1, len(parts)), dtype=[("part_name", "O"), ("mask", "O")])
            for j, (name, pmask) in enumerate(parts):
                arr[0, j] = (name, pmask)
        else:
            arr = np.zeros((0, 0))
        objs[0, i] = (cls, np.array([[ind]], dtype=np.uint8), mask, arr)
    anno = np.empty((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (path.stem + ".jpg", objs)
    sio.savemat(str(path), {"anno": anno})


def _png_index(path, arr):
    img = Image.frombytes("P", (arr.shape[1], arr.shape[0]), np.ascontiguousarray(arr).tobytes())
    img.putpalette([v for i in range(256) for v in (i, (i * 7) % 256, (i * 13) % 256)])
    img.save(path)


def _encode_normals(n):
    return np.clip(np.round((n + 1) / 2 * 255), 0, 255).astype(np.uint8)


def _fixture_truth():
    """The fixture's ground truth for image A (the one with persons)."""
    sem = np.zeros((H, W), np.uint8)
    sem[_box(*PERSON1).astype(bool)] = PERSON
    sem[_box(*PERSON2).astype(bool)] = PERSON
    sem[_box(*DOG_BOX).astype(bool)] = DOG
    sem[0, :] = IGNORE  # a void line as in VOC
    parts = np.zeros((H, W), np.uint8)
    for _, rows, cols, pid in PARTS:
        parts[rows[0] : rows[1], cols[0] : cols[1]] = pid
    parts[_box(*PERSON2).astype(bool)] = IGNORE
    labelmap = np.full((H, W), CTX_SKY, np.uint16)
    labelmap[20:, :24] = CTX_PERSON
    labelmap[20:, 24:] = CTX_TABLE
    # normals: unit vectors varying over the image, a (0,0,0) pixel = invalid
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    n = np.stack([np.sin(xx / W * 2) * 0.6, np.cos(yy / H * 3) * 0.5, np.ones_like(xx)], -1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    rgb = _encode_normals(n)
    rgb[30, 30] = 0
    sal = np.zeros((H, W), np.uint8)
    sal[10:20, 10:20] = 200
    sal[10, 10:14] = [127, 128, 255, 1]
    return {"semseg": sem, "parts": parts, "labelmap": labelmap, "normals": n,
            "normals_rgb": rgb, "saliency_png": sal}  # fmt: skip


@pytest.fixture
def pascal_root(tmp_path):
    """A tiny PASCAL-MT in the literature's layout: train = [A, B], val = [C]."""
    root = tmp_path / "PASCAL_MT"
    for d in ("JPEGImages", "ImageSets/Context", "semseg/VOC12", "semseg/pascal-context",
              "human_parts", "normals_distill", "sal_distill", "pascal-context/trainval"):
        (root / d).mkdir(parents=True)
    (root / "ImageSets/Context/train.txt").write_text("2008_000001\n2008_000002\n")
    (root / "ImageSets/Context/val.txt").write_text("2008_000003\n")
    t = _fixture_truth()
    rng = np.random.default_rng(0)
    for k, image_id in enumerate(("2008_000001", "2008_000002", "2008_000003")):
        img = np.full((H, W, 3), 60 + 40 * k, np.uint8)
        img[10:30, 10:30] = (200, 40, 40)
        Image.fromarray(img).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
        # A's semseg in VOC12, the others in pascal-context (the fallback)
        folder = "semseg/VOC12" if k == 0 else "semseg/pascal-context"
        sem = t["semseg"] if k == 0 else np.where(_box(*DOG_BOX).astype(bool), DOG, 0)
        _png_index(root / folder / f"{image_id}.png", sem.astype(np.uint8))
        if k == 0:
            parts = [(name, _box(rows, cols)) for name, rows, cols, _ in PARTS]
            objects = [("person", PERSON, _box(*PERSON1), parts),
                       ("dog", DOG, _box(*DOG_BOX), []),
                       ("person", PERSON, _box(*PERSON2), [])]  # fmt: skip
        else:
            objects = [("dog", DOG, _box(*DOG_BOX), [])]
        _write_parts_mat(root / "human_parts" / f"{image_id}.mat", objects)
        Image.fromarray(t["normals_rgb"]).save(root / "normals_distill" / f"{image_id}.png")
        Image.fromarray(t["saliency_png"]).save(root / "sal_distill" / f"{image_id}.png")
        lm = t["labelmap"] if k != 2 else rng.integers(1, 4, (H, W)).astype(np.uint16)
        sio.savemat(str(root / "pascal-context/trainval" / f"{image_id}.mat"), {"LabelMap": lm})
    return root


# ------------------------------------------------------------------------ PASCAL-MT


def test_pascal_mt_loads_every_task(pascal_root):
    ds = PascalMT(pascal_root, "train")
    assert len(ds) == 2 and ds.ids == ["2008_000001", "2008_000002"]
    t = _fixture_truth()
    s = ds[0]
    assert s["image"].shape == (H, W, 3) and s["image"].dtype == np.uint8
    assert abs(int(s["image"][20, 20, 0]) - 200) < 12  # JPEG, nearly exact
    np.testing.assert_array_equal(s["semseg"], t["semseg"])
    assert s["semseg"].dtype == np.uint8

    # parts: left/right merged, hands -> lower arm, feet -> lower leg, neck -> torso
    parts = s["parts"]
    assert parts.dtype == np.uint8
    np.testing.assert_array_equal(parts, t["parts"])
    assert parts[38, 2] == 6 and parts[38, 6] == 6  # rfoot, lfoot
    assert parts[31, 0] == 4 and parts[31, 9] == 4  # rhand, lhand
    assert parts[27, 0] == 3 and parts[27, 9] == 3  # ruarm, luarm
    assert parts[25, 3] == 2 and parts[22, 1] == 1  # neck, lear
    assert parts[21, 10] == 0  # inside the person, no part: background, as the literature
    assert (parts[20:, 14:18] == IGNORE).all()  # person without part annotation
    assert s["meta"]["has_person"] is True and s["meta"]["id"] == "2008_000001"

    # edges: label differs from the right or lower neighbour
    e = s["edges"]
    expected = np.zeros((H, W), np.uint8)
    expected[19, :] = 1  # sky above person/table
    expected[20:, 23] = 1  # person | table
    np.testing.assert_array_equal(e, expected)

    # saliency: png / 255 > 0.5
    sal = s["saliency"]
    assert sal[10, 10] == 0 and sal[10, 11] == 1 and sal[10, 12] == 1 and sal[10, 13] == 0
    assert sal[15, 15] == 1 and sal[0, 0] == 0 and set(np.unique(sal)) <= {0, 1}

    # normals: decoded, unit, (0,0,0) invalid, and only on NYU classes (not sky)
    n = s["normals"]
    assert n.shape == (H, W, 3) and n.dtype == np.float32
    norm = np.linalg.norm(n, axis=-1)
    valid = norm > 0
    assert not valid[:20].any()  # sky: outside the literature's NYU class mask
    assert not valid[30, 30]  # encoded (0, 0, 0)
    assert valid[20:].sum() == (H - 20) * W - 1
    np.testing.assert_allclose(norm[valid], 1.0, atol=1e-5)
    np.testing.assert_allclose(n[valid], t["normals"][valid], atol=0.01)

    # image B: no person -> all ignore; semseg read from semseg/pascal-context
    b = ds[1]
    assert (b["parts"] == IGNORE).all() and b["meta"]["has_person"] is False
    assert (b["semseg"][6, 31] == DOG) and b["semseg"][0, 0] == 0


def test_pascal_mt_options_and_edges_function(pascal_root):
    ds = PascalMT(pascal_root, "train", tasks=["normals", "sal"], normals_mask=None)
    s = ds[0]
    assert set(s) == {"image", "normals", "saliency", "meta"}
    assert (np.linalg.norm(s["normals"], axis=-1) > 0).sum() == H * W - 1
    val = PascalMT(pascal_root, "val")
    assert val.ids == ["2008_000003"]
    # edges: brute force of the definition on a random LabelMap
    lm = sio.loadmat(str(pascal_root / "pascal-context/trainval/2008_000003.mat"))["LabelMap"]
    e = val[0]["edges"]
    for y in range(H):
        for x in range(W):
            right = x + 1 < W and lm[y, x] != lm[y, x + 1]
            below = y + 1 < H and lm[y, x] != lm[y + 1, x]
            diff = right or below
            assert e[y, x] == int(diff)
    np.testing.assert_array_equal(edges_from_labelmap(lm), e)


def test_pascal_mt_missing_paths_are_named(pascal_root, tmp_path):
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        PascalMT(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"ImageSets.Context.test\.txt"):
        PascalMT(pascal_root, "test")
    missing_file = pascal_root / "normals_distill" / "2008_000002.png"
    missing_file.unlink()
    ds = PascalMT(pascal_root, "train")  # per-image files are checked at load
    ds[0]
    with pytest.raises(DatasetNotFoundError) as info:
        ds[1]
    assert str(missing_file) in str(info.value) and info.value.path == str(missing_file)
    (pascal_root / "sal_distill" / "2008_000001.png").unlink()
    for f in (pascal_root / "sal_distill").iterdir():
        f.unlink()
    (pascal_root / "sal_distill").rmdir()
    with pytest.raises(DatasetNotFoundError, match="sal_distill"):
        PascalMT(pascal_root, "train")
    PascalMT(pascal_root, "train", tasks=["semseg", "parts"])  # saliency not asked for


# ------------------------------------------------------------------- augmentation

RH, RW = 48, 64
RECT = ((10, 30), (8, 28))  # off-centre, so a flip or a shift moves it
N_IN = np.array([0.6, 0.0, 0.8], np.float32)
N_OUT = np.array([0.0, 1.0, 0.0], np.float32)


def _rect_sample():
    """Every label and the palette are functions of one rectangle (a person)."""
    inside = _box(*RECT, shape=(RH, RW)).astype(bool)
    image = np.zeros((RH, RW, 3), np.uint8)
    image[...] = (20, 60, 200)
    image[inside] = (220, 30, 30)
    sem = np.where(inside, PERSON, 0).astype(np.uint8)
    return {
        "image": image,
        "semseg": sem,
        "parts": np.where(inside, 2, 0).astype(np.uint8),
        "edges": inside.astype(np.uint8),
        "saliency": inside.astype(np.uint8),
        "normals": np.where(inside[..., None], N_IN, N_OUT).astype(np.float32),
        "palette": load_rule("R2").palette(semantics=sem),
        "meta": {"id": "rect"},
    }


def _erode(m):
    """3 x 3 erosion: pixels whose whole 8-neighbourhood is in ``m``."""
    p = np.pad(m, 1, constant_values=False)
    out = np.ones_like(m)
    for dy in range(3):
        for dx in range(3):
            out &= p[dy : dy + m.shape[0], dx : dx + m.shape[1]]
    return out


def _palette_aligned(s):
    region = s["semseg"] == PERSON
    pad = s["semseg"] == IGNORE
    p = s["palette"]
    return bool(((p == palette_value("parts")) == region).all()
                and ((p == 0) == pad).all()
                and ((p == palette_value("edges")) == (~region & ~pad)).all())  # fmt: skip


def _check_aligned(s, flipped):
    region = s["semseg"] == PERSON
    pad = s["semseg"] == IGNORE
    assert region.any() and (~region & ~pad).any()
    assert _palette_aligned(s)
    for key, inside in (("parts", 2), ("edges", 1), ("saliency", 1)):
        assert ((s[key] == inside) == region).all(), key
        assert ((s[key] == IGNORE) == pad).all(), key
    n = s["normals"]
    norm = np.linalg.norm(n, axis=-1)
    assert (norm[pad] == 0).all()
    np.testing.assert_allclose(norm[~pad], 1.0, atol=1e-5)
    # bilinear maps (normals, image) are exact away from the boundary (3 x 3 interior)
    inner, outer = _erode(region), _erode(~region & ~pad)
    n_in = N_IN * np.array([-1 if flipped else 1, 1, 1], np.float32)
    np.testing.assert_allclose(n[inner], np.broadcast_to(n_in, (int(inner.sum()), 3)), atol=1e-6)
    np.testing.assert_allclose(n[outer], np.broadcast_to(N_OUT, (int(outer.sum()), 3)), atol=1e-6)
    # every pixel of the region has some of the object's normal (its nearest source
    # pixel is inside and has a bilinear weight >= 1/4; the outside has x = 0)
    assert (np.sign(n[..., 0][region]) == (-1 if flipped else 1)).all()
    img = s["image"]
    assert (img[inner] == (220, 30, 30)).all()
    assert (img[outer] == (20, 60, 200)).all()


@pytest.mark.parametrize("flip", [False, True])
def test_augmentation_keeps_labels_and_palette_aligned(flip):
    sample = _rect_sample()
    aug = Compose([HFlip(p=1.0 if flip else 0.0), RandomScale((0.6, 1.7)),
                   RandomCrop((40, 56))])  # fmt: skip
    for seed in range(12):
        out = aug(sample, np.random.default_rng(seed))
        assert out["image"].shape == (40, 56, 3) and out["palette"].shape == (40, 56)
        assert out["meta"] == {"id": "rect"}
        _check_aligned(out, flip)
        # the palette equals the rule applied to the augmented semantics (off padding)
        lut = load_rule("R2").palette(semantics=out["semseg"])
        real = out["semseg"] != IGNORE
        np.testing.assert_array_equal(out["palette"][real], lut[real])
    np.testing.assert_array_equal(sample["palette"], _rect_sample()["palette"])  # unchanged


def test_untransformed_palette_is_caught():
    """The public code's bug: palette made before augmentation and not transformed."""
    sample = _rect_sample()
    aug = Compose([HFlip(p=1.0), RandomScale((0.7, 1.4)), RandomCrop((RH, RW))])
    for seed in range(8):
        stale = dict(sample)
        palette = stale.pop("palette")
        out = aug(stale, np.random.default_rng(seed))
        out["palette"] = palette  # what the public code trains with
        assert not _palette_aligned(out)
        joint = aug(sample, np.random.default_rng(seed))
        assert _palette_aligned(joint)


def test_flip_negates_normals_x_and_keeps_unit_length():
    rng = np.random.default_rng(0)
    n = rng.normal(size=(RH, RW, 3)).astype(np.float32)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    n[3, 4] = 0
    s = {"image": np.zeros((RH, RW, 3), np.uint8), "normals": n}
    out = HFlip(p=1.0)(s, rng)["normals"]
    np.testing.assert_array_equal(out[:, ::-1, 0], -n[..., 0])
    np.testing.assert_array_equal(out[:, ::-1, 1:], n[..., 1:])
    norm = np.linalg.norm(out, axis=-1)
    assert norm[3, RW - 1 - 4] == 0
    np.testing.assert_allclose(np.delete(norm.ravel(), 3 * RW + RW - 5), 1.0, atol=1e-6)
    # scaling: invalid where any contributing neighbour is invalid, unit elsewhere
    up = RandomScale((2.0, 2.0))(s, rng)["normals"]
    unorm = np.linalg.norm(up, axis=-1)
    assert (unorm == 0).sum() >= 4 and (unorm[unorm > 0] - 1 < 1e-5).all()
    assert unorm[6:9, 8:11].max() == 0  # around (3, 4) scaled by 2


def test_photometric_ops_change_the_image_only():
    sample = _rect_sample()
    ops = Compose([Brightness(p=1), Contrast(p=1), Gamma(p=1), HueSaturation(p=1),
                   GaussianNoise((0.02, 0.05), p=1), GaussianBlur(p=1), Sharpen(p=1)])  # fmt: skip
    out = ops(sample, np.random.default_rng(5))
    assert out["image"].dtype == np.uint8 and out["image"].shape == sample["image"].shape
    assert not np.array_equal(out["image"], sample["image"])
    for key in ("semseg", "parts", "edges", "saliency", "normals", "palette"):
        assert out[key] is sample[key] or np.array_equal(out[key], sample[key])
        assert out[key].dtype == sample[key].dtype
    again = ops(sample, np.random.default_rng(5))
    np.testing.assert_array_equal(again["image"], out["image"])


def test_pad_fills():
    sample = _rect_sample()
    out = RandomCrop((64, 80), image_fill=(1, 2, 3), center=True)(sample, np.random.default_rng())
    pad = np.ones((64, 80), bool)
    pad[8:56, 8:72] = False
    assert (out["image"][pad] == (1, 2, 3)).all() and (out["palette"][pad] == 0).all()
    assert (out["semseg"][pad] == IGNORE).all() and (out["normals"][pad] == 0).all()
    np.testing.assert_array_equal(out["semseg"][8:56, 8:72], sample["semseg"])


# ----------------------------------------------------------------- training items


def _assert_item(item, h, w):
    assert item["image"].shape == (3, h, w) and item["image"].dtype == torch.float32
    assert 0 <= item["image"].min() and item["image"].max() <= 1
    assert item["palette"].shape == (h, w) and item["palette"].dtype == torch.int64
    for t in ("semseg", "parts", "edges", "saliency"):
        assert item[t].shape == (h, w) and item[t].dtype == torch.int64
    assert item["normals"].shape == (3, h, w) and item["normals"].dtype == torch.float32
    assert isinstance(item["id"], str)


def _same(a, b):
    return all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_synthetic_dataset_is_deterministic_per_index_and_epoch():
    kw = dict(seed=3, length=4, size=56, rule="R2", augment=default_augment(48))
    ds = SyntheticDataset(**kw)
    a = ds[1]
    _assert_item(a, 48, 48)
    assert a["id"] == "synthetic-3-1"
    assert _same(a, ds[1]) and _same(a, SyntheticDataset(**kw)[1])
    assert not torch.equal(a["image"], ds[2]["image"])
    # semantic rule: palette = R2(augmented semseg) off padding, 0 on padding
    lut = torch.from_numpy(load_rule("R2").lookup.astype(np.int64))
    real = a["semseg"] != IGNORE
    assert torch.equal(a["palette"][real], lut[a["semseg"][real]])
    assert (a["palette"][~real] == 0).all()
    ds.set_epoch(1)
    assert ds.epoch == 1
    b = ds[1]
    assert not torch.equal(a["image"], b["image"])
    ds.set_epoch(0)
    assert _same(a, ds[1])
    with pytest.raises(IndexError):
        ds[4]


def test_non_semantic_rule_is_drawn_after_augmentation_with_no_task_on_padding():
    ds = SyntheticDataset(seed=1, length=2, size=32, rule="mosaic",
                          augment=Compose([RandomCrop((40, 44))]))  # fmt: skip
    item = ds[0]
    pad = item["semseg"] == IGNORE  # synthetic labels have no ignore: only padding
    assert pad.any() and (item["palette"][pad] == 0).all()
    assert (item["palette"][~pad] > 0).all() and len(torch.unique(item["palette"][~pad])) >= 2
    ds.set_epoch(1)
    assert not torch.equal(ds[0]["palette"], item["palette"])  # new draw per epoch


def test_synthetic_dataloader_workers_match_single_process():
    ds = SyntheticDataset(seed=0, length=6, size=40, rule="mosaic", augment=default_augment(32))

    def batches(workers, **kw):
        loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=workers, **kw)
        return [b for b in loader]

    ref = batches(0)
    assert ref[0]["image"].shape == (3, 3, 32, 32) and ref[0]["id"][0] == "synthetic-0-0"
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, persistent_workers=True)
    par = list(loader)
    for a, b in zip(ref, par):
        assert _same(a, b)
    # the epoch reaches persistent workers (it lives in shared memory)
    ds.set_epoch(1)
    par1 = list(loader)
    ref1 = batches(0)
    assert not torch.equal(ref1[0]["image"], ref[0]["image"])
    for a, b in zip(ref1, par1):
        assert _same(a, b)


def test_pascal_mt_dataset_items(pascal_root):
    augment = default_augment(32, scale=(0.8, 1.5))
    ds = PascalMTDataset(pascal_root, "train", rule="R2", augment=augment)
    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 32, 32) and batch["id"] == ["2008_000001", "2008_000002"]
    lut = torch.from_numpy(load_rule("R2").lookup.astype(np.int64))
    for i in range(2):
        p, sem = batch["palette"][i], batch["semseg"][i]
        asked = p != 0
        assert torch.equal(p[asked], lut[sem[asked]])
        assert (sem[~asked] == IGNORE).all()  # no task only on padding
    # tasks not asked for are all ignore, semseg still made the palette
    only = PascalMTDataset(pascal_root, "train", rule="R2", tasks=["saliency"])
    item = only[0]
    assert (item["semseg"] == IGNORE).all() and (item["palette"] > 0).all()
    assert (item["normals"] == 0).all() and item["saliency"].max() == 1


def test_prepare_item_errors():
    s = _rect_sample()
    del s["palette"]
    with pytest.raises(DatasetError, match="no palette and no rule"):
        prepare_item(s, None, None, np.random.default_rng(), "x")
    del s["semseg"]
    with pytest.raises(DatasetError, match="semantic labels"):
        prepare_item(s, load_rule("R3"), None, np.random.default_rng(), "x")
    item = prepare_item(s, load_rule("S:normals"), None, np.random.default_rng(), "x")
    assert (item["palette"] == palette_value("normals")).all()
    assert (item["semseg"] == IGNORE).all()  # absent label -> ignore


# --------------------------------------------------------------------- label store


def test_store_dataset(tmp_path):
    store_mod = pytest.importorskip("composite_tasking.store")
    from composite_tasking.datasets import StoreDataset
    from composite_tasking.synthetic import generate

    path = tmp_path / "labels.zarr"
    store = store_mod.LabelStore(path, mode="w")
    samples = {}
    for i in range(3):
        s = {k: v for k, v in generate(7, i, 40).items() if k != "meta"}
        samples[f"img{i}"] = s
    for i in range(2):
        store.write_sample(f"img{i}", samples[f"img{i}"],
                           provenance={t: "ground-truth" for t in TASK_NAMES})  # fmt: skip
    pseudo = dict(samples["img2"])
    palette = load_rule("mosaic").palette(shape=(40, 40), rng=np.random.default_rng(0))
    pseudo["palette"] = palette
    store.write_sample("img2", pseudo, provenance={t: "pseudo" for t in TASK_NAMES})

    ds = StoreDataset(path, rule="R2")
    assert len(ds) == 3 and ds.ids == ["img0", "img1", "img2"]
    gt = ds[0]
    _assert_item(gt, 40, 40)
    s0 = samples["img0"]
    assert torch.equal(gt["semseg"], torch.from_numpy(s0["semseg"].astype(np.int64)))
    assert torch.equal(gt["palette"], torch.from_numpy(load_rule("R2").palette(
        semantics=s0["semseg"]).astype(np.int64)))  # fmt: skip
    assert torch.equal(gt["image"], torch.from_numpy(s0["image"]).permute(2, 0, 1).float() / 255)

    ps = ds[2]
    assert torch.equal(ps["palette"], torch.from_numpy(palette.astype(np.int64)))  # its own
    for t in ("semseg", "parts", "edges", "saliency"):
        asked = ps["palette"] == palette_value(t)
        assert (ps[t][~asked] == IGNORE).all(), t
        want = torch.from_numpy(samples["img2"][t].astype(np.int64))
        assert torch.equal(ps[t][asked], want[asked]), t
    asked = ps["palette"] == palette_value("normals")
    assert (ps["normals"][:, ~asked] == 0).all()
    assert (ps["normals"][:, asked].norm(dim=0) > 0.99).all()

    # an image stored by reference is read from its file
    src = tmp_path / "img3.png"
    Image.fromarray(samples["img1"]["image"]).save(src)
    ref = {k: v for k, v in samples["img1"].items() if k != "image"}
    store.write_sample("img3", ref, provenance={t: "ground-truth" for t in TASK_NAMES},
                       store_image=False, image_source=str(src))  # fmt: skip
    by_ref = StoreDataset(path, rule="R2", ids=["img3"])[0]
    assert torch.equal(by_ref["image"], ds[1]["image"]) and by_ref["id"] == "img3"
    src.unlink()
    with pytest.raises(FileNotFoundError, match="img3.png"):
        StoreDataset(path, rule="R2", ids=["img3"])[0]

    aug = StoreDataset(path, rule="R2", augment=default_augment(32), seed=4, ids=ds.ids)
    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=3, num_workers=0)))
    assert batch["palette"].shape == (3, 32, 32) and batch["id"] == ["img0", "img1", "img2"]
    with pytest.raises(DatasetError, match="no palette and no rule"):
        StoreDataset(path)[0]
    with pytest.raises(FileNotFoundError, match="missing.zarr"):
        StoreDataset(tmp_path / "missing.zarr")


# ------------------------------------------------- which store images, which split, which rule


def test_pascal_mt_spec_trains_on_train_and_evaluates_on_val(pascal_root):
    """A spec without a split: the train split to train, the val split to evaluate; the
    string and the mapping forms agree."""
    from composite_tasking.training.recipe import parse_data_spec
    from composite_tasking.training.trainer import build_dataset

    text, mapping = f"pascal-mt:{pascal_root}", {"kind": "pascal-mt", "root": str(pascal_root)}
    assert parse_data_spec(text).split == parse_data_spec(mapping).split == "train"
    assert parse_data_spec(text, "val").split == parse_data_spec(mapping, "val").split == "val"
    assert parse_data_spec(f"{text},split=val").split == "val"
    assert build_dataset(text, "R2").ids == ["2008_000001", "2008_000002"]
    assert build_dataset(text, "R2", default_split="val").ids == ["2008_000003"]
    # images of any size are batched by size, from the JPEG headers
    assert build_dataset(text, "R2").shapes() == [(H, W), (H, W)]


def _store_with(tmp_path, entries):
    """A store whose images hold (provenance, palette rule or None, stored palette?)."""
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import generate

    path = tmp_path / "labels.zarr"
    with LabelStore(path, mode="w") as st:
        for k, (image_id, prov, rule, with_palette) in enumerate(entries):
            s = {t: v for t, v in generate(3, k, 32).items() if t != "meta"}
            if with_palette:
                s["palette"] = load_rule("R2").palette(semantics=s["semseg"])
            st.write_sample(image_id, s, provenance=dict.fromkeys(TASK_NAMES, prov),
                            attrs={} if rule is None else {"rule": rule})  # fmt: skip
    return path


def test_training_ids_take_corrections_and_ground_truth(tmp_path):
    from composite_tasking.datasets import DatasetError, training_ids
    from composite_tasking.store import LabelStore

    path = _store_with(tmp_path, [("gt", "ground-truth", None, False), ("pseudo", "pseudo", "R2", True),
                                  ("fixed", "corrected", "R2", True)])  # fmt: skip
    assert training_ids(path) == ["fixed", "gt"]
    assert training_ids(path, "all") == ["fixed", "gt", "pseudo"]
    only_pseudo = _store_with(tmp_path / "p", [("a", "pseudo", "R2", True), ("b", "pseudo", "R2", True)])
    with pytest.raises(DatasetError) as e:
        training_ids(only_pseudo)
    assert str(only_pseudo) in str(e.value) and "2 image(s)" in str(e.value) and "--all-images" in str(e.value)
    assert training_ids(only_pseudo, required=False) == []
    LabelStore(tmp_path / "empty.zarr", mode="w")
    with pytest.raises(DatasetError, match="holds no image"):
        training_ids(tmp_path / "empty.zarr")


def test_stored_palettes_of_another_rule_are_refused(tmp_path):
    from composite_tasking.datasets import StoreRuleError, check_stored_palettes

    path = _store_with(tmp_path, [("byhand", "corrected", None, True), ("nopalette", "ground-truth", "R3", False),
                                  ("r2a", "corrected", "R2", True), ("r2b", "pseudo", "R2", True)])  # fmt: skip
    check_stored_palettes(path, "R2")
    check_stored_palettes(path, "R3", ids=["byhand", "nopalette"])  # painted by hand; made by the rule
    with pytest.raises(StoreRuleError) as e:
        check_stored_palettes(path, "R3")
    msg = str(e.value)
    assert str(path) in msg and "2 image(s)" in msg and "'r2a'" in msg and "rule R2, not R3" in msg
    assert "ctn label --rule R3" in msg and "--rule R2 to train" in msg
    with pytest.raises(StoreRuleError, match="--rule R2 to score"):
        check_stored_palettes(path, "R3", ids=["r2b"], purpose="score")


def test_batches_by_shape():
    from composite_tasking.datasets import batches_by_shape

    same = [(32, 32)] * 7
    assert batches_by_shape(same, 3) == [[0, 1, 2], [3, 4, 5], [6]]  # DataLoader(batch_size=3)'s
    mixed = [(32, 32), (48, 80), (32, 32), (48, 80), (32, 32)]
    assert batches_by_shape(mixed, 2) == [[0, 2], [4], [1, 3]]
