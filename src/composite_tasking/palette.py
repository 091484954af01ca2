"""Task Palettes and the rules that make them (paper section 4, supplementary C).

A Task Palette is an ``uint8`` array (H, W): ``task id + 1`` where that task is requested,
``0`` where no task is. A *rule* makes palettes:

========== ============================== ===========================================
spec       rule                           needs
========== ============================== ===========================================
S:<task>   :class:`SingleTaskRule`        the image size
mosaic     :class:`MosaicRule` (R1r)      the image size and a random generator
random     :class:`RandomRule` (Rrnd)     the image size and a random generator
R2, R3     :class:`SemanticRule`          a semantic label map (21 PASCAL classes)
FILE.yaml  :class:`SemanticRule`          a semantic label map
========== ============================== ===========================================

Semantic rules are data: the built-in R2 and R3 are YAML files in ``rules/`` inside the
package, and any YAML file in the same format is a rule (see :func:`load_rule_file`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Mapping, Protocol, Sequence

import numpy as np
import yaml

from .tasks import IGNORE, NO_TASK, SEMSEG_CLASSES, TASK_NAMES, TASKS, Task, get_task

__all__ = [
    "Rule",
    "SingleTaskRule",
    "MosaicRule",
    "RandomRule",
    "SemanticRule",
    "RuleError",
    "BUILTIN_RULES",
    "load_rule",
    "load_rule_file",
    "rule_fingerprint",
    "validate_palette",
    "palette_tasks",
]


class RuleError(ValueError):
    """A rule specification or rule file is invalid."""


class Rule(Protocol):
    """What a rule is: a ``name``, whether it ``needs_semantics``, and ``palette()``, which
    returns a Task Palette (H, W) ``uint8`` of size ``shape`` (or of the ``semantics``
    map's size); rules that draw at random draw from ``rng`` (a seed or a generator).
    ``name`` and ``needs_semantics`` are read-only: a frozen dataclass's field, a class
    attribute or a property satisfies them."""

    @property
    def name(self) -> str: ...

    @property
    def needs_semantics(self) -> bool:
        """True when :meth:`palette` needs a semantic label map."""
        ...

    def palette(
        self,
        shape: tuple[int, int] | None = None,
        semantics: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray: ...


def _shape(shape: Sequence[int] | None, semantics: np.ndarray | None) -> tuple[int, int]:
    if shape is None:
        if semantics is None:
            raise ValueError("give the palette's shape (H, W) or a semantic label map")
        shape = semantics.shape
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"a palette is 2-D (H, W) with H, W >= 1, got shape {tuple(shape)}")
    return int(shape[0]), int(shape[1])


def _task_values(tasks: Sequence[str | int | Task] | None) -> np.ndarray:
    chosen = TASKS if tasks is None else [get_task(t) for t in tasks]
    if not chosen:
        raise ValueError("a random rule needs at least one task")
    return np.array(sorted({t.palette_value for t in chosen}), dtype=np.uint8)


@dataclass(frozen=True)
class SingleTaskRule:
    """Rule S: one task at every pixel."""

    task: Task
    needs_semantics = False

    def __init__(self, task: str | int | Task):
        object.__setattr__(self, "task", get_task(task))

    @property
    def name(self) -> str:
        return f"S:{self.task.name}"

    def palette(
        self,
        shape: tuple[int, int] | None = None,
        semantics: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        return np.full(_shape(shape, semantics), self.task.palette_value, dtype=np.uint8)


@dataclass(frozen=True)
class MosaicRule:
    """Rule R1r: four rectangles around a random point, each with a random task.

    Supplementary C, eq. (6): ``c_x ~ U[W/4, 3W/4]``, ``c_y ~ U[H/4, 3H/4]`` (the paper
    prints ``3W/4`` for ``c_y``, a typo for square images). ``distinct=True`` draws four
    different tasks as the authors' public code does; ``False`` draws with repetition.
    """

    tasks: tuple[str, ...] = TASK_NAMES
    distinct: bool = True
    name: str = "mosaic"
    needs_semantics = False

    def palette(
        self,
        shape: tuple[int, int] | None = None,
        semantics: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        h, w = _shape(shape, semantics)
        rng = np.random.default_rng(rng)
        values = _task_values(self.tasks)
        replace = not self.distinct or len(values) < 4
        k = rng.choice(values, size=4, replace=replace)
        cx = rng.uniform(w / 4, 3 * w / 4)
        cy = rng.uniform(h / 4, 3 * h / 4)
        # columns x > cx are right of the vertical line, rows y > cy below the horizontal
        # one; quadrants a=0 (top-left), b=1 (top-right), c=2 (bottom-left), d=3, filled
        # as four rectangles (10x faster than indexing k by a quadrant map)
        x0 = min(w, int(np.floor(cx)) + 1)
        y0 = min(h, int(np.floor(cy)) + 1)
        out = np.empty((h, w), np.uint8)
        out[:y0, :x0], out[:y0, x0:], out[y0:, :x0], out[y0:, x0:] = k.astype(np.uint8)
        return out


@dataclass(frozen=True)
class RandomRule:
    """Rule Rrnd: an independently drawn task at every pixel."""

    tasks: tuple[str, ...] = TASK_NAMES
    name: str = "random"
    needs_semantics = False

    def palette(
        self,
        shape: tuple[int, int] | None = None,
        semantics: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        rng = np.random.default_rng(rng)
        values = _task_values(self.tasks)
        return rng.choice(values, size=_shape(shape, semantics)).astype(np.uint8)


@dataclass(frozen=True)
class SemanticRule:
    """A rule that assigns a task to each semantic class (R2, R3, or a user's file).

    ``assignments`` maps class names (:data:`SEMSEG_CLASSES`) to task names; pixels of
    any other class, and unlabelled pixels (255), get ``default`` (a task name, or None
    for "no task").
    """

    name: str
    assignments: Mapping[str, str]
    default: str | None = None
    description: str = ""
    classes: tuple[str, ...] = SEMSEG_CLASSES
    source: str | None = field(default=None, compare=False)
    needs_semantics = True

    def __post_init__(self):
        where = f" in {self.source}" if self.source else ""
        for cls, task in self.assignments.items():
            if cls not in self.classes:
                raise RuleError(
                    f"rule {self.name!r}{where}: unknown class {cls!r}; known classes: {', '.join(self.classes)}"
                )
            try:
                get_task(task)
            except KeyError:
                raise RuleError(
                    f"rule {self.name!r}{where}: unknown task {task!r} for class {cls!r}; "
                    f"known tasks: {', '.join(TASK_NAMES)}"
                ) from None
        if self.default is not None:
            try:
                get_task(self.default)
            except KeyError:
                raise RuleError(
                    f"rule {self.name!r}{where}: unknown default task {self.default!r}; "
                    f"known tasks: {', '.join(TASK_NAMES)} (or null for no task)"
                ) from None

    @property
    def lookup(self) -> np.ndarray:
        """256-entry table: semantic label value -> palette value."""
        fill = NO_TASK if self.default is None else get_task(self.default).palette_value
        lut = np.full(256, fill, dtype=np.uint8)
        for cls, task in self.assignments.items():
            lut[self.classes.index(cls)] = get_task(task).palette_value
        return lut

    def tasks_of_class(self) -> dict[str, str | None]:
        """Every class with the task this rule requests on it (None = no task)."""
        return {c: self.assignments.get(c, self.default) for c in self.classes}

    def palette(
        self,
        shape: tuple[int, int] | None = None,
        semantics: np.ndarray | None = None,
        rng: np.random.Generator | int | None = None,
    ) -> np.ndarray:
        if semantics is None:
            raise ValueError(f"rule {self.name!r} needs a semantic label map")
        sem = np.asarray(semantics)
        if sem.ndim != 2:
            raise ValueError(f"a semantic label map is 2-D (H, W), got shape {sem.shape}")
        if shape is not None and tuple(shape) != sem.shape:
            raise ValueError(f"shape {tuple(shape)} differs from the label map's {sem.shape}")
        if not np.issubdtype(sem.dtype, np.integer):
            raise ValueError(f"a semantic label map holds integers, got dtype {sem.dtype}")
        if sem.size and (sem.min() < 0 or sem.max() > 255):
            raise ValueError(
                f"semantic label values must be 0..{len(self.classes) - 1} or {IGNORE}, "
                f"got values in [{sem.min()}, {sem.max()}]"
            )
        return self.lookup[sem.astype(np.intp)]

    @classmethod
    def from_dict(cls, data: Mapping, source: str | None = None) -> "SemanticRule":
        """Build from the YAML structure ``{name, description, default, tasks: {task: [classes]}}``."""
        where = f" in {source}" if source else ""
        if data is None:
            raise RuleError(f"the rule file{where} is empty: a rule is a mapping with name, default and "
                            "tasks (docs/rules.md)")  # fmt: skip
        if not isinstance(data, Mapping):
            raise RuleError(f"a rule file holds a mapping (name, default, tasks){where}, got "
                            f"{'a list' if isinstance(data, list) else repr(data)[:60]}")  # fmt: skip
        unknown = set(data) - {"name", "description", "default", "tasks"}
        if unknown:
            raise RuleError(f"unknown key(s) {sorted(unknown)}{where}; "
                            "allowed: name, description, default, tasks")  # fmt: skip
        name = str(data.get("name") or (Path(source).stem if source else "rule"))
        tasks = data.get("tasks")
        if not isinstance(tasks, Mapping) or not tasks:
            raise RuleError(f"rule {name!r}{where}: 'tasks' must map task names to class lists")
        assignments: dict[str, str] = {}
        for task_name, class_list in tasks.items():
            try:
                task = get_task(str(task_name)).name
            except KeyError:
                raise RuleError(
                    f"rule {name!r}{where}: unknown task {task_name!r}; known tasks: {', '.join(TASK_NAMES)}"
                ) from None
            if isinstance(class_list, str):
                class_list = [class_list]
            if not isinstance(class_list, (list, tuple)):
                raise RuleError(f"rule {name!r}{where}: task {task!r} needs a list of classes")
            for c in class_list:
                c = str(c)
                if c in assignments:
                    raise RuleError(
                        f"rule {name!r}{where}: class {c!r} is given two tasks ({assignments[c]!r} and {task!r})"
                    )
                assignments[c] = task
        default = data.get("default")
        return cls(
            name=name,
            assignments=assignments,
            default=None if default is None else str(default),
            description=str(data.get("description") or ""),
            source=source,
        )

    def to_dict(self) -> dict:
        tasks: dict[str, list[str]] = {}
        for cls_name, task in self.assignments.items():
            tasks.setdefault(task, []).append(cls_name)
        return {"name": self.name, "description": self.description,
                "default": self.default, "tasks": tasks}  # fmt: skip


def load_rule_file(path: str | Path) -> SemanticRule:
    """Read a semantic rule from a YAML file; errors name the file and the bad value."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise RuleError(f"cannot read rule file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise RuleError(f"rule file {path} is not valid YAML: {e}") from None
    return SemanticRule.from_dict(data, source=str(path))


def _builtin(name: str) -> SemanticRule:
    ref = resources.files("composite_tasking") / "rules" / f"{name.lower()}.yaml"
    data = yaml.safe_load(ref.read_text(encoding="utf-8"))
    return SemanticRule.from_dict(data, source=f"built-in rule {name}")


#: names of the rules that :func:`load_rule` knows without a file
BUILTIN_RULES = ("R2", "R3", "mosaic", "random", "S:<task>")

_ALIASES = {"r1r": "mosaic", "r1": "mosaic", "rrnd": "random", "rnd": "random"}


def load_rule(spec: str | Path | Rule) -> Rule:
    """A rule from its name: ``R2``, ``R3``, ``S:<task>``, ``mosaic`` (R1r), ``random``
    (Rrnd), or the path of a YAML rule file."""
    if not isinstance(spec, (str, Path)):
        return spec
    text = str(spec).strip()
    low = _ALIASES.get(text.lower(), text.lower())
    if low in ("r2", "r3"):
        return _builtin(low)
    if low == "mosaic":
        return MosaicRule()
    if low == "random":
        return RandomRule()
    if low.startswith("s:"):
        try:
            return SingleTaskRule(text[2:])
        except KeyError as e:
            raise RuleError(f"rule {text!r}: {e.args[0]}") from None
    path = Path(text)
    if path.suffix.lower() in (".yaml", ".yml") or path.exists():
        return load_rule_file(path)
    raise RuleError(
        f"unknown rule {text!r}; use R2, R3, S:<task> (tasks: {', '.join(TASK_NAMES)}), "
        "mosaic, random, or the path of a YAML rule file"
    )


def rule_fingerprint(rule: Rule) -> str:
    """16 hex digits that change whenever ``rule`` would make other palettes: a semantic
    rule's default and class table (not its name or description), a random rule's tasks
    (and the mosaic's ``distinct``), rule S's task. A label store records it beside the
    rule's name, so a rule file edited under the same ``name:`` is not mistaken for the
    one the store was labelled with."""
    what: dict[str, object]
    if isinstance(rule, SemanticRule):
        what = {"kind": "semantic", "default": rule.default,
                "assignments": sorted(rule.assignments.items()), "classes": list(rule.classes)}  # fmt: skip
    elif isinstance(rule, SingleTaskRule):
        what = {"kind": "S", "task": rule.task.name}
    elif isinstance(rule, MosaicRule):
        what = {"kind": "mosaic", "tasks": list(rule.tasks), "distinct": rule.distinct}
    elif isinstance(rule, RandomRule):
        what = {"kind": "random", "tasks": list(rule.tasks)}
    else:  # a rule class of the caller's: its name is all there is to go by
        what = {"kind": type(rule).__name__, "name": rule.name}
    text = json.dumps(what, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def validate_palette(palette: np.ndarray, source: str = "palette") -> np.ndarray:
    """Check that ``palette`` is (H, W) with values 0..K; return it as uint8."""
    arr = np.asarray(palette)
    if arr.ndim != 2:
        raise ValueError(f"{source}: a Task Palette is 2-D (H, W), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"{source}: a Task Palette holds integers, got dtype {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() > len(TASKS)):
        bad = arr[(arr < 0) | (arr > len(TASKS))]
        raise ValueError(
            f"{source}: palette values must be 0 (no task) or 1..{len(TASKS)} (task id + 1), found {int(bad.flat[0])}"
        )
    return arr.astype(np.uint8, copy=False)


def palette_tasks(palette: np.ndarray) -> list[Task]:
    """The tasks a palette requests somewhere, in task order."""
    present = set(np.unique(np.asarray(palette)).tolist())
    return [t for t in TASKS if t.palette_value in present]
