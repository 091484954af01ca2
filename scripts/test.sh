#!/usr/bin/env bash
# Set everything up (scripts/setup.sh), then run the whole pytest suite on a
# virtual X display (Xvfb) with Mesa's software OpenGL, so napari/Qt GUI tests
# run for real (no QT_QPA_PLATFORM=offscreen).
#
#   bash scripts/test.sh                 # whole suite
#   bash scripts/test.sh -q -k palette   # arguments go to pytest
#
# The exit code is pytest's.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CTN_VENV="$(realpath -m "${CTN_VENV:-$ROOT/.venv}")"
export CTN_VENV
cd "$ROOT"

bash scripts/setup.sh

export QT_API=pyqt6
unset QT_QPA_PLATFORM

echo "[test] pytest $* (Xvfb display)"
exec xvfb-run -a -s "-screen 0 1280x1024x24" "$CTN_VENV/bin/python" -m pytest "$@"
