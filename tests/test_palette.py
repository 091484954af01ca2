"""Palette rules: S, R1r (mosaic), Rrnd (random), R2, R3 and rule files."""

import numpy as np
import pytest

from composite_tasking.palette import (
    MosaicRule,
    RandomRule,
    RuleError,
    SemanticRule,
    SingleTaskRule,
    load_rule,
    load_rule_file,
    palette_tasks,
    validate_palette,
)
from composite_tasking.tasks import SEMSEG_CLASSES, TASKS

SEG, PARTS, EDGES, SAL, NORMALS = 1, 2, 3, 4, 5


def semantic_map(blocks, shape=(40, 60)):
    """A hand-made label map: background with one 4x4 block per listed class."""
    sem = np.zeros(shape, dtype=np.uint8)
    for i, name in enumerate(blocks):
        y, x = divmod(i, shape[1] // 5)
        sem[y * 5 : y * 5 + 4, x * 5 : x * 5 + 4] = SEMSEG_CLASSES.index(name)
    return sem


def value_at(palette, sem, name):
    vals = np.unique(palette[sem == SEMSEG_CLASSES.index(name)])
    assert len(vals) == 1
    return int(vals[0])


R2_EXPECTED = {
    "person": PARTS,
    **dict.fromkeys(["bird", "horse", "cow", "cat", "dog", "sheep"], SEG),
    **dict.fromkeys(["bottle", "chair", "diningtable", "pottedplant", "sofa", "tvmonitor"], NORMALS),
    **dict.fromkeys(["aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"], SAL),
    "background": EDGES,
}
R3_EXPECTED = {
    "person": PARTS,
    **dict.fromkeys(["chair", "diningtable", "sofa", "bicycle", "bus", "car", "motorbike", "train"], NORMALS),
    **dict.fromkeys(["aeroplane", "boat", "bird", "horse", "cow", "cat", "dog", "sheep", "bottle",
                     "pottedplant", "tvmonitor"], SAL),  # fmt: skip
    "background": EDGES,
}


@pytest.mark.parametrize("name, expected", [("R2", R2_EXPECTED), ("R3", R3_EXPECTED)])
def test_semantic_rules_give_the_supplementary_palettes(name, expected):
    assert set(expected) == set(SEMSEG_CLASSES)  # every class is covered by the table above
    sem = semantic_map([c for c in SEMSEG_CLASSES if c != "background"])
    sem[-3:, -3:] = 255  # unlabelled pixels: "everywhere else" -> edges
    palette = load_rule(name).palette(semantics=sem)
    assert palette.dtype == np.uint8 and palette.shape == sem.shape
    for cls, value in expected.items():
        assert value_at(palette, sem, cls) == value, cls
    assert (palette[-3:, -3:] == EDGES).all()


def test_r3_has_no_segmentation_and_keeps_parts_and_edges_where_r2_has_them():
    sem = semantic_map(list(SEMSEG_CLASSES[1:]))
    p2, p3 = load_rule("R2").palette(semantics=sem), load_rule("R3").palette(semantics=sem)
    assert SEG not in p3
    for v in (PARTS, EDGES):
        assert np.array_equal(p2 == v, p3 == v)


def test_single_task_rule_fills_everything():
    p = load_rule("S:normals").palette((7, 9))
    assert (p == NORMALS).all() and p.shape == (7, 9)
    assert isinstance(load_rule("s:seg"), SingleTaskRule)
    with pytest.raises(RuleError, match="unknown task 'depth'"):
        load_rule("S:depth")


def test_mosaic_is_four_rectangles_around_a_central_point(rng):
    h, w = 64, 96
    for seed in range(20):
        p = MosaicRule().palette((h, w), rng=seed)
        # rows and columns change value at most once: four axis-aligned rectangles
        col_changes = {int(np.flatnonzero(np.diff(p[y].astype(int)))[0]) for y in range(h)
                       if np.diff(p[y].astype(int)).any()}  # fmt: skip
        row_changes = {int(np.flatnonzero(np.diff(p[:, x].astype(int)))[0]) for x in range(w)
                       if np.diff(p[:, x].astype(int)).any()}  # fmt: skip
        assert len(col_changes) <= 1 and len(row_changes) <= 1
        corners = {p[0, 0], p[0, -1], p[-1, 0], p[-1, -1]}
        assert len(corners) == 4  # four distinct tasks, as the public code draws them
        assert set(np.unique(p)) == corners
        # the split point lies in the middle half: c ~ U[W/4, 3W/4], U[H/4, 3H/4]
        cx = (p[0] == p[0, 0]).sum()
        cy = (p[:, 0] == p[0, 0]).sum()
        assert w / 4 <= cx <= 3 * w / 4 + 1 and h / 4 <= cy <= 3 * h / 4 + 1
    assert np.array_equal(MosaicRule().palette((h, w), rng=5), MosaicRule().palette((h, w), rng=5))


def test_mosaic_rectangles_are_the_papers_quadrants_pixel_for_pixel():
    """The four rectangles are exactly the quadrants x > c_x, y > c_y of eq. (6) (drawn
    from the same generator in the same order), for odd, tiny and tall shapes too."""
    for seed in range(200):
        for h, w in ((256, 256), (31, 45), (4, 4), (1, 7), (300, 17)):
            got = MosaicRule().palette((h, w), rng=seed)
            rng = np.random.default_rng(seed)
            values = np.array(sorted(t.palette_value for t in TASKS), dtype=np.uint8)
            k = rng.choice(values, size=4, replace=False)
            cx, cy = rng.uniform(w / 4, 3 * w / 4), rng.uniform(h / 4, 3 * h / 4)
            quadrant = 2 * (np.arange(h)[:, None] > cy) + (np.arange(w)[None, :] > cx)
            assert got.dtype == np.uint8 and np.array_equal(got, k[quadrant]), (seed, h, w)


def test_mosaic_with_repetition_and_a_task_subset():
    p = MosaicRule(tasks=("edges", "normals"), distinct=True).palette((32, 32), rng=0)
    assert set(np.unique(p)) <= {EDGES, NORMALS}


def test_random_rule_draws_every_task_per_pixel():
    p = RandomRule().palette((100, 100), rng=0)
    values, counts = np.unique(p, return_counts=True)
    assert values.tolist() == [1, 2, 3, 4, 5]
    assert counts.min() > 1600  # ~2000 each
    sub = RandomRule(tasks=("saliency",)).palette((5, 5), rng=0)
    assert (sub == SAL).all()


def test_user_rule_file(tmp_path):
    f = tmp_path / "vehicles.yaml"
    f.write_text("name: vehicles\ndefault: null\ntasks:\n  normals: [car, bus]\n  seg: person\n")
    rule = load_rule(str(f))
    assert isinstance(rule, SemanticRule) and rule.name == "vehicles"
    sem = semantic_map(["car", "bus", "person", "dog"])
    p = rule.palette(semantics=sem)
    assert value_at(p, sem, "car") == NORMALS and value_at(p, sem, "person") == SEG
    assert value_at(p, sem, "dog") == 0 and value_at(p, sem, "background") == 0  # no task
    assert load_rule_file(f).to_dict()["tasks"] == {"normals": ["car", "bus"], "semseg": ["person"]}


@pytest.mark.parametrize(
    "text, message",
    [
        ("tasks:\n  normals: [car, spaceship]\n", "unknown class 'spaceship'"),
        ("tasks:\n  depth: [car]\n", "unknown task 'depth'"),
        ("default: depth\ntasks:\n  normals: [car]\n", "unknown default task 'depth'"),
        ("tasks:\n  normals: [car]\n  saliency: [car]\n", "class 'car' is given two tasks"),
        ("tasks: [car]\n", "'tasks' must map task names"),
        ("colour: red\ntasks:\n  normals: [car]\n", "unknown key"),
        ("tasks: {normals: [car\n", "not valid YAML"),
    ],
)
def test_invalid_rule_files_name_the_file_and_the_value(tmp_path, text, message):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(RuleError, match=message) as err:
        load_rule(str(f))
    assert str(f) in str(err.value)


def test_unknown_rule_names_and_missing_files():
    with pytest.raises(RuleError, match="unknown rule 'R7'"):
        load_rule("R7")
    with pytest.raises(RuleError, match="cannot read rule file"):
        load_rule("/nonexistent/rule.yaml")


def test_semantic_rules_check_their_input():
    r2 = load_rule("R2")
    with pytest.raises(ValueError, match="needs a semantic label map"):
        r2.palette((4, 4))
    with pytest.raises(ValueError, match="integers"):
        r2.palette(semantics=np.zeros((4, 4), dtype=np.float32))


def test_validate_palette():
    assert validate_palette(np.array([[0, 5]])).dtype == np.uint8
    with pytest.raises(ValueError, match="found 6"):
        validate_palette(np.array([[0, 6]]), source="p.png")
    with pytest.raises(ValueError, match="2-D"):
        validate_palette(np.zeros((2, 2, 2), dtype=np.uint8))
    assert [t.name for t in palette_tasks(np.array([[0, 5, 2]]))] == ["parts", "normals"]
