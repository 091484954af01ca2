"""Copy a trained checkpoint into the package as a bundled model (float16 safetensors).

    .venv/bin/python scripts/maintainer/bundle_model.py RUN_OR_CHECKPOINT [--name ctn|palette] [--note TEXT]

The bundled checkpoint keeps the training provenance (recipe, epoch, validation metrics)
and adds where it was bundled from; weights are stored in float16 (half the size, loaded
back as float32), so a ResNet-34 CTN stays under 60 MB.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from composite_tasking.inference import resolve_model
from composite_tasking.model import load_checkpoint, save_checkpoint

WEIGHTS = Path(__file__).resolve().parents[2] / "src" / "composite_tasking" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--name", default="ctn", choices=("ctn", "palette"))
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    src = resolve_model(args.source)
    model, info = load_checkpoint(src)
    provenance = dict(info.provenance)
    provenance["bundled_from"] = {"path": str(src), "sha256": info.sha256, "note": args.note}
    dest = WEIGHTS / args.name
    tmp = WEIGHTS / f".{args.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(model, tmp, provenance=provenance, dtype=torch.float16)
    load_checkpoint(tmp)  # verify before replacing
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    size = (dest / "model.safetensors").stat().st_size / 2**20
    print(f"bundled {src} as {dest} ({size:.1f} MiB, float16)")


if __name__ == "__main__":
    main()
