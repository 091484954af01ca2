"""`ctn synth` as a user runs it: real subprocesses, a real store on disk."""

import subprocess
import sys

import imageio.v3 as iio
import numpy as np

from composite_tasking.store import LabelStore
from composite_tasking.synthetic import generate
from composite_tasking.synthetic.export import STORE_NAME, synthetic_id

CTN = [sys.executable, "-m", "composite_tasking.cli"]


def ctn(*args):
    return subprocess.run([*CTN, *map(str, args)], capture_output=True, text=True, timeout=300)


def test_synth_writes_pngs_and_a_ground_truth_store_that_match_the_generator(tmp_path):
    res = ctn("synth", tmp_path, "--n", 3, "--size", "48x64", "--seed", 9)
    assert res.returncode == 0, res.stderr
    assert "3 scene(s) written" in res.stdout
    store = LabelStore(tmp_path / STORE_NAME)
    assert store.ids() == [synthetic_id(9, i) for i in range(3)]
    for i in range(3):
        expected = generate(9, i, (48, 64))
        image_id = synthetic_id(9, i)
        png = iio.imread(tmp_path / "images" / f"{image_id}.png")
        assert np.array_equal(png, expected["image"])
        stored = store.read_sample(image_id)
        assert np.array_equal(stored.image, expected["image"])
        for task in ("semseg", "parts", "edges", "saliency"):
            assert np.array_equal(stored.labels[task], expected[task]), task
        np.testing.assert_array_equal(stored.labels["normals"], expected["normals"])
        assert set(stored.provenance.values()) == {"ground-truth"}
        assert stored.attrs["synthetic"]["objects"] == expected["meta"]["objects"]


def test_synth_resumes_and_rewrites_only_what_is_missing(tmp_path):
    assert ctn("synth", tmp_path, "--n", 2, "--size", 32, "--seed", 1).returncode == 0
    (tmp_path / "images" / f"{synthetic_id(1, 1)}.png").unlink()
    res = ctn("synth", tmp_path, "--n", 3, "--size", 32, "--seed", 1)
    assert res.returncode == 0, res.stderr
    assert "2 scene(s) written, 1 already there" in res.stdout
    assert len(LabelStore(tmp_path / STORE_NAME)) == 3


def test_synth_usage_errors_exit_2_and_write_nothing(tmp_path):
    for args in (["--n", "-1"], ["--n", "2", "--size", "0"], ["--n", "2", "--size", "abc"]):
        res = ctn("synth", tmp_path / "x", *args)
        assert res.returncode == 2 and "error" in res.stderr, args
    assert not (tmp_path / "x").exists()
    # an existing zarr group that is not a label store is refused, not overwritten
    import zarr

    zarr.open_group(tmp_path / "y" / STORE_NAME, mode="w", zarr_format=3)
    res = ctn("synth", tmp_path / "y", "--n", 1, "--size", 16)
    assert res.returncode == 2 and STORE_NAME in res.stderr


def test_synth_world_shifted_writes_the_shifted_world_beside_the_default(tmp_path):
    from composite_tasking.synthetic import get_world

    assert ctn("synth", tmp_path, "--n", 1, "--size", 32, "--seed", 4).returncode == 0
    res = ctn("synth", tmp_path, "--n", 2, "--size", "32x40", "--seed", 4, "--world", "shifted")
    assert res.returncode == 0, res.stderr
    assert "2 scene(s) written, 0 already there" in res.stdout
    store = LabelStore(tmp_path / STORE_NAME)
    shifted_ids = [synthetic_id(4, i, "shifted") for i in range(2)]
    assert sorted(store.ids()) == sorted([synthetic_id(4, 0), *shifted_ids])
    for i, image_id in enumerate(shifted_ids):
        expected = generate(4, i, (32, 40), get_world("shifted"))
        assert np.array_equal(iio.imread(tmp_path / "images" / f"{image_id}.png"), expected["image"])
        stored = store.read_sample(image_id)
        assert np.array_equal(stored.labels["semseg"], expected["semseg"])
        assert stored.attrs["synthetic"]["world"] == "shifted"
        assert stored.attrs["synthetic"]["objects"] == expected["meta"]["objects"]
    assert not np.array_equal(store.read_sample(shifted_ids[0]).image[:, :32],
                              store.read_sample(synthetic_id(4, 0)).image)  # fmt: skip


def test_synth_unknown_world_is_a_usage_error_naming_the_worlds(tmp_path):
    res = ctn("synth", tmp_path / "x", "--n", 1, "--world", "mars")
    assert res.returncode == 2
    assert "unknown world 'mars'; known worlds: default, shifted" in res.stderr
    assert not (tmp_path / "x").exists()
