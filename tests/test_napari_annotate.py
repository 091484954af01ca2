"""``ctn annotate``: napari with the widgets docked and the images loaded (under Xvfb)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")
pytest.importorskip("pytestqt")

# the model stack before any canvas (see composite_tasking._napari._compat)
import composite_tasking.model  # noqa: E402, F401

from composite_tasking import cli  # noqa: E402
from composite_tasking._napari.annotate import WIDGETS, open_annotator  # noqa: E402
from composite_tasking._napari.palette_widget import TaskPaletteWidget  # noqa: E402
from composite_tasking._napari.predict_widget import PredictWidget  # noqa: E402
from composite_tasking.samples import sample_paths  # noqa: E402

pytestmark = pytest.mark.gui


def test_open_annotator_docks_widgets_and_loads_images(make_napari_viewer, tmp_path):
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

    assert list(widgets) == list(WIDGETS)
    assert isinstance(widgets["Task Palette"], TaskPaletteWidget)
    assert isinstance(widgets["Predict"], PredictWidget)
    assert widgets["Predict"].model_spec() == ("some/model", "cpu")
    assert [p for p, _ in problems] == [str(tmp_path / "notes.txt")]
    names = [ly.name for ly in viewer.layers]
    assert names[:2] == ["stored", "stored palette"]  # the store, through the reader
    for p in sample_paths()[:2]:
        np.testing.assert_array_equal(viewer.layers[p.stem].data, read_image(p))
        assert not viewer.layers[p.stem].visible  # only the first input shows
    assert widgets["Predict"].image_layer is viewer.layers["stored"]


def test_cli_annotate(monkeypatch, tmp_path, capsys):
    calls = {}

    def fake_open(images, model=None, device=None):
        calls["open"] = (list(images), model, device)
        return None, {}, [("bad.png", "not an image")]

    monkeypatch.setattr("composite_tasking._napari.annotate.open_annotator", fake_open)
    monkeypatch.setattr("napari.run", lambda *a, **k: calls.setdefault("run", True))
    image = str(sample_paths()[0])
    assert cli.main(["annotate", image, "--device", "cpu"]) == cli.EXIT_PARTIAL
    assert calls == {"open": ([image], None, "cpu"), "run": True}
    assert "skipped bad.png: not an image" in capsys.readouterr().err

    assert cli.main(["annotate", str(tmp_path / "missing.png")]) == cli.EXIT_USAGE
    assert "no such file" in capsys.readouterr().err
