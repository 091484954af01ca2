"""Which images `ctn label` relabels, skips or keeps when it writes into a store that
already holds images: ids that name one file each, settings checked image by image,
a person's work kept, palette files found by their path.

A tiny random CTN (ResNet-18) on the CPU, images of 32 x 40 pixels, the core function
(:func:`composite_tasking.label.label_images`) and, where the command line matters,
real ``ctn label`` subprocesses.
"""

import os
import shutil
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest

from composite_tasking.label import LabelError, image_ids, label_images
from composite_tasking.store import LabelStore
from composite_tasking.synthetic import generate

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 40)
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
ENV.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def image(seed: int, i: int) -> np.ndarray:
    return generate(seed, i, SIZE)["image"]


def write_images(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        iio.imwrite(folder / name, image(seed, k))
    return folder


def run(inputs, out, predictor, **kw):
    if "palette_from" not in kw:  # a palette folder takes no rule
        kw.setdefault("rule", "mosaic")
    return label_images(inputs, out, model=predictor, batch_size=2, pipeline=False, **kw)


def sources(out):
    st = LabelStore(out, mode="r")
    return {i: st.image_attrs(i)["image"]["source"] for i in st.ids()}


# ------------------------------------------------------------------------ image ids


def test_two_folders_with_one_file_name_are_both_labelled_run_after_run(tmp_path, predictor):
    day1 = write_images(tmp_path / "day1", ["IMG_0001.png", "IMG_0002.png"], seed=1)
    day2 = write_images(tmp_path / "day2", ["IMG_0001.png"], seed=2)  # other pixels, same name
    out = tmp_path / "s.zarr"
    first = run([day1], out, predictor)
    assert first.done == ["IMG_0001.png", "IMG_0002.png"]
    second = run([day2], out, predictor)
    assert len(second.done) == 1 and second.skipped_complete == []  # not taken for day1's image
    new = second.done[0]
    assert new.startswith("IMG_0001.png-")
    src = sources(out)
    assert src["IMG_0001.png"] == str((day1 / "IMG_0001.png").resolve())
    assert src[new] == str((day2 / "IMG_0001.png").resolve())
    # run again, one folder or both, in either order: nothing is labelled twice
    for inputs in ([day2], [day2, day1], [day1, day2]):
        again = run(inputs, out, predictor)
        assert again.done == [] and sorted(again.skipped_complete) == sorted(
            [new] + (["IMG_0001.png", "IMG_0002.png"] if day1 in inputs else []))
    assert len(LabelStore(out, mode="r").ids()) == 3


def test_ids_do_not_depend_on_files_added_later(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["photo_1.png"], seed=3)
    out = tmp_path / "s.zarr"
    assert run([folder], out, predictor).done == ["photo_1.png"]
    iio.imwrite(folder / "photo 1.png", image(4, 0))  # the same id once cleaned up
    summary = run([folder], out, predictor)
    assert summary.skipped_complete == ["photo_1.png"]
    assert len(summary.done) == 1 and summary.done[0].startswith("photo_1.png-")
    assert sources(out)[summary.done[0]] == str((folder / "photo 1.png").resolve())


def test_a_moved_folder_resumes_without_relabelling(tmp_path, predictor):
    old = write_images(tmp_path / "old", ["a.png", "b.png"], seed=5)
    out = tmp_path / "s.zarr"
    run([old], out, predictor)
    new = tmp_path / "new"
    shutil.move(old, new)
    iio.imwrite(new / "c.png", image(5, 9))
    summary = run([new], out, predictor)
    assert summary.skipped_complete == ["a.png", "b.png"] and summary.done == ["c.png"]


def test_long_paths_get_ids_the_store_takes(tmp_path, predictor):
    deep = tmp_path / "in" / ("a" * 100) / ("b" * 100)
    write_images(deep, ["c" * 60 + ".png", "d" * 60 + ".png"])
    summary = run([tmp_path / "in"], tmp_path / "s.zarr", predictor)
    assert len(summary.done) == 2 and summary.failed == []
    assert all(len(i) <= 200 for i in summary.done)
    assert summary.done[0].endswith(".png-" + summary.done[0].rsplit("-", 1)[1])
    assert len(set(summary.done)) == 2


def test_image_ids_without_a_store_are_unique_and_stable(tmp_path):
    a = write_images(tmp_path / "a", ["x.png"])
    b = write_images(tmp_path / "b", ["x.png"])
    ids = image_ids([a / "x.png", b / "x.png"], [a, b])
    assert ids[0] == "x.png" and ids[1].startswith("x.png-") and len(set(ids)) == 2


# ------------------------------------------------------------- settings, image by image


def test_a_partial_overwrite_does_not_leave_a_silently_mixed_store(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "s.zarr"
    run([folder], out, predictor, rule="mosaic")
    run([folder / "a.png"], out, predictor, rule="S:edges", overwrite=True)
    with pytest.raises(LabelError, match=r"2 image\(s\) of .* other settings .*'b.png'.*mosaic"):
        run([folder], out, predictor, rule="S:edges")
    summary = run([folder], out, predictor, rule="S:edges", overwrite=True)
    assert summary.done == ["a.png", "b.png", "c.png"]
    st = LabelStore(out, mode="r")
    assert {st.image_attrs(i)["rule"] for i in st.ids()} == {"S:edges"}
    assert run([folder], out, predictor, rule="S:edges").skipped_complete == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("new_rule", ["S:edges", "mosaic"])  # other settings, and the same ones again
def test_an_interrupted_overwrite_is_continued_by_the_same_command_without_overwrite(tmp_path, predictor, new_rule):
    """Issue #18: an interrupted --overwrite could not be continued (the store refused
    the run without --overwrite, and --overwrite started over)."""
    folder = write_images(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png"])
    out = tmp_path / "s.zarr"
    run([folder], out, predictor, rule="mosaic")
    asked = iter([False, True])  # one batch of two, then stop: Ctrl-C's place
    first = run([folder], out, predictor, rule=new_rule, overwrite=True, should_stop=lambda: next(asked))
    assert first.stopped and first.done == ["a.png", "b.png"]
    rest = run([folder], out, predictor, rule=new_rule)  # no --overwrite: continues
    assert rest.done == ["c.png", "d.png"] and rest.skipped_complete == ["a.png", "b.png"]
    st = LabelStore(out, mode="r")
    assert {st.image_attrs(i)["rule"] for i in st.ids()} == {new_rule}
    assert "overwrite" not in st.attrs["labelling"]  # finished: a next run skips everything
    again = run([folder], out, predictor, rule=new_rule)
    assert again.skipped_complete == ["a.png", "b.png", "c.png", "d.png"] and again.done == []


def test_a_refusal_names_the_flags_that_differ_and_a_rule_palette_is_recorded_as_the_rules(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png"])
    out = tmp_path / "s.zarr"
    run([folder], out, predictor, rule="mosaic")
    st = LabelStore(out, mode="r")
    assert st.image_attrs("a.png")["palette_origin"] == "rule"  # not "semantics": no semantics made it
    with pytest.raises(LabelError) as e:
        run([folder], out, predictor, rule="S:edges")
    msg = str(e.value)
    assert "--rule mosaic (stored) vs S:edges (asked)" in msg and "{" not in msg and "rule_sha256'" not in msg


def test_a_rule_file_edited_under_its_old_name_is_another_rule(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    rule = tmp_path / "mine.yaml"
    rule.write_text("name: mine\ndefault: edges\ntasks:\n  normals: [person]\n")
    out = tmp_path / "s.zarr"
    run([folder / "a.png"], out, predictor, rule=str(rule))
    rule.write_text("name: mine\ndefault: saliency\ntasks:\n  normals: [person]\n")
    with pytest.raises(LabelError, match=r"--rule \(its content\)"):
        run([folder], out, predictor, rule=str(rule))


def test_a_copied_model_and_a_relative_palette_folder_are_the_same_settings(tmp_path, tiny_checkpoint, monkeypatch):
    from composite_tasking.inference import Predictor

    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    pals = tmp_path / "pals"
    pals.mkdir()
    for name in ("a.png", "b.png"):
        iio.imwrite(pals / name, np.full(SIZE, 3, np.uint8))
    copy = shutil.copytree(tiny_checkpoint, tmp_path / "copy")
    out = tmp_path / "s.zarr"
    run([folder / "a.png"], out, Predictor(tiny_checkpoint, device="cpu"), palette_from=str(pals))
    monkeypatch.chdir(tmp_path)
    summary = run([folder], out, Predictor(copy, device="cpu"), palette_from="pals")
    assert summary.done == ["b.png"] and summary.skipped_complete == ["a.png"]


def test_a_persons_work_is_never_relabelled(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "s.zarr"
    run([folder], out, predictor, rule="S:edges")
    with LabelStore(out, mode="a") as st:
        edges = st.read_sample("a.png").labels["edges"].copy()
        edges[:4] = 1
        st.update_labels("a.png", {"edges": edges}, provenance={"edges": "corrected"})
    summary = run([folder], out, predictor, rule="S:edges", overwrite=True)
    assert summary.kept == ["a.png"] and summary.done == ["b.png"]
    summary = run([folder], out, predictor, rule="mosaic", overwrite=True)  # another rule too
    assert summary.kept == ["a.png"] and summary.done == ["b.png"]
    st = LabelStore(out, mode="r")
    assert st.image_attrs("a.png")["provenance"]["edges"] == "corrected"
    assert (st.read_sample("a.png").labels["edges"][:4] == 1).all()


def test_the_palette_network_follows_its_own_rule(tmp_path, tiny_checkpoint):
    from composite_tasking.inference import Predictor

    folder = write_images(tmp_path / "in", ["a.png"])
    pred = Predictor(tiny_checkpoint, device="cpu", palette_model="default")  # the bundled one: R2
    with pytest.raises(LabelError, match="trained for rule R2.*not S:edges"):
        label_images([folder], tmp_path / "x.zarr", model=pred, palette_from="net", rule="S:edges")
    assert not (tmp_path / "x.zarr").exists()
    summary = label_images([folder], tmp_path / "s.zarr", model=pred, palette_from="net", pipeline=False)
    attrs = LabelStore(tmp_path / "s.zarr", mode="r").image_attrs(summary.done[0])
    assert attrs["rule"] == "R2" and attrs["palette_origin"] == "net" and attrs["palette_model_sha256"]


# -------------------------------------------------------------------------- palette files


def test_palette_files_are_found_by_the_images_path(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["dup.png", "dup.jpg.png"])  # two images
    write_images(tmp_path / "in" / "sub", ["n.png"])
    write_images(tmp_path / "in" / "sub2", ["n.png"])
    iio.imwrite(folder / "dup.jpg", image(0, 7), extension=".jpg")
    pals = tmp_path / "pals"
    (pals / "sub").mkdir(parents=True)
    for name, value in [("dup.png", 1), ("dup.jpg.png", 2), ("dup.jpg.png.png", 5),
                        ("sub/n.png", 3), ("n.png", 4)]:  # fmt: skip
        iio.imwrite(pals / name, np.full(SIZE, value, np.uint8))
    out = tmp_path / "s.zarr"
    summary = run([folder], out, predictor, palette_from=str(pals))
    assert summary.failed == []
    st = LabelStore(out, mode="r")
    value = {i: int(np.unique(st.read_sample(i).palette)[0]) for i in st.ids()}
    assert value == {"dup.png": 1, "dup.jpg": 2, "dup.jpg.png": 5, "sub__n.png": 3, "sub2__n.png": 4}


@pytest.mark.parametrize("bad", ["empty", "garbage", "values"])
def test_a_bad_palette_file_skips_its_image_only(tmp_path, predictor, bad):
    folder = write_images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    pals = tmp_path / "pals"
    pals.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        iio.imwrite(pals / name, np.full(SIZE, 2, np.uint8))
    if bad == "empty":
        (pals / "b.png").write_bytes(b"")
    elif bad == "garbage":
        (pals / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 50)
    else:
        iio.imwrite(pals / "b.png", np.full(SIZE, 9, np.uint8))  # no task 8
    summary = run([folder], tmp_path / "s.zarr", predictor, palette_from=str(pals))
    assert summary.done == ["a.png", "c.png"]
    assert len(summary.failed) == 1 and summary.failed[0][0] == str(folder / "b.png")
    assert "palette" in summary.failed[0][1]


def _palette_folder(path, names, value=3):
    path.mkdir(parents=True, exist_ok=True)
    for name in names:
        iio.imwrite(path / name, np.full(SIZE, value, np.uint8))
    return path


def test_a_palette_folder_records_no_rule_and_takes_none(tmp_path, predictor):
    """The palettes come from PNG files, not from a rule: none is recorded (a recorded
    rule, R2 by default, made fine-tuning the store under another rule refuse them), and
    a rule given with the folder is refused before anything is written."""
    from composite_tasking.datasets import check_stored_palettes

    folder = write_images(tmp_path / "in", ["a.png"])
    pals = _palette_folder(tmp_path / "pals", ["a.png"])
    out = tmp_path / "s.zarr"
    with pytest.raises(LabelError, match=r"--palette-from .*pals.* not from a rule; leave out --rule R3"):
        run([folder], out, predictor, palette_from=str(pals), rule="R3")
    assert not out.exists()
    assert run([folder], out, predictor, palette_from=str(pals)).done == ["a.png"]
    st = LabelStore(out, mode="r")
    attrs = st.image_attrs("a.png")
    assert "rule" not in attrs and "rule_sha256" not in attrs
    assert attrs["palette_origin"] == f"folder:{pals.resolve()}"
    assert st.attrs["labelling"]["rule"] is None
    for rule in ("R2", "R3", "mosaic"):  # fine-tuning under any rule: not refused
        check_stored_palettes(out, rule)


def test_a_palette_folder_store_of_an_earlier_version_resumes(tmp_path, predictor):
    """Earlier versions recorded --rule's name (R2 by default) on images whose palettes
    came from a folder; such a store resumes without --overwrite (no rule made them)."""
    import zarr

    from composite_tasking.palette import load_rule, rule_fingerprint

    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    pals = _palette_folder(tmp_path / "pals", ["a.png", "b.png"])
    out = tmp_path / "s.zarr"
    run([folder / "a.png"], out, predictor, palette_from=str(pals))
    old = {"rule": "R2", "rule_sha256": rule_fingerprint(load_rule("R2"))}  # as they wrote it
    with LabelStore(out, mode="a") as st:
        st.update_attrs({"labelling": {**st.attrs["labelling"], **old}})
    group = zarr.open_group(str(out / "a.png"), mode="r+", zarr_format=3)
    attrs = group.attrs.asdict()
    attrs["composite_tasking"].update(old)
    group.attrs.put(attrs)
    assert LabelStore(out, mode="r").image_attrs("a.png")["rule"] == "R2"
    summary = run([folder], out, predictor, palette_from=str(pals))  # no --overwrite
    assert summary.skipped_complete == ["a.png"] and summary.done == ["b.png"]
    assert "rule" not in LabelStore(out, mode="r").image_attrs("b.png")


# ------------------------------------------------------------------------ usage errors


@pytest.mark.parametrize(("env", "message"), [
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc'"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, "0 to 1 with WORLD_SIZE=2, got RANK='5'"),
])  # fmt: skip
def test_a_bad_torchrun_environment_is_named(tmp_path, predictor, monkeypatch, env, message):
    folder = write_images(tmp_path / "in", ["a.png"])
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(LabelError, match=message):
        run([folder], tmp_path / "s.zarr", predictor)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.parametrize("preview", ["sheet.jpg", "folder"])
def test_the_preview_must_be_a_png_path(tmp_path, predictor, preview):
    folder = write_images(tmp_path / "in", ["a.png"])
    (tmp_path / "folder").mkdir()
    with pytest.raises(LabelError, match="preview is a PNG"):
        run([folder], tmp_path / "s.zarr", predictor, preview=tmp_path / preview)
    assert not (tmp_path / "s.zarr").exists()


def test_ctn_label_labels_a_second_folders_namesakes(tmp_path, tiny_checkpoint):
    """The review's case, as a user runs it: `ctn label day1`, then `ctn label day2`."""
    day1 = write_images(tmp_path / "day1", ["IMG_0001.png"], seed=1)
    day2 = write_images(tmp_path / "day2", ["IMG_0001.png"], seed=2)
    out = tmp_path / "s.zarr"
    for folder in (day1, day2):
        proc = subprocess.run([sys.executable, "-m", "composite_tasking.cli", "label", str(folder),
                               "--out", str(out), "--rule", "S:edges", "--model", str(tiny_checkpoint),
                               "--device", "cpu", "--no-preview"], capture_output=True, text=True,
                              env=ENV, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "labelled 1 image(s)" in proc.stdout, proc.stdout
    assert len(LabelStore(out, mode="r").ids()) == 2


def test_a_file_keeps_the_id_the_store_holds_it_under(tmp_path):
    """However an earlier version (or a symbolic link) named it: the store's record of
    the file's path wins, so resuming never labels a file twice."""
    folder = write_images(tmp_path / "in", ["x.png", "y.png"])
    records = {"old-name-for-x": {"image": {"source": str((folder / "x.png").resolve())}}}
    assert image_ids([folder / "x.png", folder / "y.png"], [folder], records) == ["old-name-for-x", "y.png"]


def test_ids_up_to_200_characters_are_kept_whole(tmp_path):
    name = "n" * 190 + ".png"  # 194 characters: a valid id, as before
    folder = write_images(tmp_path / "in", [name])
    assert image_ids([folder / name], [folder]) == [name]
    # its namesake's id (with a hash) is cut from the front to 200
    other = write_images(tmp_path / "other", [name])
    ids = image_ids([folder / name, other / name], [folder, other])
    assert ids[0] == name and len(ids[1]) == 200 and ids[1].endswith(".png-" + ids[1][-8:])


def test_a_shard_decodes_only_the_files_it_labels(tmp_path, predictor, monkeypatch):
    """Telling moved files by their pixels costs a decode each: a shard pays for its own."""
    import composite_tasking.image_ids as ids_module

    old = write_images(tmp_path / "old", [f"{k}.png" for k in range(6)], seed=6)
    out = tmp_path / "s.zarr"
    run([old], out, predictor)
    new = tmp_path / "new"
    shutil.move(old, new)
    decoded = []
    real = ids_module._same_image
    monkeypatch.setattr(ids_module, "_same_image", lambda f, rec: decoded.append(f.name) or real(f, rec))
    summary = run([new], out, predictor, shard=(1, 3))
    assert sorted(decoded) == ["1.png", "4.png"]
    assert summary.skipped_complete == ["1.png", "4.png"] and summary.done == []
