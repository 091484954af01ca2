"""The synthetic world: labels agree with each other, scenes are deterministic and varied."""

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from composite_tasking.synthetic import OBJECTS, SceneConfig, generate, make_scene
from composite_tasking.synthetic.geometry import Primitive, intersect, rotation, surface
from composite_tasking.tasks import IGNORE, PARTS_CLASSES, SEMSEG_CLASSES

PERSON = SEMSEG_CLASSES.index("person")
N_SCENES = 24


@pytest.fixture(scope="module")
def scenes():
    return [generate(7, i, (96, 128)) for i in range(N_SCENES)]


def digest(sample) -> str:
    h = hashlib.sha256()
    for k in ("image", "semseg", "parts", "edges", "saliency", "normals"):
        h.update(np.ascontiguousarray(sample[k]).tobytes())
    return h.hexdigest()


def test_sample_format(scenes):
    s = scenes[0]
    assert s["image"].shape == (96, 128, 3) and s["image"].dtype == np.uint8
    for k in ("semseg", "parts", "edges", "saliency"):
        assert s[k].shape == (96, 128) and s[k].dtype == np.uint8, k
    assert s["normals"].shape == (96, 128, 3) and s["normals"].dtype == np.float32
    for sc in scenes:
        assert sc["semseg"].max() < len(SEMSEG_CLASSES)
        assert set(np.unique(sc["edges"])) <= {0, 1} and set(np.unique(sc["saliency"])) <= {0, 1}


def test_parts_only_on_person_pixels_and_ignore_without_a_person(scenes):
    with_person = 0
    for s in scenes:
        person = s["semseg"] == PERSON
        if person.any():
            with_person += 1
            assert (s["parts"][~person] == 0).all()
            parts = s["parts"][person]
            assert ((parts >= 1) & (parts < len(PARTS_CLASSES))).all()  # every person pixel has a part
        else:
            assert (s["parts"] == IGNORE).all()
    assert 0 < with_person < len(scenes)
    # all six parts show up across scenes with persons
    seen = set().union(*(set(np.unique(s["parts"])) for s in scenes)) - {0, IGNORE}
    assert seen == set(range(1, 7))


def test_normals_are_unit_vectors_facing_the_camera(scenes):
    for s in scenes:
        n = s["normals"]
        np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-4)
    # camera space, OpenGL convention: surfaces seen by the camera point towards +z on
    # average, and the floor (bottom rows, background) points up (+y)
    n = scenes[0]["normals"]
    assert n[..., 2].mean() > 0.3
    bottom = (scenes[0]["semseg"][-5:] == 0)
    if bottom.any():
        assert n[-5:][bottom][:, 1].mean() > 0.5


def test_edges_lie_exactly_on_class_boundaries(scenes):
    for s in scenes:
        sem = s["semseg"]
        boundary = np.zeros_like(sem, dtype=bool)
        boundary[:, :-1] |= sem[:, :-1] != sem[:, 1:]
        boundary[:-1] |= sem[:-1] != sem[1:]
        edges = s["edges"].astype(bool)
        # every class change is an edge ...
        assert (edges[boundary]).all()
        # ... and the only other edges are between the two background surfaces (floor, wall)
        assert (sem[edges & ~boundary] == 0).all()


def test_edges_are_one_pixel_wide_at_any_resolution():
    # lines: doubling the resolution doubles the edge pixels (areas would quadruple)
    ratios = [generate(5, i, 256)["edges"].sum() / generate(5, i, 128)["edges"].sum() for i in range(4)]
    assert all(1.7 < r < 2.3 for r in ratios), ratios


def test_saliency_covers_whole_conspicuous_objects_only(scenes):
    for s in scenes:
        sal = s["saliency"].astype(bool)
        assert (s["semseg"][sal] != 0).all()  # inside objects
        objects = s["meta"]["objects"]
        assert sal.sum() == sum(o["area"] for o in objects if o["salient"])
        areas = [o["area"] for o in objects]
        if objects and max(areas) >= 0.01 * sal.size:
            biggest = objects[int(np.argmax(areas))]
            assert biggest["salient"]


def test_same_seed_same_bytes_even_in_another_process():
    a = generate(3, 5, 64)
    assert digest(a) == digest(generate(3, 5, 64))
    code = ("import hashlib, numpy as np;"
            "from composite_tasking.synthetic import generate;"
            "s = generate(3, 5, 64); h = hashlib.sha256();"
            "[h.update(np.ascontiguousarray(s[k]).tobytes()) for k in "
            "('image','semseg','parts','edges','saliency','normals')];"
            "print(h.hexdigest())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest(a)
    assert digest(generate(4, 5, 64)) != digest(a) and digest(generate(3, 6, 64)) != digest(a)


def test_any_size_renders_the_same_scene():
    small, wide = generate(11, 2, 48), generate(11, 2, (120, 200))
    assert small["image"].shape == (48, 48, 3) and wide["image"].shape == (120, 200, 3)
    assert [o["class"] for o in small["meta"]["objects"]] == [o["class"] for o in wide["meta"]["objects"]]
    assert generate(11, 2, 1)["image"].shape == (1, 1, 3)
    with pytest.raises(ValueError, match="positive"):
        generate(11, 2, 0)


def test_the_world_varies_and_covers_every_class():
    seen = set()
    counts, lights = [], set()
    for i in range(80):
        sc = make_scene(0, i)
        seen |= {o["class"] for o in sc.objects}
        counts.append(len(sc.objects))
        lights.add(round(sc.ambient, 3))
    assert seen == set(OBJECTS) == set(SEMSEG_CLASSES[1:])
    assert min(counts) >= 1 and max(counts) >= 5
    assert len(lights) > 70


def test_scene_config_restricts_classes():
    cfg = SceneConfig(classes=("car", "dog"), min_objects=2, max_objects=3)
    for i in range(5):
        assert {o["class"] for o in make_scene(0, i, cfg).objects} <= {"car", "dog"}
    with pytest.raises(ValueError, match="unknown object class"):
        SceneConfig(classes=("unicorn",))


@pytest.mark.parametrize("kind", ["ellipsoid", "box", "cylinder"])
def test_ray_casting_hits_the_analytic_surface(kind):
    prim = Primitive(kind, np.array([0.3, -0.2, -5.0]), rotation(0.4, 0.2, 0.1),
                     np.array([0.8, 0.8, 0.5]), 0)  # fmt: skip
    rng = np.random.default_rng(0)
    d = np.c_[rng.uniform(-0.2, 0.2, 2000), rng.uniform(-0.2, 0.2, 2000), -np.ones(2000)]
    d = (d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32)
    t, dl, ol = intersect(prim, np.zeros(3), d)
    hit = np.isfinite(t)
    assert 100 < hit.sum() < 2000
    p, n = surface(prim, ol, dl[hit], t[hit])
    s = prim.size
    if kind == "ellipsoid":
        np.testing.assert_allclose(((p / s) ** 2).sum(1), 1, atol=1e-3)
    elif kind == "box":
        np.testing.assert_allclose(np.abs(p / s).max(1), 1, atol=1e-3)
    else:
        on_side = np.isclose(np.hypot(p[:, 0], p[:, 1]), s[0], atol=1e-3)
        on_cap = np.isclose(np.abs(p[:, 2]), s[2], atol=1e-3)
        assert (on_side | on_cap).all()
    # normals face the camera (the first surface hit is a front face)
    assert ((n * d[hit]).sum(1) < 1e-4).all()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1, atol=1e-5)
