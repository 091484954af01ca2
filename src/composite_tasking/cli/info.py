"""``ctn info``: versions, devices, tasks, rules, model presets and bundled models."""

from __future__ import annotations

import argparse
import platform
from importlib import metadata

from ..__about__ import __version__
from .checks import EXIT_OK


def _dist_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def devices() -> list[str]:
    """The compute devices torch sees, one line each."""
    import torch

    from ..device import cpu_has_bf16

    bf16 = "native bf16 (--precision bf16 pays)" if cpu_has_bf16() else "no native bf16"
    lines = [f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {bf16}"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i}: {p.name}, {p.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("cuda: not available")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        lines.append("mps: available")
    return lines


def _bundled_lines() -> list[str]:
    from ..model import read_checkpoint_info
    from ..model.checkpoint import CheckpointError
    from ..weights import default_model_path

    lines = ["bundled models:"]
    for name in ("ctn", "palette"):
        try:
            info = read_checkpoint_info(default_model_path(name))
        except CheckpointError:
            lines.append(f"  {name}: not shipped in this installation")
            continue
        cfg = info.config
        val = (info.provenance.get("val") or {}).get("primary") or {}
        metrics = ", ".join(f"{k} {v:.1f}" for k, v in val.items() if isinstance(v, (int, float)))
        lines.append(f"  {name}: {cfg.kind} {cfg.encoder}, sha256 {info.sha256[:12]}, {info.path}")
        if metrics:
            lines.append(f"    validation: {metrics}")
    lines.append("  what they know: the synthetic world they were trained on (ctn synth); on photos their "
                 "classes are guesses. For photos, train the paper's model on PASCAL-MT: ctn train --config "
                 "ctn-pascal-mt --data pascal-mt:ROOT (docs/finetune.md)")  # fmt: skip
    return lines


def cmd_info(args: argparse.Namespace) -> int:
    import torch

    from ..model import PRESETS, build_model, count_parameters
    from ..palette import BUILTIN_RULES
    from ..tasks import TASKS

    out = [f"napari-composite-tasking {__version__}", f"python {platform.python_version()}"]
    for dist in ("torch", "torchvision", "numpy", "zarr", "safetensors", "napari", "npe2"):
        out.append(f"{dist} {_dist_version(dist)}")
    out.append("")
    out.append("devices:")
    out += [f"  {d}" for d in devices()]
    out.append("")
    out.append("tasks (palette value = id + 1):")
    for t in TASKS:
        extra = f", {t.num_classes} classes" if t.kind == "classes" else ""
        out.append(f"  {t.palette_value}  {t.name:<9} {t.title} ({t.kind}{extra})")
    out.append("")
    out.append("rules: " + ", ".join(BUILTIN_RULES) + ", or a YAML rule file")
    out.append("")
    out.append("model presets:")
    with torch.device("meta"):  # count parameters without allocating them
        for name, cfg in PRESETS.items():
            n = count_parameters(build_model(cfg))
            out.append(f"  {name:<17} {cfg.kind.upper():<7}  encoder {cfg.encoder:<9} {n / 1e6:7.2f} M parameters")
    out.append("")
    out += _bundled_lines()
    print("\n".join(out))
    return EXIT_OK
