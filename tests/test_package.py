"""The package as a user installs it: the `ctn` command, the wheel, the subpackage mapping."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CTN = [sys.executable, "-m", "composite_tasking.cli"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)


def test_ctn_info_prints_versions_devices_tasks_and_presets():
    exe = Path(sys.executable).with_name("ctn")
    res = run([str(exe), "info"] if exe.exists() else [*CTN, "info"])
    assert res.returncode == 0, res.stderr
    out = res.stdout
    for needle in ("napari-composite-tasking 0.", "torch 2.", "torchvision 0.", "devices:",
                   "cpu:", "cuda", "ctn-resnet34", "mhn-resnet34", "stn-resnet34",
                   "normals", "R2"):  # fmt: skip
        assert needle in out, needle
    line = next(l for l in out.splitlines() if "ctn-resnet34" in l)
    assert "M parameters" in line


def test_ctn_without_a_command_is_a_usage_error():
    res = run(CTN)
    assert res.returncode == 2 and "usage: ctn" in res.stderr
    res = run([*CTN, "nonsense"])
    assert res.returncode == 2 and "invalid choice" in res.stderr


def test_training_subpackage_imports_from_the_training_folder():
    import composite_tasking.training as training

    assert Path(training.__file__).resolve().parent == ROOT / "training"


@pytest.mark.slow
def test_built_wheel_ships_the_subpackage_manifest_and_rules(tmp_path):
    res = run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir",
               str(tmp_path / "dist"), str(ROOT)])  # fmt: skip
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("napari_composite_tasking-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    # every package folder of the source tree is in the wheel (a new subpackage must be
    # listed in pyproject.toml: composite_tasking.store was not, and the installed `ctn`
    # could not import its label store)
    src = ROOT / "src" / "composite_tasking"
    for init in sorted(src.rglob("__init__.py")):
        rel = init.relative_to(src.parent).as_posix()
        assert "__pycache__" in rel or rel in names, f"{rel} is not in the wheel: list its package in pyproject.toml"
    for init in sorted((ROOT / "training").rglob("__init__.py")):  # composite_tasking.training's subpackages
        rel = "composite_tasking/training/" + init.relative_to(ROOT / "training").as_posix()
        assert "__pycache__" in rel or rel in names, f"{rel} is not in the wheel: list its package in pyproject.toml"
    for needed in ("composite_tasking/training/__init__.py", "composite_tasking/napari.yaml",
                   "composite_tasking/rules/r2.yaml", "composite_tasking/rules/r3.yaml",
                   "composite_tasking/model/ctn.py", "composite_tasking/_napari/__init__.py"):  # fmt: skip
        assert needed in names, needed
    # napari.yaml in the wheel is the file itself, not a link
    manifest = zipfile.ZipFile(wheel).read("composite_tasking/napari.yaml").decode()
    assert "napari-composite-tasking" in manifest
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    eps = zipfile.ZipFile(wheel).read(entry).decode()
    assert "napari.manifest" in eps and "composite_tasking:napari.yaml" in eps
    assert "ctn = composite_tasking.cli:main" in eps

    # installed on its own (no source tree on the path), the subpackage and rules load
    target = tmp_path / "site"
    res = run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target",
               str(target), str(wheel)])  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    code = ("import composite_tasking, composite_tasking.training as t;"
            "from composite_tasking.palette import load_rule;"
            "import composite_tasking.cli, composite_tasking.label, composite_tasking.export;"
            "print(t.__file__); print(load_rule('R3').name)")  # fmt: skip
    res = run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
              cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert str(target) in res.stdout and "R3" in res.stdout
