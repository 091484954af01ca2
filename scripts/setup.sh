#!/usr/bin/env bash
# One-shot, idempotent set-up for napari-composite-tasking on Debian 12.
#
#   bash scripts/setup.sh            # from any directory
#   CTN_VENV=/tmp/v bash scripts/setup.sh
#
# 1. apt: the system libraries napari/Qt6 need to run on a virtual X display
#    (Xvfb) with Mesa's software OpenGL. Only touched when one is missing.
# 2. venv at ${CTN_VENV:-<repo>/.venv} with `pip install -c constraints.txt
#    -e ".[dev]"`. Skipped when nothing that affects it changed (stamp file).
#
# Environment: CTN_VENV (venv path, default <repo>/.venv; a relative path is
# taken from the current directory), CTN_VERBOSE=1 (show pip's full output).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(realpath -m "${CTN_VENV:-$ROOT/.venv}")"
cd "$ROOT"

say() { printf '[setup] %s\n' "$*"; }

# --- 1. system packages -----------------------------------------------------
# Xvfb + xauth for `xvfb-run`; Mesa (llvmpipe) behind libGL/libEGL; the
# libraries Qt6's xcb platform plugin loads. Checked on a bare (debootstrap
# minbase) Debian 12 with napari 0.9 / PyQt6 6.11: that set is sufficient.
# libxrender1, libxi6 and libxcb-xinerama0 are on Qt 6's X11 requirements list
# but not loaded by Qt 6.11; they stay because pyproject allows PyQt6>=6.5.
# fonts-dejavu-core: a font for Qt's text (fontconfig pulls it in anyway).
APT_PACKAGES=(
    xvfb xauth
    libgl1 libegl1 libgl1-mesa-dri
    libglib2.0-0 libfontconfig1 fonts-dejavu-core libdbus-1-3
    libxkbcommon0 libxkbcommon-x11-0
    libx11-xcb1 libxrender1 libxi6
    libxcb-cursor0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
    libxcb-render-util0 libxcb-shape0 libxcb-xfixes0 libxcb-xinerama0 libxcb-xkb1
)

is_installed() {
    local st
    st="$(dpkg-query -W -f='${db:Status-Status}\n' "$1" 2>/dev/null || true)"
    [[ $'\n'"$st"$'\n' == *$'\n'installed$'\n'* ]]
}

# A Debian system python3 needs python3-venv for `python3 -m venv`.
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

if command -v dpkg-query >/dev/null 2>&1; then
    missing=()
    for p in "${APT_PACKAGES[@]}"; do
        is_installed "$p" || missing+=("$p")
    done
    if [ "${#missing[@]}" -eq 0 ]; then
        say "apt: all ${#APT_PACKAGES[@]} system packages present"
    elif [ "$(id -u)" -ne 0 ]; then
        say "apt: SKIPPED (not root). Missing: ${missing[*]}"
        say "apt: run as root: apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
    else
        say "apt: installing ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt_opts=(-q -o DPkg::Lock::Timeout=300)
        t0=$SECONDS
        apt-get "${apt_opts[@]}" update >/dev/null
        apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
        say "apt: done ($((SECONDS - t0))s)"
    fi
else
    say "apt: SKIPPED (no dpkg: not Debian). Needed: Xvfb, xauth, Mesa GL/EGL and Qt6's xcb libraries"
fi

# --- 2. virtual environment ---------------------------------------------------
PY="$VENV/bin/python"
if [ -x "$PY" ] && ! "$PY" -c 'import sys' >/dev/null 2>&1; then
    say "venv: $VENV is broken, recreating"
    rm -rf "$VENV"
fi
if [ ! -x "$PY" ]; then
    if ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        say "ERROR: need Python >= 3.11 as python3 (found: $(python3 -V 2>&1 || echo none))" >&2
        exit 1
    fi
    say "venv: creating $VENV ($(python3 -V 2>&1))"
    python3 -m venv "$VENV"
fi

PIP_ARGS=(-c constraints.txt -e ".[dev]")
STAMP="$VENV/.ctn-setup-stamp"
want="$( { cat pyproject.toml constraints.txt; echo "${PIP_ARGS[*]}"; "$PY" -VV; } | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    say "pip: up to date (pyproject.toml and constraints.txt unchanged)"
else
    quiet=(-q)
    [ "${CTN_VERBOSE:-0}" = 1 ] && quiet=()
    rm -f "$STAMP"
    t0=$SECONDS
    say "pip: upgrading pip"
    "$PY" -m pip install "${quiet[@]}" --upgrade pip
    say "pip: installing ${PIP_ARGS[*]} (first run: a few minutes)"
    "$PY" -m pip install "${quiet[@]}" --progress-bar off "${PIP_ARGS[@]}"
    echo "$want" >"$STAMP"
    say "pip: done ($((SECONDS - t0))s)"
fi

say "ready: $VENV"
