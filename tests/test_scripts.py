"""The shell scripts parse, and the GPU machine's set-up (scripts/device/device_env.sh) does what
the device scripts rely on. A sourced file with a syntax error runs none of itself and
says so only on stderr: the scripts that source it would go on without their set-up."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").rglob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=[str(s.relative_to(ROOT / "scripts")) for s in SCRIPTS])
def test_the_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0 and not r.stderr, r.stderr


def test_device_env_links_training_and_sets_the_path(tmp_path):
    """In a checkout without wheels: no install, training/ linked into the package, the
    source folders on PYTHONPATH."""
    (tmp_path / "scripts" / "device").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "device" / "device_env.sh", tmp_path / "scripts" / "device")
    (tmp_path / "src" / "composite_tasking").mkdir(parents=True)
    (tmp_path / "training").mkdir()
    r = subprocess.run(["bash", "-c", '. scripts/device/device_env.sh && echo "$PYTHONPATH|$PYTHONUNBUFFERED"'],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{tmp_path}/src:{tmp_path}|1", r.stdout + r.stderr
    link = tmp_path / "src" / "composite_tasking" / "training"
    assert link.is_symlink() and link.resolve() == (tmp_path / "training").resolve()


def test_every_script_named_in_the_docs_and_scripts_exists():
    """The docs, the READMEs, the recipes' comments and the scripts name scripts by their
    path from the repository root: each such path is a file (scripts/ is by audience:
    the user's commands at the top, maintainer/, paper/ and device/ with a README each)."""
    for folder in ("maintainer", "paper", "device"):
        assert (ROOT / "scripts" / folder / "README.md").is_file(), folder
    texts = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(p for p in (ROOT / "scripts").rglob("*") if p.suffix in (".sh", ".py", ".md")),
             *(ROOT / "training" / "recipes").glob("*.yaml"), *(ROOT / "tests").glob("test_*script*.py")]
    named = {}
    for path in texts:
        for m in re.finditer(r"\bscripts/[\w/.-]+\.(?:sh|py)\b", path.read_text(encoding="utf-8")):
            named.setdefault(m.group(), path.relative_to(ROOT))
    assert "scripts/paper/paper_tables.sh" in named and "scripts/device/device_env.sh" in named
    missing = {name: str(where) for name, where in named.items() if not (ROOT / name).is_file()}
    assert not missing, missing
