"""The paper's Tables 1, 3 and 4 from the results of scripts/paper/paper_tables.sh.

Reads the extracted ``results.tar`` (``eval/MODEL__RULE.json`` from ``ctn evaluate
--json``, ``train/NAME/history.json``, ``recipes/NAME.yaml``) and prints markdown tables
in the paper's shape, with Delta_m (``composite_tasking.training.metrics.delta_m``,
positive = better than the reference):

- Table 1 (tested on S): CTN trained with R1r, MHN, STN; Delta_m against the STN (the
  paper's reference, "the single-tasking baseline", trained there on S) and against
  the MHN. Each row names the rule the model was trained with (from its recipe).
- Table 3 (breaking the rule): tested on R3 the R3-trained CTN (reference), the
  R2-trained CTN and the same fine-tuned R2 -> R3; tested on R2 the R2-trained CTN
  (reference) and the fine-tuned one. Edges, parts, normals, saliency, as in the paper.
- Table 4 (random compositions): R1r / Rrnd training x S / Rrnd testing, without edges.
- Training: epochs, steps, scenes and minutes each model trained.

    .venv/bin/python scripts/paper/paper_tables.py RESULTS_DIR [--json]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from composite_tasking.training.metrics import PRIMARY, delta_m

#: paper column order and headers
COLUMNS = {"edges": "Edge odsF ↑", "semseg": "SemSeg mIoU ↑", "parts": "Parts mIoU ↑",
           "normals": "Normals mErr ↓", "saliency": "Sal maxIoU ↑"}  # fmt: skip
TABLE1_TASKS = ["edges", "semseg", "parts", "normals", "saliency"]
TABLE3_TASKS = ["edges", "parts", "normals", "saliency"]
TABLE4_TASKS = ["semseg", "parts", "normals", "saliency"]
RULE_NAMES = {"mosaic": "R1r", "random": "Rrnd", "S": "S", "R2": "R2", "R3": "R3"}
MODEL_NAMES = {"ctn": "CTN", "mhn": "MHN", "stn": "STN", "palette": "palette net"}
TRAIN_ORDER = ["ctn-r1r", "mhn", "stn", "ctn-r2", "ctn-r3", "ctn-rrnd", "ft-r2-r3"]


def _rule(name: str | None) -> str:
    return RULE_NAMES.get(name, name) if name else "?"


def load_results(folder: str | Path) -> dict:
    """``{"evals": {(model, rule): result}, "runs": {name: {...}}}`` from a results folder."""
    folder = Path(folder)
    evals = {}
    for f in sorted((folder / "eval").glob("*.json")):
        if f.name.endswith(".failed.json") or "__" not in f.stem:
            continue
        model, _, rule = f.stem.partition("__")
        try:
            evals[(model, rule)] = json.loads(f.read_text(encoding="utf-8"))
        except ValueError:
            continue  # an evaluation cut off while writing
    runs = {}
    names = {p.name for p in (folder / "train").glob("*") if p.is_dir()}
    for name in sorted(names, key=lambda n: (TRAIN_ORDER.index(n) if n in TRAIN_ORDER else 99, n)):
        run = {"name": name, "history": [], "recipe": {}}
        h = folder / "train" / name / "history.json"
        if h.is_file():
            run["history"] = json.loads(h.read_text(encoding="utf-8"))
        recipe = folder / "recipes" / ("finetune" if name.startswith("ft-") else name)
        for path in (recipe.with_suffix(".yaml"), recipe.with_suffix(".json")):
            if path.is_file():
                import yaml

                run["recipe"] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
                break
        runs[name] = run
    return {"evals": evals, "runs": runs}


def _primary(result: dict | None, task: str) -> float | None:
    if result is None:
        return None
    value = (result.get("primary") or {}).get(task)
    if value is None:  # older JSON: only the metric dicts
        m = (result.get("metrics") or {}).get(task) or {}
        value = m.get(PRIMARY.get(task, ""))
    if value is None or not math.isfinite(float(value)):
        return None
    return float(value)


def _delta(result: dict | None, base: dict | None, tasks: list[str]) -> float | None:
    """Delta_m over the tasks both have (a relative change needs a non-zero reference)."""
    if result is None or base is None:
        return None
    m = {t: _primary(result, t) for t in tasks}
    b = {t: _primary(base, t) for t in tasks}
    use = [t for t in tasks if m[t] is not None and b[t]]
    if not use:
        return None
    return delta_m({t: m[t] for t in use}, {t: b[t] for t in use})


def _model_label(name: str, runs: dict) -> str:
    recipe = runs.get(name, {}).get("recipe", {})
    if name.startswith("ft-"):
        return "CTN fine-tuned R2 -> R3"
    preset = str((recipe.get("model") or {}).get("preset", name))
    kind = MODEL_NAMES.get(preset.split("-")[0], preset)
    return f"{kind} ({preset})" if recipe else name


def _train_rule(name: str, runs: dict) -> str:
    if name.startswith("ft-"):
        return "R2 -> R3"
    return _rule(runs.get(name, {}).get("recipe", {}).get("rule"))


def build_tables(results: dict) -> dict:
    """The tables as data: ``{"table1": [...], "table3": [...], "table4": [...], "training": [...]}``."""
    ev, runs = results["evals"], results["runs"]

    def row(model, rule, tasks, **extra):
        r = ev.get((model, rule))
        return {"model": model, "label": _model_label(model, runs), "train_rule": _train_rule(model, runs),
                "test_rule": _rule(rule), "images": r.get("images") if r else None,
                **{t: _primary(r, t) for t in tasks}, **extra}  # fmt: skip

    stn, mhn = ev.get(("stn", "S")), ev.get(("mhn", "S"))
    table1 = [row(m, "S", TABLE1_TASKS,
                  delta_vs_stn=_delta(ev.get((m, "S")), stn, TABLE1_TASKS),
                  delta_vs_mhn=_delta(ev.get((m, "S")), mhn, TABLE1_TASKS))
              for m in ("stn", "mhn", "ctn-r1r")]  # fmt: skip
    table3 = []
    for test, ref, models in (("R3", "ctn-r3", ("ctn-r3", "ctn-r2", "ft-r2-r3")),
                              ("R2", "ctn-r2", ("ctn-r2", "ft-r2-r3"))):  # fmt: skip
        base = ev.get((ref, test))
        for m in models:
            table3.append(row(m, test, TABLE3_TASKS, reference=ref,
                              delta=_delta(ev.get((m, test)), base, TABLE3_TASKS)))  # fmt: skip
    table4 = [row(m, rule, TABLE4_TASKS)
              for m, rule in (("ctn-r1r", "S"), ("ctn-r1r", "random"), ("ctn-rrnd", "random"), ("ctn-rrnd", "S"))]
    training = []
    for name, run in runs.items():
        hist, recipe = run["history"], run["recipe"]
        scenes = sum(round(h.get("images_per_s", 0) * h.get("seconds", 0)) for h in hist)
        batch = recipe.get("batch_size")
        last = (hist[-1].get("val") or {}).get("primary", {}) if hist else {}
        training.append({
            "run": name, "model": (recipe.get("model") or {}).get("preset", "init: R2 run" if name.startswith("ft-") else "?"),
            "rule": _train_rule(name, runs), "epochs": len(hist), "epochs_planned": recipe.get("epochs"),
            "steps": round(scenes / batch) if batch else None, "scenes": scenes, "batch": batch,
            "size": (recipe.get("train") or {}).get("size"),
            "train_minutes": sum(h.get("seconds", 0) for h in hist) / 60,
            "scenes_per_s": scenes / max(sum(h.get("seconds", 0) for h in hist), 1e-9) if hist else None,
            "val_last": last,
        })  # fmt: skip
    return {"table1": table1, "table3": table3, "table4": table4, "training": training}


def _fmt(v, digits=2, pct=False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{v:+.2f} %"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(tables: dict) -> str:
    out = []
    t1 = tables["table1"]
    out += ["### Table 1: tested on S (every task everywhere)", "",
            "| training rule | model | " + " | ".join(COLUMNS[t] for t in TABLE1_TASKS)
            + " | Δm vs STN | Δm vs MHN | images |",
            "|---|---|" + "---:|" * (len(TABLE1_TASKS) + 3)]  # fmt: skip
    for r in t1:
        out.append(f"| {r['train_rule']} | {r['label']} | " + " | ".join(_fmt(r[t]) for t in TABLE1_TASKS)
                   + f" | {_fmt(r['delta_vs_stn'], pct=True)} | {_fmt(r['delta_vs_mhn'], pct=True)} | {_fmt(r['images'])} |")  # fmt: skip
    out += ["", "Δm (paper section 6.1, positive = better): the paper's reference is the STN "
            "(trained there on complete labels, rule S); here each row's training rule is "
            "given.", ""]  # fmt: skip
    out += ["### Table 3: breaking the rule (R2 -> R3)", "",
            "| testing rule | training rule | " + " | ".join(COLUMNS[t] for t in TABLE3_TASKS)
            + " | Δm | images |",
            "|---|---|" + "---:|" * (len(TABLE3_TASKS) + 2)]  # fmt: skip
    for r in tables["table3"]:
        out.append(f"| {r['test_rule']} | {r['train_rule']} | " + " | ".join(_fmt(r[t]) for t in TABLE3_TASKS)
                   + f" | {_fmt(r['delta'], pct=True)} | {_fmt(r['images'])} |")  # fmt: skip
    out += ["", "Δm against the CTN trained on the testing rule (R3-trained on R3, R2-trained "
            "on R2), over edges, parts, normals and saliency (the paper's columns).", ""]  # fmt: skip
    out += ["### Table 4: random compositions (edges omitted, as in the paper)", "",
            "| trained on | evaluated on | " + " | ".join(COLUMNS[t] for t in TABLE4_TASKS) + " | images |",
            "|---|---|" + "---:|" * (len(TABLE4_TASKS) + 1)]  # fmt: skip
    for r in tables["table4"]:
        out.append(f"| {r['train_rule']} | {r['test_rule']} | " + " | ".join(_fmt(r[t]) for t in TABLE4_TASKS)
                   + f" | {_fmt(r['images'])} |")  # fmt: skip
    out += ["", "### Training", "",
            "| run | model | rule | epochs | steps | scenes | batch | size | train minutes | scenes/s |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in tables["training"]:
        ep = f"{r['epochs']}/{r['epochs_planned']}" if r["epochs_planned"] else str(r["epochs"])
        out.append(f"| {r['run']} | {r['model']} | {r['rule']} | {ep} | {_fmt(r['steps'])} | {r['scenes']} | "
                   f"{_fmt(r['batch'])} | {_fmt(r['size'])} | {r['train_minutes']:.2f} | {_fmt(r['scenes_per_s'], 1)} |")  # fmt: skip
    out.append("")
    out.append("Train minutes: the training loops' time (history.json), without validation, "
               "BatchNorm re-estimation and checkpoints.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="the extracted results.tar of scripts/paper/paper_tables.sh")
    ap.add_argument("--json", action="store_true", help="print the tables as JSON")
    args = ap.parse_args(argv)
    folder = Path(args.results)
    if not (folder / "eval").is_dir() and not (folder / "train").is_dir():
        ap.error(f"{folder}: no eval/ or train/ folder (extract results.tar there first)")
    tables = build_tables(load_results(folder))
    print(json.dumps(tables, indent=2) if args.json else markdown(tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
