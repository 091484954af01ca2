"""The parts of a labelling run on their own: where the palettes come from
(:mod:`composite_tasking.label.palettes`) and the plan made before anything is labelled
(:mod:`composite_tasking.label.plan`): which settings a store records, what becomes of
each image. Real images and rule files, a real store, a tiny random CTN on the CPU."""

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from composite_tasking.label import LabelError, image_rng, label_images
from composite_tasking.label.palettes import (FolderPalettes, NetPalettes, RulePalettes, SemanticPalettes,
                                              palette_source)  # fmt: skip
from composite_tasking.label.plan import (AGAIN, CHANGED, COMPLETE, KEPT, KEPT_CHANGED, NEW, OTHER_SETTINGS,
                                          image_decision, plan_run, wanted_settings)  # fmt: skip
from composite_tasking.label.reading import Reader
from composite_tasking.palette import load_rule, rule_fingerprint
from composite_tasking.store import LabelStore
from composite_tasking.synthetic import generate

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 40)
RULES = Path(__file__).resolve().parents[1] / "src" / "composite_tasking" / "rules"


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint):
    from composite_tasking.inference import Predictor

    return Predictor(tiny_checkpoint, device="cpu")


def write_images(folder, names, seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        iio.imwrite(folder / name, generate(seed, k, SIZE)["image"])
    return folder


def read_all(folder, source, names):
    todo = [(folder / n, n, Path(n)) for n in names]
    reader = Reader(todo, source.folder, ahead=0, rule_palette=source.rule_palette)
    return [reader.get() for _ in names]


# ------------------------------------------------------------------------ palette sources


def test_a_semantic_rule_file_makes_palettes_from_the_batchs_own_semantics(tmp_path, predictor):
    source = palette_source("semantics", str(RULES / "r3.yaml"), predictor)
    assert isinstance(source, SemanticPalettes) and source.origin == "semantics"
    assert source.semantic_rule is source.rule and source.rule.name == load_rule(RULES / "r3.yaml").name
    assert source.folder is None and source.rule_palette is None  # nothing made by the reader
    folder = write_images(tmp_path / "in", ["a.png"])
    (item,) = read_all(folder, source, ["a.png"])
    assert item.palette is None and source.palette(item) is None
    assert isinstance(palette_source("semantics", None, predictor), SemanticPalettes)  # R2, the default


def test_a_rule_without_semantics_is_drawn_by_the_reader_from_the_seed_and_the_id(tmp_path, predictor):
    source = palette_source("semantics", "random", predictor, seed=5)
    assert isinstance(source, RulePalettes) and source.origin == "rule" and source.semantic_rule is None
    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    a, b = read_all(folder, source, ["a.png", "b.png"])
    expected = load_rule("random").palette(SIZE, rng=image_rng(5, "a.png"))
    assert np.array_equal(a.palette, expected) and np.array_equal(source.palette(a), expected)
    assert not np.array_equal(a.palette, b.palette)  # each image its own draw
    again = palette_source("semantics", "random", predictor, seed=5)
    assert np.array_equal(read_all(folder, again, ["a.png"])[0].palette, expected)  # the same on a resume
    other = palette_source("semantics", "random", predictor, seed=6)
    assert not np.array_equal(read_all(folder, other, ["a.png"])[0].palette, expected)


def test_a_palette_folder_is_read_beside_each_image_and_records_no_rule(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png"])
    palettes = tmp_path / "palettes"
    palettes.mkdir()
    painted = np.full(SIZE, 3, np.uint8)
    painted[:, :10] = 1
    iio.imwrite(palettes / "a.png", painted)
    source = palette_source(str(palettes), None, predictor)
    assert isinstance(source, FolderPalettes) and source.rule is None
    assert source.origin == f"folder:{palettes.resolve()}" and source.folder == palettes.resolve()
    (item,) = read_all(folder, source, ["a.png"])
    assert np.array_equal(source.palette(item), painted)
    with pytest.raises(LabelError, match="leave out --rule R2"):
        palette_source(str(palettes), "R2", predictor)
    with pytest.raises(LabelError, match="'semantics', 'net' or a folder"):
        palette_source(str(tmp_path / "absent"), None, predictor)


def test_the_palette_network_predicts_in_the_labelling_thread_under_its_own_rule(tmp_path, tiny_checkpoint):
    from composite_tasking.inference import Predictor

    pred = Predictor(tiny_checkpoint, device="cpu", palette_model="default")  # the bundled one: R2
    source = palette_source("net", None, pred)
    assert isinstance(source, NetPalettes) and source.origin == "net" and source.rule.name == "R2"
    assert source.model_sha256 == pred.palette_info.sha256 and source.rule_palette is None
    folder = write_images(tmp_path / "in", ["a.png"])
    (item,) = read_all(folder, source, ["a.png"])
    assert item.palette is None  # not the reader's work
    assert np.array_equal(source.palette(item), pred.palette_from_net(item.image))
    with pytest.raises(LabelError, match="trained for rule R2"):
        palette_source("net", "S:edges", pred)


# ------------------------------------------------------------------------ the plan


def test_the_settings_a_store_records_name_the_model_the_rule_and_the_palettes(predictor, tmp_path):
    wanted = wanted_settings(predictor, palette_source("semantics", "mosaic", predictor))
    mosaic = load_rule("mosaic")
    assert list(wanted) == ["model_sha256", "model", "rule", "rule_sha256", "palette_from", "scale"]
    assert wanted["rule"] == "mosaic" and wanted["rule_sha256"] == rule_fingerprint(mosaic)
    assert wanted["palette_from"] == "rule" and wanted["model_sha256"] == predictor.model_sha256
    (tmp_path / "p").mkdir()
    folder = wanted_settings(predictor, palette_source(str(tmp_path / "p"), None, predictor))
    assert folder["rule"] is None and folder["rule_sha256"] is None and folder["palette_from"].startswith("folder:")


def test_a_new_store_is_planned_in_full_and_records_the_run(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["b.png", "a.png", "c.png"])
    out = tmp_path / "s.zarr"
    source = palette_source("semantics", "mosaic", predictor)
    plan = plan_run([folder], out, predictor, source)
    assert [i for _, i, _ in plan.todo] == plan.all_ids == ["a.png", "b.png", "c.png"]
    assert plan.todo[0][0] == folder / "a.png" and plan.todo[0][2] == Path("a.png")
    assert LabelStore(out, mode="r").attrs["labelling"] == plan.wanted == wanted_settings(predictor, source)
    assert plan.write_attrs["run"] == plan.run_id and plan.write_attrs["palette_origin"] == "rule"
    assert plan.write_attrs["rule"] == "mosaic" and plan.write_attrs["precision"] == predictor.precision
    shard = plan_run([folder], out, predictor, source, shard=(1, 2))
    assert [i for _, i, _ in shard.todo] == ["b.png"] and shard.all_ids == plan.all_ids


def test_each_image_is_decided_by_its_record_its_file_and_the_settings(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png", "b.png", "c.png", "d.png"])
    out = tmp_path / "s.zarr"
    assert label_images([folder], out, model=predictor, rule="mosaic", pipeline=False, store_image=False).ok
    with LabelStore(out, mode="a") as st:
        edges = st.read_sample("c.png").labels["edges"]
        st.update_labels("c.png", {"edges": edges}, provenance={"edges": "corrected"})
        st.update_labels("d.png", {"edges": edges}, provenance={"edges": "corrected"})
    iio.imwrite(folder / "b.png", generate(9, 0, SIZE)["image"])  # another picture under its name
    iio.imwrite(folder / "d.png", generate(9, 1, SIZE)["image"])
    source = palette_source("semantics", "mosaic", predictor)
    plan = plan_run([folder], out, predictor, source)
    records = plan.records
    image_wanted = {"model_sha256": predictor.model_sha256, "rule": "mosaic",
                    "rule_sha256": rule_fingerprint(load_rule("mosaic")), "palette_from": "rule",
                    "palette_model_sha256": None, "scale": str(predictor.scale)}  # fmt: skip
    decide = {i: image_decision(records.get(i), folder / i, image_wanted, False, None) for i in plan.all_ids}
    assert decide == {"a.png": COMPLETE, "b.png": CHANGED, "c.png": KEPT, "d.png": KEPT_CHANGED}
    assert image_decision(None, folder / "a.png", image_wanted, False, None) == NEW
    assert image_decision(records["a.png"], folder / "a.png", image_wanted, True, None) == AGAIN
    assert image_decision(records["a.png"], folder / "a.png", image_wanted, False, "another-run") == AGAIN
    run_of_a = records["a.png"]["run"]
    assert image_decision(records["a.png"], folder / "a.png", image_wanted, False, run_of_a) == COMPLETE
    other = dict(image_wanted, rule="random", rule_sha256=rule_fingerprint(load_rule("random")))
    assert image_decision(records["a.png"], folder / "a.png", other, False, None) == OTHER_SETTINGS
    # the plan files them into the summary; the person's work is never in the todo list
    s = plan.summary
    assert [i for _, i, _ in plan.todo] == ["b.png"] and s.changed == ["b.png"]
    assert s.kept == ["c.png", "d.png"] and s.kept_changed == ["d.png"] and s.skipped_complete == ["a.png"]


def test_other_settings_are_refused_and_an_overwrite_marks_the_store_until_it_is_done(tmp_path, predictor):
    folder = write_images(tmp_path / "in", ["a.png", "b.png"])
    out = tmp_path / "s.zarr"
    assert label_images([folder], out, model=predictor, rule="mosaic", pipeline=False).ok
    random = palette_source("semantics", "random", predictor)
    with pytest.raises(LabelError, match=r"--rule mosaic \(stored\) vs random \(asked\)"):
        plan_run([folder], out, predictor, random)
    plan = plan_run([folder], out, predictor, random, overwrite=True)
    assert [i for _, i, _ in plan.todo] == ["a.png", "b.png"]
    assert LabelStore(out, mode="r").attrs["labelling"]["overwrite"] == plan.run_id == plan.write_attrs["run"]
    # interrupted before anything was written: the same command without --overwrite continues it
    again = plan_run([folder], out, predictor, random)
    assert [i for _, i, _ in again.todo] == ["a.png", "b.png"] and again.write_attrs["run"] == plan.run_id
    again.summary.done[:] = ["b.png", "a.png"]  # as if both were written, in the writers' order
    again.finish()
    assert again.summary.done == ["a.png", "b.png"]  # input order
    assert "overwrite" not in LabelStore(out, mode="r").attrs["labelling"]
