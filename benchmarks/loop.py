"""The labelling cycle, simulated: does correcting pseudo-labels cost less than painting,
and does every corrected image make the next ones cheaper?

    python benchmarks/run.py --only loop [--device cuda] [--quick]

A user's pictures are never the training distribution, so the annotator works on the
*shifted* synthetic world (:data:`composite_tasking.synthetic.WORLDS`, docs/synthetic.md):
``POOL + REST`` scenes of it (seed :data:`SEED`, never used elsewhere) at ``SIZE`` pixels.
Everything runs through the product's own functions:

1. ``label_images`` (``ctn label``) labels all of them with the bundled CTN under the
   bundled palette network's R2 palettes (``--palette-from net``), writing pseudo-labels
   and confidence maps to a store;
2. the annotator corrects ``k`` pool images to the truth inside their palettes and marks
   them reviewed, through :meth:`LabelStore.correct` (the store writes napari's save
   makes), in one of two orders: ``random`` (seeded) or ``correct next``
   (:func:`composite_tasking.review.rank_store`, ``ctn review``'s ranking from the
   confidence maps);
3. :func:`composite_tasking.training.finetune.finetune` (``ctn finetune`` and the napari
   widget) fine-tunes the bundled CTN on them with the built-in recipe, holding some out
   to decide whether the new model is used;
4. the model in use relabels the ``REST`` scenes (never corrected, the same for every k)
   under their palettes, and :class:`composite_tasking.effort.EffortMeter` measures the
   effort to correct them: the share of palette pixels whose label must change (mean
   over the five tasks), against painting from scratch (every palette pixel: 100 %).

Each row is one (order, k); the value is the mean effort share on the rest, the ratio
its fraction of the from-scratch effort, the notes the per-task shares, the fine-tune's
seconds and its decision. The last rows check the targets of the labelling-cycle issue.
``--quick``: 64 px, 6 + 4 scenes, k = 0 and 5.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark  # noqa: E402

#: the shifted world's seed: scenes no model here was trained or tested on
SEED = 9001
SIZE, POOL, REST, KS = 128, 50, 30, (0, 5, 10, 20, 50)
QUICK = (64, 6, 4, (0, 5))
#: short names of the tasks in the notes
SHORT = {"semseg": "se", "parts": "pa", "edges": "ed", "saliency": "sa", "normals": "no"}
#: the issue's targets
HALF_TASKS = ("edges", "saliency", "normals")
DROP_AT, DROP = 20, 30.0


def _truth_in_palette(truth, palette: np.ndarray) -> dict[str, np.ndarray]:
    """What the annotator paints: the truth of each task the palette asks for, there."""
    from composite_tasking.tasks import IGNORE, TASKS

    out = {}
    for task in TASKS:
        region = palette == task.palette_value
        if not region.any() or task.name not in truth.labels:
            continue
        t = truth.labels[task.name]
        out[task.name] = (np.where(region[..., None], t, 0.0).astype(np.float32) if task.kind == "vector"
                          else np.where(region, t, IGNORE).astype(np.uint8))  # fmt: skip
    return out


def _effort(model, device: str, store, gt, rest: list[tuple[str, str]]) -> dict:
    """Relabel the rest with ``model`` under their stored palettes; effort per task."""
    from composite_tasking.effort import EffortMeter
    from composite_tasking.inference import Predictor
    from composite_tasking.tasks import get_task

    predictor = Predictor(model, device=device)
    meter = EffortMeter()
    for image_id, gt_id in rest:
        s = store.read_sample(image_id)
        truth = gt.read_sample(gt_id)
        pred = predictor.predict(s.image, s.palette)
        for name, t in pred.tasks.items():
            meter.update(name, t.label, truth.labels[name], s.palette == get_task(name).palette_value)
    return meter.compute()


def _notes(effort: dict) -> str:
    return " ".join(f"{SHORT[t]} {effort[t]['share']:.1f}" for t in SHORT if t in effort)


def _run(ctx: Context, tmp: Path):
    from composite_tasking.label import label_images
    from composite_tasking.review import rank_store
    from composite_tasking.store import LabelStore
    from composite_tasking.synthetic import get_world
    from composite_tasking.synthetic.export import write_synthetic
    from composite_tasking.training.finetune import finetune

    size, pool_n, rest_n, ks = QUICK if ctx.quick else (SIZE, POOL, REST, KS)
    write_synthetic(tmp / "world", pool_n + rest_n, size, seed=SEED, config=get_world("shifted"))
    base = tmp / "labels.zarr"
    label_images([tmp / "world" / "images"], base, palette_from="net", model="default", device=ctx.device)
    gt = LabelStore(tmp / "world" / "ground-truth.zarr")
    store = LabelStore(base)
    pairs = list(zip(sorted(store.ids()), sorted(gt.ids())))  # ctn label's ids keep the file order
    pool, rest = pairs[:pool_n], pairs[pool_n:]
    truth_of = dict(pairs)
    zero = _effort("default", ctx.device, store, gt, rest)
    yield Row("loop", f"pseudo-labels, k=0 ({rest_n} rest scenes)", zero["mean"]["share"], "% px",
              ratio=zero["mean"]["share"] / 100.0, notes=_notes(zero) + "; regions "
              f"{zero['mean']['regions']:.1f} vs {zero['mean']['scratch_regions']:.1f} from scratch",
              digits=1, extra={"effort": zero})  # fmt: skip
    ranked = [item.image_id for item in rank_store(base)]
    pool_ids = {i for i, _ in pool}
    orders = {"random": [i for i, _ in pool], "correct next": [i for i in ranked if i in pool_ids]}
    np.random.default_rng(ctx.seed).shuffle(orders["random"])
    results: dict[str, dict[int, dict]] = {o: {0: zero} for o in orders}
    done: dict[tuple, dict] = {}
    for order, ids in orders.items():
        for k in ks[1:]:
            chosen = tuple(sorted(ids[:k]))
            if chosen in done:  # k = the whole pool: the same images in any order
                results[order][k] = done[chosen]
                yield Row("loop", f"{order}, k={k}", done[chosen]["mean"]["share"], "% px",
                          ratio=done[chosen]["mean"]["share"] / 100.0, notes="as the other order (same images)",
                          digits=1, extra={"effort": done[chosen]})  # fmt: skip
                continue
            work = tmp / f"k{k}-{order.replace(' ', '-')}"
            shutil.copytree(base, work / "labels.zarr")
            st = LabelStore(work / "labels.zarr", mode="a")
            for image_id in ids[:k]:
                st.correct(image_id, _truth_in_palette(gt.read_sample(truth_of[image_id]), st.read_sample(image_id).palette),
                           reviewed=True)  # fmt: skip
            t0 = time.perf_counter()
            result = finetune(work / "labels.zarr", "default", work / "run", device=ctx.device)
            seconds = time.perf_counter() - t0
            run = result.runs["ctn"]
            effort = _effort(result.ctn, ctx.device, store, gt, rest)
            effort["fine_tune"] = {"seconds": seconds, "accepted": run.accepted, "decision": run.decision}
            results[order][k] = done[chosen] = effort
            verdict = "accepted" if run.accepted else "rolled back"
            yield Row("loop", f"{order}, k={k}", effort["mean"]["share"], "% px",
                      ratio=effort["mean"]["share"] / 100.0,
                      notes=f"{_notes(effort)}; fine-tune {seconds:.0f} s, {verdict}", digits=1,
                      extra={"effort": effort})  # fmt: skip
            shutil.rmtree(work, ignore_errors=True)
    yield from _targets(zero, results, ks)


def _targets(zero: dict, results: dict, ks) -> list[Row]:
    rows = []
    worst = max(zero[t]["share"] for t in HALF_TASKS if t in zero)
    rows.append(Row("loop", "target: pseudo-labels <= 1/2 of scratch (edges, saliency, normals)", worst, "% px",
                    ratio=worst / 100.0, notes="met" if worst <= 50.0 else "NOT met", digits=1))  # fmt: skip
    reach = {}
    for order, by_k in results.items():
        reach[order] = next((k for k in ks[1:] if _drop(zero, by_k[k])[0] >= DROP and not _drop(zero, by_k[k])[1]),
                            None)  # fmt: skip
    if DROP_AT in ks:
        for order, by_k in results.items():
            drop, worse = _drop(zero, by_k[DROP_AT])
            ok = drop >= DROP and not worse
            rows.append(Row("loop", f"target: {order}, k={DROP_AT} cuts effort >= {DROP:.0f} %, no task worse",
                            drop, "% less", notes=("met" if ok else "NOT met") +
                            (f"; worse: {', '.join(worse)}" if worse else ""), digits=1))  # fmt: skip
    text = ", ".join(f"{o}: {'k=' + str(k) if k else 'not reached'}" for o, k in reach.items())
    fewer = reach.get("correct next") is not None and (reach.get("random") is None
                                                       or reach["correct next"] < reach["random"])  # fmt: skip
    rows.append(Row("loop", f"target: correct next reaches -{DROP:.0f} % with fewer images than random",
                    reach.get("correct next"), "images", notes=f"{'met' if fewer else 'NOT met'} ({text})",
                    digits=0))  # fmt: skip
    return rows


def _drop(zero: dict, effort: dict) -> tuple[float, list[str]]:
    """(% less mean effort than at k=0, tasks whose effort rose)."""
    tasks = [t for t in SHORT if t in zero and t in effort]
    drop = 100.0 * (1.0 - effort["mean"]["share"] / zero["mean"]["share"])
    return drop, [t for t in tasks if effort[t]["share"] > zero[t]["share"] + 1e-9]


@benchmark("loop", order=90, ratio_to="painting every palette pixel from scratch (100 %)")
def loop(ctx: Context):
    """The labelling cycle on the shifted world: effort on the rest vs corrected images."""
    with tempfile.TemporaryDirectory(prefix="ctn-bench-loop-") as tmp:
        yield from _run(ctx, Path(tmp))


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "loop", *sys.argv[1:]]))
