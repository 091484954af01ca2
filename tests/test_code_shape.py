"""The code's shape (issue #19): no private name imported across modules, and modules
small enough to hold in one's head (the larger ones listed, each with why)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [ROOT / "src" / "composite_tasking", ROOT / "training"]
#: modules over MAX_LINES, and why they still are (each is a split to make)
LARGER = {
    "src/composite_tasking/_napari/predict_widget.py": "the widget's layers and live re-predict apart next",
    "src/composite_tasking/_napari/series_widget.py": "the navigator and the dock",
    "src/composite_tasking/_napari/palette_widget.py": "the widget and its layer combos",
}
MAX_LINES = 600


def _modules():
    for package in PACKAGES:
        yield from sorted(package.rglob("*.py"))


def test_no_private_name_is_imported_across_modules():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("composite_tasking")):
                found += [f"{path.relative_to(ROOT)}: from {'.' * node.level}{node.module or ''} import {a.name}"
                          for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]  # fmt: skip
    assert found == [], "private names imported across modules:\n" + "\n".join(found)


def test_modules_stay_small_or_say_why():
    over = {str(p.relative_to(ROOT)): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    over = {k: n for k, n in over.items() if n > MAX_LINES}
    unexplained = sorted(set(over) - set(LARGER))
    assert unexplained == [], f"modules over {MAX_LINES} lines without a reason in LARGER: {unexplained}"
    stale = sorted(k for k in LARGER if k not in over)
    assert stale == [], f"LARGER lists modules that are no longer over {MAX_LINES} lines: {stale}"


def _module_name(path: Path) -> str:
    if path.is_relative_to(ROOT / "training"):
        parts = ("composite_tasking", "training", *path.relative_to(ROOT / "training").with_suffix("").parts)
    else:
        parts = path.relative_to(ROOT / "src").with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """The package modules ``path`` imports, anywhere in it (a lazy import inside a
    function is an edge too: it still ties the two modules together)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            continue
        out |= {t for t in targets if t.startswith("composite_tasking")}
    return out


def test_no_import_cycle_between_modules():
    """Modules import each other one way (a package's __init__ re-exporting its modules
    aside): a cycle means two modules that are one, or a piece in the wrong one."""
    modules = {_module_name(p): p for p in _modules()}
    graph = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue  # re-exports: the package's face, not a dependency of its parts
        graph[name] = {t for t in _imports(path, name) if t in modules and t != name
                       and modules[t].name != "__init__.py"}  # fmt: skip
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_package_passes_pyflakes():
    """No unused import, undefined name or unused variable in the package (ruff's F
    rules, and E9: syntax errors): the cheap checks that catch a half-finished edit."""
    import shutil
    import subprocess
    import sys

    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert ruff, "ruff is a dev dependency: pip install -e .[dev]"
    res = subprocess.run([ruff, "check", "--no-cache", "--select", "F,E9", "--output-format", "concise",
                          str(ROOT / "src"), str(ROOT / "training")], capture_output=True, text=True)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
