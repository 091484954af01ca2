"""scripts/paper/palette_transfer.py: fine-tunes a palette network on N edited (R3) palettes
and reports palette mIoU under R3 and R2 for each N."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_palette_transfer_runs_and_writes_its_table(tmp_path):
    from composite_tasking.model import build_model, save_checkpoint

    save_checkpoint(build_model("palette-resnet18"), tmp_path / "pal")
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "paper" / "palette_transfer.py"), "--model", str(tmp_path / "pal"),
         "--out", str(tmp_path / "out"), "--n", "0", "2", "--steps", "1", "--eval-n", "4",
         "--size", "32", "--device", "cpu"],
        capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1", "PATH": ""},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "out" / "palette_transfer.json").read_text())
    assert [row["n"] for row in result["rows"]] == [0, 2]
    for row in result["rows"]:
        assert 0 <= row["R3"] <= 100 and 0 <= row["R2"] <= 100
    assert (tmp_path / "out" / "n2" / "latest.json").is_file()  # the fine-tuning run
    assert "| edited images |" in r.stdout
