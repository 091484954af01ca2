"""The annotation session (composite_tasking.session): a series of images, its store, the
current image and the order, on real files and stores on disk; no Qt, no napari."""

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from composite_tasking.session import AnnotationSession, SessionError, default_store_for
from composite_tasking.store import LabelStore

H = W = 24


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(path)
    return path


def _stored(store, image_id, conf, provenance="pseudo", pixels=None):
    """An image with semseg everywhere; ``pixels``: the file whose pixels it holds (so
    that the folder's file gets this id, as after ``ctn label``)."""
    palette = np.ones((H, W), np.uint8)
    image = np.asarray(Image.open(pixels).convert("RGB")) if pixels else np.full((H, W, 3), 7, np.uint8)
    sample = {"image": image, "palette": palette,
              "semseg": np.zeros((H, W), np.uint8),
              "confidence": {"semseg": np.full((H, W), conf, np.float32)}}
    store.write_sample(image_id, sample, provenance={"semseg": provenance})


@pytest.fixture
def folder(tmp_path):
    f = tmp_path / "photos"
    for k, name in enumerate(["b.png", "a.png", "sub/c.png"]):
        _png(f / name, 10 * k)
    (f / "notes.txt").write_text("not an image")
    return f


def test_qt_and_napari_are_not_imported():
    code = ("import sys, composite_tasking.session as s; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PyQt6', 'PyQt5', 'napari', 'torch')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_folder_session_goes_through_its_images_in_file_order(folder):
    s = AnnotationSession.open([folder])
    assert [i.image_id for i in s.items] == ["a.png", "b.png", "sub__c.png"]  # the ids ctn label gives
    assert s.store_path == folder.resolve().with_name("photos-labels.zarr")
    assert not s.store_path.exists()  # made on the first save, not by opening
    heard = []
    s.subscribe(lambda event, session: heard.append((event, session.current.image_id)))
    assert s.current.image_id == "a.png"
    assert s.previous() is None and s.index == 0
    assert s.next().image_id == "b.png"
    s.next()
    assert s.next() is None and s.current.image_id == "sub__c.png"
    assert heard == [("current", "b.png"), ("current", "sub__c.png")]
    assert s.status_text().startswith("image 3 of 3, 0 reviewed")
    rgb = s.load_image("b.png")
    assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8 and rgb[0, 0, 0] == 0
    with pytest.raises(SessionError, match="no image 4 of 3|no image 4 in a session of 3"):
        s.go(3)


def test_reviewed_state_comes_from_the_store_and_a_reopened_session_resumes(folder):
    s = AnnotationSession.open([folder])
    store = LabelStore(s.store_path, "w")
    with pytest.raises(SessionError, match="not saved"):
        s.mark_reviewed("a.png")
    _stored(store, "a.png", 0.9, pixels=folder / "a.png")
    _stored(store, "b.png", 0.5, provenance="corrected", pixels=folder / "b.png")
    s.saved("a.png")
    assert s.is_stored("a.png") and not s.is_reviewed("a.png")
    assert s.mark_reviewed("a.png") == {"semseg": "reviewed"}
    assert s.is_reviewed("a.png") and s.reviewed_count == 1
    assert not s.is_reviewed("b.png")  # corrected is not done: the rest was not accepted
    assert LabelStore(s.store_path, "r").checked_masks("a.png")["semseg"].all()
    # reopened (the folder again, or its store alone): resumes at b.png
    again = AnnotationSession.open([folder])
    assert again.first_unreviewed() == 1 and again.items[1].image_id == "b.png"
    by_store = AnnotationSession.open([s.store_path])
    assert [i.image_id for i in by_store.items] == ["a.png", "b.png"]
    assert by_store.first_unreviewed() == 1
    # the store and a folder together: stored images first, then the new files
    both = AnnotationSession.open([s.store_path, folder])
    assert [i.image_id for i in both.items] == ["a.png", "b.png", "sub__c.png"]
    assert both.is_stored("a.png") and not both.is_stored("sub__c.png")
    # a stored image of another picture under a file's id: the file gets an id of its own
    _stored(store, "sub__c.png", 0.9)
    moved = AnnotationSession.open([folder])
    assert [i.image_id for i in moved.items][:2] == ["a.png", "b.png"]
    assert moved.items[2].image_id.startswith("sub__c.png-") and moved.load_image(moved.items[2].image_id)[0, 0, 0] == 20
    # taken back
    s.mark_reviewed("a.png", reviewed=False)
    assert not s.is_reviewed("a.png") and AnnotationSession.open([folder]).first_unreviewed() == 0


def test_correct_next_order_puts_the_most_expected_effort_first(folder):
    s = AnnotationSession.open([folder])
    store = LabelStore(s.store_path, "w")
    _stored(store, "a.png", 0.9, pixels=folder / "a.png")
    _stored(store, "b.png", 0.2, pixels=folder / "b.png")
    s.refresh()
    s.go(0)
    s.set_order("correct next")
    assert [i.image_id for i in s.items] == ["b.png", "a.png", "sub__c.png"]
    assert s.current.image_id == "a.png" and s.index == 1  # the current image stays current
    s.set_order("file")
    assert [i.image_id for i in s.items] == ["a.png", "b.png", "sub__c.png"]
    with pytest.raises(SessionError, match="unknown order"):
        s.set_order("random")


def test_bad_inputs_are_named(tmp_path, folder):
    with pytest.raises(SessionError, match="no images to annotate"):
        AnnotationSession.open([tmp_path / "missing"])
    other = tmp_path / "other.zarr"
    other.mkdir()
    (other / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    s = AnnotationSession.open([folder, other])
    assert any("other.zarr" in p and "not a label store" in why for p, why in s.problems)
    with pytest.raises(SessionError, match="not a label store"):
        AnnotationSession.open([folder], store=other)
    one, two = tmp_path / "one.zarr", tmp_path / "two.zarr"
    LabelStore(one, "w"), LabelStore(two, "w")
    with pytest.raises(SessionError, match="one label store at a time"):
        AnnotationSession.open([one, two])
    assert default_store_for([folder / "a.png"]) == folder.resolve() / "labels.zarr"


def test_an_image_whose_file_is_gone_is_named_when_loaded(folder):
    s = AnnotationSession.open([folder])
    (folder / "b.png").unlink()
    with pytest.raises(ValueError, match="b.png"):
        s.load_image("b.png")
