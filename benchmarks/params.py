"""Parameter counts: CTN vs the MHN and STN baselines, and the CTN with other encoders.

    python benchmarks/params.py          # this table alone (same as run.py --only params)

All models are built for the five tasks with random weights (counts do not depend on
the weights). Parameters only: BatchNorm statistics and the frozen task codes are
buffers and are not counted. The split:

- encoder: the ResNet(s) (one for CTN and MHN, one per task for STN);
- task MLP: the CTN's task representation block (the only part whose size depends on
  the number of tasks K, through its first layer 20K -> 128);
- decoder: the decoder(s) (one palette-conditioned for CTN, one plain per task for MHN
  and STN); for the CTN, "conditioning" is the part of the decoder that maps the
  palette embedding to gamma and beta.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._registry import Context, Row, benchmark  # noqa: E402

#: (preset, label) in table order; the first is the reference of the ratio column
CASES = (
    ("ctn-resnet34", "CTN ResNet-34"),
    ("mhn-resnet34", "MHN ResNet-34"),
    ("stn-resnet34", "STN ResNet-34"),
    ("ctn-resnet18", "CTN ResNet-18"),
    ("ctn-resnet50", "CTN ResNet-50"),
    ("ctn-resnet101", "CTN ResNet-101"),
)

_GROUPS = {"encoder": "encoder", "encoders": "encoder", "decoder": "decoder",
           "decoders": "decoder", "task_representation": "task_mlp"}  # fmt: skip


def split_parameters(model) -> dict[str, int]:
    """Parameter counts by part: total, encoder, task_mlp, decoder, conditioning, other."""
    from composite_tasking.model import count_parameters

    parts = {"encoder": 0, "task_mlp": 0, "decoder": 0, "other": 0}
    for name, child in model.named_children():
        parts[_GROUPS.get(name, "other")] += count_parameters(child)
    # the conditioning convs of the task composition blocks (CTN decoder only)
    parts["conditioning"] = sum(
        p.numel() for n, p in model.named_parameters()
        if n.startswith("decoder.") and any(f".{s}." in n for s in ("shared", "gamma", "beta"))
    )  # fmt: skip
    parts["total"] = count_parameters(model)
    return parts


def _m(n: int) -> str:
    return f"{n / 1e6:.2f} M"


@benchmark("params", order=10, ratio_to="CTN ResNet-34 (total parameters)")
def params(ctx: Context):
    """Parameter counts of CTN, MHN, STN (ResNet-34, 5 tasks) and CTN ResNet-18/50/101."""
    from composite_tasking.model import build_model

    ref = None
    for preset, label in CASES:
        model = build_model(preset, pretrained=False)
        p = split_parameters(model)
        k = len(model.config.tasks)
        del model
        ref = ref or p["total"]
        if preset.startswith("ctn"):
            notes = (f"encoder {_m(p['encoder'])} + task MLP {_m(p['task_mlp'])} + decoder "
                     f"{_m(p['decoder'])} (conditioning {_m(p['conditioning'])})")  # fmt: skip
        else:
            n_enc = k if preset.startswith("stn") else 1
            enc = f"{k} x {_m(p['encoder'] // k)}" if n_enc > 1 else _m(p["encoder"])
            notes = f"encoder {enc} + decoders {k} x {_m(p['decoder'] // k)}"
        if p["other"]:
            notes += f" + other {_m(p['other'])}"
        yield Row("params", f"{label} ({k} tasks)", p["total"], "params",
                  ratio=p["total"] / ref, notes=notes, digits=0,
                  extra={"preset": preset, "tasks": k, **p})  # fmt: skip


if __name__ == "__main__":
    from benchmarks.run import main

    sys.exit(main(["--only", "params", *sys.argv[1:]]))
