"""The shell scripts parse, and the GPU machine's set-up (scripts/device_env.sh) does what
the device scripts rely on. A sourced file with a syntax error runs none of itself and
says so only on stderr: the scripts that source it would go on without their set-up."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_the_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr


def test_device_env_links_training_and_sets_the_path(tmp_path):
    """In a checkout without wheels: no install, training/ linked into the package, the
    source folders on PYTHONPATH."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "device_env.sh", tmp_path / "scripts")
    (tmp_path / "src" / "composite_tasking").mkdir(parents=True)
    (tmp_path / "training").mkdir()
    r = subprocess.run(["bash", "-c", '. scripts/device_env.sh && echo "$PYTHONPATH|$PYTHONUNBUFFERED"'],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{tmp_path}/src:{tmp_path}|1", r.stdout + r.stderr
    link = tmp_path / "src" / "composite_tasking" / "training"
    assert link.is_symlink() and link.resolve() == (tmp_path / "training").resolve()
