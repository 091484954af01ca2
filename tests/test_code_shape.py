"""The code's shape (issue #19): no private name imported across modules, and modules
small enough to hold in one's head (the larger ones listed, each with why)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "src" / "composite_tasking", ROOT / "training"]
#: modules over MAX_LINES, and why they still are (each is a split to make)
LARGER = {
    "src/composite_tasking/label.py": "label_images and its pipeline: the label/ package split (#19)",
    "src/composite_tasking/cli.py": "one parser and one function per command",
    "src/composite_tasking/datasets.py": "PASCAL-MT, synthetic and store data sets: training/data.py (#19)",
    "src/composite_tasking/store/label_store.py": "LabelStore, one class: writing and reading apart next",
    "src/composite_tasking/_napari/predict_widget.py": "the widget's layers and live re-predict apart next",
    "src/composite_tasking/_napari/series_widget.py": "the navigator and the dock",
    "src/composite_tasking/_napari/palette_widget.py": "the widget and its layer combos",
    "training/trainer.py": "recipe to run: data, loop, checkpoints",
    "training/metrics.py": "the paper's five task metrics, each with its protocol",
}
MAX_LINES = 600


def _modules():
    for package in PACKAGES:
        yield from sorted(package.rglob("*.py"))


def test_no_private_name_is_imported_across_modules():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("composite_tasking")):
                found += [f"{path.relative_to(ROOT)}: from {'.' * node.level}{node.module or ''} import {a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert found == [], "private names imported across modules:\n" + "\n".join(found)


def test_modules_stay_small_or_say_why():
    over = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    over = {k: n for k, n in over.items() if n > MAX_LINES}
    unexplained = sorted(set(over) - set(LARGER))
    assert unexplained == [], f"modules over {MAX_LINES} lines without a reason in LARGER: {unexplained}"
    stale = sorted(k for k in LARGER if k not in over)
    assert stale == [], f"LARGER lists modules that are no longer over {MAX_LINES} lines: {stale}"
