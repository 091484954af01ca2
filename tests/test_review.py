"""`ctn review`: a label store's images ranked by the correction effort their confidence
maps predict (composite_tasking.review), on real stores on disk."""

import json
import subprocess
import sys

import numpy as np
import pytest

from composite_tasking.review import ReviewError, rank_store
from composite_tasking.store import LabelStore

CTN = [sys.executable, "-m", "composite_tasking.cli"]
H = W = 32
LEFT = np.zeros((H, W), bool)
LEFT[:, : W // 2] = True  # semseg's half of the palette; saliency has the right half


def ctn(*args):
    return subprocess.run([*CTN, *map(str, args)], capture_output=True, text=True, timeout=120)


def _sample(semseg_conf, saliency_conf):
    """A 32 x 32 image, semseg asked on the left half and saliency on the right, with
    confidence maps of the given values (a constant or a (H, W) map; None: no map)."""
    palette = np.where(LEFT, 1, 4).astype(np.uint8)
    sample = {
        "image": np.full((H, W, 3), 128, np.uint8),
        "palette": palette,
        "semseg": np.where(LEFT, 0, 255).astype(np.uint8),
        "saliency": np.where(LEFT, 255, 1).astype(np.uint8),
    }
    conf = {}
    for task, value, region in (("semseg", semseg_conf, LEFT), ("saliency", saliency_conf, ~LEFT)):
        if value is not None:
            conf[task] = np.where(region, np.broadcast_to(np.float32(value), (H, W)), np.nan).astype(np.float32)
    if conf:
        sample["confidence"] = conf
    return sample


@pytest.fixture
def store(tmp_path):
    """Five images whose expected errors are known:

    - ``a``: semseg 0.9 but a 6 x 6 block at 0.1, saliency 0.9: (476 x 0.1 + 36 x 0.9
      + 512 x 0.1) / 1024 = 12.81 % expected to change, one low region;
    - ``b``: 0.95 everywhere but a 3 x 3 saliency block at 0.3: 5.57 %, one region;
    - ``c``: confidence 0.2 everywhere (the worst), but a person corrected semseg and
      saliency is ground truth: checked, listed last;
    - ``d``: semseg corrected, saliency pseudo at 0.4 everywhere: only saliency counts,
      60 %, one region: first;
    - ``e``: pseudo-labels without confidence maps: nothing to rank by, before ``c``.
    """
    path = tmp_path / "labels.zarr"
    s = LabelStore(path, "w")
    block = np.full((H, W), 0.9, np.float32)
    block[2:8, 2:8] = 0.1
    s.write_sample("a", _sample(block, 0.9), provenance={"semseg": "pseudo", "saliency": "pseudo"})
    small = np.full((H, W), 0.95, np.float32)
    small[20:23, 25:28] = 0.3
    s.write_sample("b", _sample(0.95, small), provenance={"semseg": "pseudo", "saliency": "pseudo"})
    s.write_sample("c", _sample(0.2, 0.2), provenance={"semseg": "corrected", "saliency": "ground-truth"})
    s.write_sample("d", _sample(0.2, 0.4), provenance={"semseg": "corrected", "saliency": "pseudo"})
    s.write_sample("e", _sample(None, None), provenance={"semseg": "pseudo", "saliency": "pseudo"})
    return path


def test_rank_store_orders_by_expected_effort_and_puts_checked_images_last(store):
    items = rank_store(store)
    assert [i.image_id for i in items] == ["d", "a", "b", "e", "c"]
    assert [i.rank for i in items] == [1, 2, 3, 4, 5]
    assert [i.status for i in items] == ["ranked", "ranked", "ranked", "no confidence", "checked"]
    d, a, b, e, c = items
    assert d.expected_share == pytest.approx(60.0, rel=1e-5) and d.checked == ["semseg"]
    assert list(d.tasks) == ["saliency"] and d.pixels == 512 and d.expected_regions == 1
    assert a.expected_share == pytest.approx(100 * (476 * 0.1 + 36 * 0.9 + 512 * 0.1) / 1024, rel=1e-5)
    assert a.expected_regions == 1 and a.tasks["semseg"]["pixels"] == 512
    assert a.regions[0] == {"task": "semseg", "bbox": [2, 2, 8, 8], "pixels": 36,
                            "expected": pytest.approx(36 * 0.9, rel=1e-5)}  # fmt: skip
    assert b.expected_share == pytest.approx(100 * (512 * 0.05 + 503 * 0.05 + 9 * 0.7) / 1024, rel=1e-5)
    assert b.regions[0]["task"] == "saliency" and b.regions[0]["bbox"] == [20, 25, 23, 28]
    assert e.expected_share is None and c.expected_share is None
    assert c.checked == ["semseg", "saliency"]
    # weighing semseg only: d has no pseudo semseg left, so it joins the checked ones
    only = rank_store(store, tasks=["semseg"])
    assert [i.image_id for i in only] == ["a", "b", "e", "c", "d"]


def test_ctn_review_prints_the_ranking_as_json_and_as_a_table(store):
    res = ctn("review", store, "--json", "--top", 3, "--regions", 1)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["images"] == 5
    ranking = out["ranking"]
    assert [r["image_id"] for r in ranking] == ["d", "a", "b"]
    assert ranking[0]["expected_share"] == pytest.approx(60.0, rel=1e-5)
    assert ranking[1]["regions"] == [{"task": "semseg", "bbox": [2, 2, 8, 8], "pixels": 36,
                                      "expected": pytest.approx(32.4, rel=1e-5)}]  # fmt: skip
    res = ctn("review", store)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].startswith("5 image(s): 3 ranked") and lines[1].split()[:2] == ["rank", "image"]
    rows = [line.split() for line in lines[2:]]
    assert [r[:2] for r in rows] == [["1", "d"], ["2", "a"], ["3", "b"], ["4", "e"], ["5", "c"]]
    assert rows[0][2] == "60.00" and "(checked: semseg)" in lines[2]
    assert rows[4][2:] == ["-", "-", "checked:", "semseg,", "saliency"]
    assert "semseg y 2:8 x 2:8 (36 px)" in res.stdout


def test_review_refuses_empty_stores_and_stores_without_confidence(tmp_path):
    empty = tmp_path / "empty.zarr"
    LabelStore(empty, "w")
    res = ctn("review", empty)
    assert res.returncode == 2 and "empty.zarr" in res.stderr and "no images" in res.stderr

    truth = tmp_path / "truth.zarr"
    LabelStore(truth, "w").write_sample("t", _sample(None, None), provenance={"semseg": "ground-truth",
                                                                              "saliency": "ground-truth"})  # fmt: skip
    with pytest.raises(ReviewError, match=r"truth\.zarr.*nothing to review"):
        rank_store(truth)

    bare = tmp_path / "bare.zarr"
    LabelStore(bare, "w").write_sample("p", _sample(None, None), provenance={"semseg": "pseudo",
                                                                             "saliency": "pseudo"})  # fmt: skip
    with pytest.raises(ReviewError, match=r"bare\.zarr holds no confidence maps"):
        rank_store(bare)
    with pytest.raises(KeyError, match="unknown task 'sky'"):
        rank_store(bare, tasks=["sky"])
