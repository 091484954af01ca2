#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the project's main job.
#
#   bash scripts/demo.sh [ARGS...]       # ARGS are appended to the main job
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CTN_VENV="$(realpath -m "${CTN_VENV:-$ROOT/.venv}")"
export CTN_VENV
cd "$ROOT"

bash scripts/setup.sh

export PATH="$CTN_VENV/bin:$PATH"
echo "[demo] running the main job"

# >>> MAIN JOB: auto-label the bundled sample images with the bundled model
ctn demo --out demo-out --overwrite "$@"
# <<< MAIN JOB
echo "[demo] label store: demo-out/labels.zarr   preview: demo-out/preview.png"
