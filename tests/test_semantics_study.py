"""benchmarks/semantics_study.py (issue #17 item 1): each arm is one recipe change from the
paper's loss, the study runs only when named, and its gradient-direction table holds."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import semantics_study as study  # noqa: E402
from benchmarks._registry import discover  # noqa: E402


def test_every_arm_is_one_recipe_change_from_the_paper():
    paper = study.arm_recipe("paper", 0, 32, 128, 5).to_dict()
    assert paper["loss"] is None and paper["model"] == {"preset": "ctn-resnet18", "pretrained": False}
    assert paper["rule"] == "mosaic" and paper["max_steps_per_epoch"] == 32 and paper["epochs"] == 1
    for arm, changes in study.ARMS.items():
        r = study.arm_recipe(arm, 0, 32, 128, 5).to_dict()
        differ = {k for k in r if r[k] != paper[k]} - {"name"}
        assert differ == set(changes), arm
    # the seed changes the recipe's seed only (the training scenes stay seed 0's)
    again = study.arm_recipe("paper", 1, 32, 128, 5).to_dict()
    assert {k for k in again if again[k] != paper[k]} == {"name", "seed"}


def test_the_study_is_opt_in():
    assert discover()["semantics"].opt_in
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--list"], capture_output=True,
                       text=True, cwd=ROOT)  # fmt: skip
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("semantics"))
    assert "only with --only" in line


def test_the_paper_logits_move_many_wrong_outputs_away_from_their_target():
    rows = {(r["task"], r["semantic"], r["temperature"]): r for r in study.directions(values=9)}
    assert rows[("semseg", "paper", None)]["share_moved_away"] > 0.3
    assert rows[("semseg", "distance", 0.01)]["share_moved_away"] < 0.05
    assert rows[("parts", "distance", 0.01)]["share_moved_away"] < 0.05
