"""``ctn annotate``: napari with the widgets docked and the images loaded (under Xvfb)."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401

from composite_tasking import cli  # noqa: E402
from composite_tasking._napari.annotate import WIDGETS, open_annotator  # noqa: E402
from composite_tasking._napari.layer_pool import is_spare  # noqa: E402
from composite_tasking._napari.palette_widget import TaskPaletteWidget  # noqa: E402
from composite_tasking._napari.predict_widget import PredictWidget  # noqa: E402
from composite_tasking.samples import sample_paths  # noqa: E402

pytestmark = pytest.mark.gui


def test_open_annotator_docks_widgets_and_opens_the_series(make_napari_viewer, tmp_path):
    from composite_tasking._napari.series_widget import AnnotatorWidget
    from composite_tasking.images import read_image
    from composite_tasking.store import LabelStore

    store = tmp_path / "one.zarr"
    with LabelStore(store, mode="a") as st:
        st.write_sample("stored", {"image": np.full((16, 16, 3), 7, np.uint8),
                                   "palette": np.ones((16, 16), np.uint8)}, provenance={})  # fmt: skip
    (tmp_path / "notes.txt").write_text("not an image")
    paths = [*sample_paths()[:2], store, tmp_path / "notes.txt"]
    viewer = make_napari_viewer()

    viewer, widgets, problems = open_annotator(paths, viewer=viewer, model="some/model",
                                               device="cpu")  # fmt: skip

    assert list(widgets)[:2] == list(WIDGETS) == ["Label images", "Fine-tune"]
    assert isinstance(widgets["Label images"], AnnotatorWidget)
    assert isinstance(widgets["Task Palette"], TaskPaletteWidget)
    assert isinstance(widgets["Predict"], PredictWidget)
    assert [p for p, _ in problems] == [str(tmp_path / "notes.txt")]
    first, second = sample_paths()[:2]
    session = widgets["Series"].session
    # the store's images first, then the files; the store is where everything is saved
    assert [i.image_id for i in session.items] == ["stored", first.name, second.name]
    assert session.store_path == store
    # one image at a time: the first (not reviewed) one, with its palette
    assert [ly.name for ly in viewer.layers] == ["stored", "stored palette"]
    assert widgets["Predict"].image_layer is viewer.layers["stored"]
    widgets["Series"].next()  # the palette waits hidden for the next image's (layer_pool)
    assert [ly.name for ly in viewer.layers if not is_spare(ly)] == [first.name]
    assert [ly.visible for ly in viewer.layers if is_spare(ly)] == [False]
    np.testing.assert_array_equal(viewer.layers[first.name].data, read_image(first))
    # a relative model path is made explicit (against the current directory)
    assert widgets["Predict"].model_spec() == (os.path.abspath("some/model"), "cpu")


def test_open_annotator_names_what_it_cannot_open_once(make_napari_viewer, tmp_path):
    import shutil

    import zarr

    other = tmp_path / "other.zarr"  # a zarr store, not a label store
    zarr.open_group(str(other), mode="w").create_array("a", shape=(4, 4), dtype="u1")
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(sample_paths()[1], folder / "b.png")
    zarr.open_group(str(folder / "inner.zarr"), mode="w").create_array("x", shape=(2,), dtype="u1")
    missing = tmp_path / "nonexistent.png"
    paths = [sample_paths()[0], missing, other, folder]

    viewer, widgets, problems = open_annotator(paths, viewer=make_napari_viewer(),
                                               device="cpu")  # fmt: skip

    NOT_A_STORE = "a zarr folder that is not a label store of this package: not opened"
    assert sorted(problems) == sorted([(str(other), NOT_A_STORE),
                                       (str(missing), "no such file or folder"),
                                       (str(folder / "inner.zarr"), "a zarr folder inside a folder: not searched "
                                        "(give a label store as an input of its own)")])  # fmt: skip
    assert [i.image_id for i in widgets["Series"].session.items] == [sample_paths()[0].name, "b.png"]
    assert [ly.name for ly in viewer.layers] == [sample_paths()[0].name]


def test_open_annotator_without_images_opens_an_empty_dock(make_napari_viewer, tmp_path):
    viewer, widgets, problems = open_annotator([], viewer=make_napari_viewer(), device="cpu")
    assert problems == [] and widgets["Series"].session is None and len(viewer.layers) == 0
    assert not widgets["Series"].next_button.isEnabled()
    # a folder with no images: named, nothing opened
    empty = tmp_path / "empty"
    empty.mkdir()
    assert widgets["Series"].open_session([empty]) is None
    assert "no images to annotate" in widgets["Series"].message_label.text()


def test_cli_annotate(monkeypatch, tmp_path, capsys):
    calls = {}

    def fake_open(images, model=None, device=None, store=None, order="file", freeze_imports=False):
        calls["open"] = (list(images), model, device)
        return None, {}, [("bad.png", "not an image")]

    monkeypatch.setattr("composite_tasking._napari.annotate.open_annotator", fake_open)
    monkeypatch.setattr("napari.run", lambda *a, **k: calls.setdefault("run", True))
    image = str(sample_paths()[0])
    assert cli.main(["annotate", image, "--device", "cpu"]) == cli.EXIT_PARTIAL
    assert calls == {"open": ([image], None, "cpu"), "run": True}
    assert "skipped bad.png: not an image" in capsys.readouterr().err

    # nothing of what was given exists: nothing to open
    assert cli.main(["annotate", str(tmp_path / "missing.png")]) == cli.EXIT_USAGE
    assert "no such file" in capsys.readouterr().err

    # some inputs exist: napari opens with them, the others are named, exit code 1
    calls.clear()
    monkeypatch.setattr("composite_tasking._napari.annotate.open_annotator",
                        lambda images, model=None, device=None, store=None, order="file", freeze_imports=False: (
                            calls.setdefault("open", list(images)), {},
                            [(images[1], "no such file or folder")]))  # fmt: skip
    missing = str(tmp_path / "missing.png")
    assert cli.main(["annotate", image, missing]) == cli.EXIT_PARTIAL
    assert calls == {"open": [image, missing], "run": True}
    assert f"skipped {missing}: no such file or folder" in capsys.readouterr().err
