"""What a labelling run reports: its summary, its errors, where its time went."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store.location import Remote

__all__ = ["TIMINGS", "Clock", "format_timings", "LabelError", "LabelSummary"]

#: the labelling thread's time in :attr:`LabelSummary.timings`: waiting for the reader;
#: making palettes; starting batches on the device (on a CPU: the whole forward);
#: waiting for a started batch (and decoding its labels, without writer processes);
#: handing images to the writers (waiting while they hold as many as they may); after
#: the last batch, waiting for the writers to finish; the rest
TIMINGS = ("read", "palette", "predict", "wait", "hand", "finish", "other")


class Clock:
    """Accumulates the labelling thread's seconds per :data:`TIMINGS` key."""

    def __init__(self):
        self._t0 = time.perf_counter()
        self._end: float | None = None
        self._totals: dict[str, float] = dict.fromkeys(TIMINGS, 0.0)

    @contextlib.contextmanager
    def __call__(self, key: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._totals[key] += time.perf_counter() - t0

    def stop(self) -> None:
        self._end = time.perf_counter()

    def seconds(self, writers: int, writers_busy: float) -> dict[str, float]:
        total = (self._end or time.perf_counter()) - self._t0
        out = dict(self._totals)
        out["other"] = max(0.0, total - sum(v for k, v in out.items() if k != "other"))
        return {**out, "total": total, "writers": float(writers), "writers_busy": writers_busy}


def format_timings(timings: dict[str, float]) -> str:
    """One line from :attr:`LabelSummary.timings`: where the labelling thread's time went
    (shares of the run) and how busy the writers were."""
    total = timings.get("total", 0.0)
    if total <= 0:
        return "time: nothing timed"
    words = {"predict": "starting batches", "wait": "waiting for them", "read": "waiting for the reader",
             "palette": "palettes", "hand": "handing to the writers", "finish": "waiting for the writers at the end",
             "other": "other"}  # fmt: skip
    parts = ", ".join(f"{words[k]} {timings.get(k, 0.0) / total:.0%}" for k in TIMINGS)
    line = f"time {total:.1f} s, labelling thread: {parts}"
    n = int(timings.get("writers", 0))
    if n:
        line += f"; {n} writer(s) busy {timings.get('writers_busy', 0.0) / (total * n):.0%} of the run"
    return line


class LabelError(ValueError):
    """A usage problem: nothing was written."""


@dataclass
class LabelSummary:
    store: Path | Remote
    done: list[str] = field(default_factory=list)
    skipped_complete: list[str] = field(default_factory=list)
    #: images in the store a person had a hand in (corrected, or saved from napari):
    #: never relabelled, ``overwrite`` or not
    kept: list[str] = field(default_factory=list)
    #: images kept by reference whose file changed since they were labelled: labelled
    #: again (also in ``done`` once written), ``overwrite`` or not
    changed: list[str] = field(default_factory=list)
    #: images in ``kept`` whose file changed since they were labelled: their labels (a
    #: person's work) belong to the old picture; left as they are for the person to decide
    kept_changed: list[str] = field(default_factory=list)
    #: files in the input folders that are not images by their suffix: not tried, and
    #: not a reason for a "partial" result
    ignored: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    #: (path, the path it was labelled as): another name of a file found already (a
    #: symbolic link to an image of the folder): its image is labelled once, not a
    #: reason for a "partial" result
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    #: images another run of the same store was labelling at the same time (it claimed
    #: them first, :mod:`.claims`): left to it, not a reason for a "partial" result
    elsewhere: list[str] = field(default_factory=list)
    #: the contact sheet written (None: none asked, or no complete image to show)
    preview: Path | None = None
    #: why the contact sheet could not be written (a full disk), naming it; the labels
    #: and the store are not concerned, but the run counts as partial (``ok`` is False)
    preview_error: str | None = None
    stopped: bool = False
    #: seconds: where the labelling thread's time went (see :data:`TIMINGS`), its
    #: ``total``, and ``writers_busy``, the writers' time decoding and writing summed
    #: over the ``writers`` threads or processes (0: the labelling thread wrote)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """No image failed, the contact sheet was written, and no image a person corrected
        is left on a picture that changed."""
        return not self.failed and self.preview_error is None and not self.kept_changed
