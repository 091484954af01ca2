"""When the viewer of a dock widget goes away, the widget's jobs stop first.

A docked widget gets no ``closeEvent`` when napari's window closes, and a job running in a
worker thread (a fine-tune, a prediction) outlives the window: when the script or
``napari.run()`` ends, Python is torn down under the running thread, and the process
aborts or crashes. :func:`on_viewer_closing` tells a widget in time. It calls a callback
once, when

- the napari window the widget is docked in gets a close that goes ahead: a programmatic
  one (``viewer.close()``, napari's *Close Window* and *Quit*, which ask before they
  close) at once, before napari tears the window down, since napari's ``closeEvent``
  never refuses those; one from the window system (the title bar's close button), which
  napari may refuse after asking the person (running tasks, the *confirm close*
  setting), when the window hides after napari accepted it;
- or the QApplication is about to quit (``aboutToQuit``).

The window is found through the widget's Qt parents (the dock, then napari's
QMainWindow), as napari's documentation of ``Window.dock_widgets`` suggests: a plugin
widget gets a proxy of the viewer on which private attributes such as
``Window._qt_window`` are deprecated. The watch follows the widget when it is docked
later or moved; a widget never docked hears only ``aboutToQuit``. It is a QObject child
of the widget: it ends with the widget, and never keeps the window alive.

:func:`stop_jobs_on_close` is the usual use: when the window closes while the widget runs
a job, cancel the job and wait (at most :data:`STOP_TIMEOUT_S`) for the worker threads of
Qt's global thread pool, where napari's and superqt's workers run, as napari's own
``wait_for_workers_to_quit`` does when the application quits.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QCoreApplication, QEvent, QObject, QThreadPool
from qtpy.QtWidgets import QMainWindow

__all__ = ["STOP_TIMEOUT_S", "WATCH_NAME", "on_viewer_closing", "stop_jobs_on_close",
           "wait_for_workers"]  # fmt: skip

_log = logging.getLogger(__name__)

#: longest wait (s) for a cancelled job when the viewer closes: jobs stop at their next
#: step (a training step, a stage of a prediction), which can take seconds on a CPU
STOP_TIMEOUT_S = 60.0

#: the object name of a watch (a child of its widget)
WATCH_NAME = "composite_tasking_viewer_closing"


class _Watch(QObject):
    """One watch: a QObject child of the widget (it ends with the widget; Qt then drops
    its event filters, PyQt its ``aboutToQuit`` connection) holding the callback.

    It filters the events of the widget and of its ancestors: their ``ParentChange``
    (docking: the widget goes into a dock, the dock into the window) says where the main
    window is now, and the main window's ``Close`` and ``Hide`` say when it closes."""

    def __init__(self, widget: QObject, callback: Callable[[], Any]):
        super().__init__(widget)
        self.setObjectName(WATCH_NAME)
        self._callback: Callable[[], Any] | None = callback
        self._widget = weakref.ref(widget)
        self._filtered: list[weakref.ref] = []  # the widget and its ancestors (never kept alive)
        self._window: weakref.ref | None = None
        self._armed = False  # the window system asked to close; napari may still refuse
        self._follow()
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.fire)

    def _follow(self) -> None:
        """Filter the widget and its ancestors (no more, no less); find the main window."""
        chain, obj = [], self._widget()
        while obj is not None:
            chain.append(obj)
            obj = obj.parent()
        for ref in self._filtered:
            old = ref()
            if old is not None and not any(old is o for o in chain):
                _quietly(lambda old=old: old.removeEventFilter(self))
        known = [ref() for ref in self._filtered]
        for obj in chain:
            if not any(obj is k for k in known):
                obj.installEventFilter(self)
        self._filtered = [weakref.ref(o) for o in chain]
        windows = [o for o in chain if isinstance(o, QMainWindow)]
        window = windows[-1] if windows else None
        if window is None or self._window is None or self._window() is not window:
            self._armed = False
        self._window = weakref.ref(window) if window is not None else None

    def eventFilter(self, obj, event) -> bool:  # Qt's name
        kind = event.type()
        if kind == QEvent.Type.ParentChange:
            self._follow()
        elif self._window is not None and obj is self._window():
            if kind == QEvent.Type.Close:
                if event.spontaneous():
                    self._armed = True  # when napari accepts it, the window hides next
                else:
                    self.fire()
            elif kind == QEvent.Type.Hide and self._armed and not event.spontaneous():
                self.fire()
        return False

    def fire(self) -> None:
        """Call the callback, unless it ran or the watch ended."""
        callback = self._callback
        if callback is None:
            return
        if not self.end():
            return  # deleted with the widget
        try:
            callback()
        except Exception:  # noqa: BLE001 - raised into Qt's event dispatch it would abort
            _log.exception("the viewer-closing callback %r failed", callback)

    def end(self) -> bool:
        """End the watch (the callback is never called after); False once Qt deleted it."""
        self._callback = None
        try:
            self.objectName()
        except RuntimeError:  # deleted with its widget: Qt dropped the filters and the slot
            return False
        for ref in self._filtered:
            obj = ref()
            if obj is not None:
                _quietly(lambda obj=obj: obj.removeEventFilter(self))
        self._filtered, self._window = [], None
        app = QCoreApplication.instance()
        if app is not None:
            _quietly(lambda: app.aboutToQuit.disconnect(self.fire))
        return True


def _quietly(step: Callable[[], Any]) -> None:
    try:
        step()
    except (RuntimeError, TypeError):  # a deleted Qt object / a connection already gone
        pass


def on_viewer_closing(widget: QObject, callback: Callable[[], Any]) -> Callable[[], Any]:
    """Call ``callback()`` once when the napari window that ``widget`` is docked in closes,
    or the application quits (see the module docstring); never after ``widget`` is
    destroyed. The widget may be docked later. Returns a function that ends the watch.
    Exceptions of ``callback`` are logged, never raised into Qt."""
    return _Watch(widget, callback).end


def wait_for_workers(timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Wait (at most ``timeout_s``) until the jobs of Qt's global thread pool (napari and
    superqt workers) have ended; True if they have, else a warning is logged."""
    done = bool(QThreadPool.globalInstance().waitForDone(max(0, int(timeout_s * 1000))))
    if not done:
        _log.warning("a cancelled job still runs after %.0f s; the process may not end cleanly",
                     timeout_s)  # fmt: skip
    return done


def stop_jobs_on_close(widget: QObject, cancel: Callable[[], Any], running: Callable[[], bool],
                       timeout_s: float = STOP_TIMEOUT_S) -> Callable[[], Any]:  # fmt: skip
    """When the window ``widget`` is docked in closes (:func:`on_viewer_closing`) while
    ``running()``: ``cancel()``, then :func:`wait_for_workers` (at most ``timeout_s``).
    Returns the watch's end."""

    def stop() -> None:
        if running():
            cancel()
            wait_for_workers(timeout_s)

    return on_viewer_closing(widget, stop)
