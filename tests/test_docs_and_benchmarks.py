"""The documentation site builds cleanly and says what the code does; the benchmarks run.

Everything runs as a subprocess, as a user would run it, with this interpreter.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = ROOT / "benchmarks" / "run.py"


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


# --------------------------------------------------------------------------------------
# docs
# --------------------------------------------------------------------------------------


def _nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r":\s*([\w-]+\.md)\s*$", text, flags=re.M)


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    r = _run("-m", "mkdocs", "build", "--strict", "-d", str(site))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    assert "WARNING" not in log, log
    pages = _nav_pages()
    assert {"index.md", "annotate.md", "label-folder.md", "finetune.md", "store.md",
            "rules.md", "model.md", "benchmarks.md", "results.md"} <= set(pages)  # fmt: skip
    for page in pages:
        assert (site / page.replace(".md", ".html")).is_file(), page
    # the screenshot is embedded and shipped (a missing one fails --strict above)
    assert 'src="images/palette-widget.png"' in (site / "annotate.html").read_text("utf-8")
    assert (site / "images" / "palette-widget.png").is_file()
    assert not list(site.rglob("*.py")), "the docs' generator script is not a page"


def test_generated_doc_tables_are_up_to_date():
    r = _run(str(ROOT / "docs" / "gen_tables.py"), "--check")
    assert r.returncode == 0, (
        r.stdout + r.stderr + "\nrun `python docs/gen_tables.py` to regenerate the tables"
    )


def test_rule_tables_come_from_the_rule_files():
    """Every class of R2/R3 appears in rules.md under the task its YAML file gives it."""
    import yaml

    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    for name in ("r2", "r3"):
        data = yaml.safe_load((ROOT / "src/composite_tasking/rules" / f"{name}.yaml").read_text())
        block = re.search(rf"BEGIN generated:rules-{name} -->\n(.*?)<!-- END", text, re.S)[1]
        for task, classes in data["tasks"].items():
            row = next(ln for ln in block.splitlines() if ln.startswith(f"| `{task}`"))
            assert row.endswith(f"| {', '.join(classes)} |"), (name, task, row)


@pytest.mark.parametrize("page", ["rules.md", "model.md", "label-folder.md", "store.md"])
def test_python_examples_in_the_docs_run(page, tmp_path, monkeypatch):
    """The Python examples of the pages that need no GUI run as printed."""
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, page
    for code in blocks:
        exec(compile(code, f"docs/{page}", "exec"), {})


def test_yaml_rule_example_in_the_docs_loads(tmp_path):
    import numpy as np

    from composite_tasking import load_rule

    text = (ROOT / "docs" / "rules.md").read_text(encoding="utf-8")
    path = tmp_path / "my-rule.yaml"
    path.write_text(re.search(r"```yaml\n(.*?)```", text, re.S)[1], encoding="utf-8")
    rule = load_rule(str(path))
    semantics = np.array([[0, 7, 15, 255]], dtype=np.uint8)  # background, car, person, unlabelled
    assert rule.palette(semantics=semantics).tolist() == [[0, 4, 2, 0]]


def test_results_page_is_not_a_placeholder():
    from composite_tasking.model import read_checkpoint_info
    from composite_tasking.weights import default_model_path

    text = (ROOT / "docs" / "results.md").read_text(encoding="utf-8").lower()
    for word in ("todo", "tbd", "placeholder"):
        assert word not in text
    # the page reports the model that ships: its weights' sha256 is named there
    assert read_checkpoint_info(default_model_path()).sha256[:12] in text
    assert read_checkpoint_info(default_model_path("palette")).sha256[:12] in text


# --------------------------------------------------------------------------------------
# benchmarks
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def params_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "params.json"
    r = _run(str(RUN), "--only", "params", "--json", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads(out.read_text(encoding="utf-8"))


def test_params_benchmark_json(params_run):
    r, data = params_run
    rows = {row["extra"]["preset"]: row for row in data["rows"]}
    assert all(row["benchmark"] == "params" for row in data["rows"])
    total = {k: v["extra"]["total"] for k, v in rows.items()}
    assert total["ctn-resnet34"] < total["mhn-resnet34"] < total["stn-resnet34"]
    assert total["ctn-resnet18"] < total["ctn-resnet34"] < total["ctn-resnet50"] < total["ctn-resnet101"]
    for row in rows.values():
        e = row["extra"]
        assert e["encoder"] + e["task_mlp"] + e["decoder"] + e["other"] == e["total"]
        assert row["value"] == e["total"] and row["unit"] == "params"
        assert row["ratio"] == pytest.approx(e["total"] / total["ctn-resnet34"])
    # baselines: same encoder (MHN) or one per task (STN), no task MLP
    assert rows["mhn-resnet34"]["extra"]["encoder"] == rows["ctn-resnet34"]["extra"]["encoder"]
    assert rows["stn-resnet34"]["extra"]["encoder"] == 5 * rows["ctn-resnet34"]["extra"]["encoder"]
    assert rows["mhn-resnet34"]["extra"]["task_mlp"] == 0
    # the printed table: a machine line, then one table
    lines = r.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "torch" in lines[0] and "device cpu" in lines[0]
    assert re.match(r"\|\s*benchmark\s*\|\s*case\s*\|\s*value\s*\|\s*unit\s*\|\s*ratio\s*\|\s*notes\s*\|",
                    lines[2])  # fmt: skip
    assert data["machine"]["device"] == "cpu" and data["machine"]["torch_threads"] >= 1


def test_benchmarks_page_matches_the_measured_parameter_counts(params_run):
    _, data = params_run
    text = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    block = re.search(r"BEGIN generated:benchmarks-params -->\n(.*?)<!-- END", text, re.S)[1]
    assert block.strip(), "run `python docs/gen_tables.py --with-benchmarks`"
    for row in data["rows"]:
        case_line = next((ln for ln in block.splitlines() if f"| {row['case']} " in ln), None)
        assert case_line is not None, f"{row['case']} missing from docs/benchmarks.md"
        assert f"{row['extra']['total']:,}" in case_line, (
            f"docs/benchmarks.md is stale for {row['case']}: "
            "run `python docs/gen_tables.py --with-benchmarks`"
        )


def test_params_script_runs_on_its_own():
    r = _run(str(ROOT / "benchmarks" / "params.py"), "--help")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "--json" in r.stdout


def test_list_shows_every_benchmark():
    r = _run(str(RUN), "--list")
    assert r.returncode == 0, r.stderr
    names = {ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()}
    assert {"params", "latency"} <= names


def test_unknown_benchmark_is_a_usage_error():
    r = _run(str(RUN), "--only", "no-such-benchmark")
    assert r.returncode == 2
    assert "unknown benchmark" in r.stderr and "params" in r.stderr
    assert r.stdout == ""


def test_cuda_without_cuda_exits_2():
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    r = _run(str(RUN), "--device", "cuda", "--only", "params")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "CUDA is not available" in r.stderr
    assert r.stdout == ""  # nothing measured, no table
