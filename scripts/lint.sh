#!/usr/bin/env bash
# The static checks, run by .ci/run before the tests (and by .pre-commit-config.yaml):
#
#   ruff    pyflakes' rules and syntax errors (F, E9) in src/ and training/, as
#           tests/test_code_shape.py::test_the_package_passes_pyflakes checks
#   format  `ruff format --check` on src/ and training/ (pyproject's [tool.ruff]; a
#           `# fmt: skip` keeps a hand-aligned statement as it is)
#   mypy  the core (composite_tasking without _napari, with composite_tasking.training)
#         with pyproject.toml's [tool.mypy]
#
#   bash scripts/lint.sh             # both
#   bash scripts/lint.sh mypy        # one (ruff, format or mypy)
#
# Exits non-zero when a check finds anything, and says which failed. Environment:
# CTN_VENV (the venv with ruff and mypy, default <repo>/.venv; scripts/setup.sh makes it).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$(realpath -m "${CTN_VENV:-$ROOT/.venv}")"
cd "$ROOT"

say() { printf '[lint] %s\n' "$*"; }

run_ruff() {
    "$VENV/bin/ruff" check --no-cache --select F,E9 src training
}

run_format() {
    "$VENV/bin/ruff" format --no-cache --check src training
}

run_mypy() {
    # training/ is the subpackage composite_tasking.training (pyproject's package-dir),
    # which mypy cannot map by itself: it checks a tree of links, composite_tasking/ =
    # src/composite_tasking's entries + training -> training/, kept in .mypy_cache (the
    # same paths every run, so that mypy's cache holds). Its messages name the real files.
    local tree="$ROOT/.mypy_cache/tree" entry
    rm -rf "$tree" && mkdir -p "$tree/composite_tasking" || return 2
    for entry in src/composite_tasking/*; do
        [ "$(basename "$entry")" = training ] && continue  # a link some checkouts have
        ln -s "$ROOT/$entry" "$tree/composite_tasking/" || return 2
    done
    ln -s "$ROOT/training" "$tree/composite_tasking/training" || return 2
    MYPYPATH="$tree" "$VENV/bin/mypy" --config-file pyproject.toml --cache-dir "$ROOT/.mypy_cache" \
        | sed -e "s#^\($ROOT/\)\{0,1\}\.mypy_cache/tree/composite_tasking/training/#training/#" \
              -e "s#^\($ROOT/\)\{0,1\}\.mypy_cache/tree/#src/#"
    return "${PIPESTATUS[0]}"
}

checks=("$@")
[ "${#checks[@]}" -eq 0 ] && checks=(ruff format mypy)
failed=()
for check in "${checks[@]}"; do
    case "$check" in
        ruff | format | mypy) ;;
        *) say "unknown check '$check' (ruff, format, mypy)" >&2; exit 2 ;;
    esac
    tool="$check"
    [ "$check" = format ] && tool=ruff
    if [ ! -x "$VENV/bin/$tool" ]; then
        say "$tool: not in $VENV (bash scripts/setup.sh installs the dev extras)" >&2
        failed+=("$check")
        continue
    fi
    say "$check"
    "run_$check" || failed+=("$check")
done
if [ "${#failed[@]}" -gt 0 ]; then
    say "FAILED: ${failed[*]}" >&2
    exit 1
fi
say "passed: ${checks[*]}"
