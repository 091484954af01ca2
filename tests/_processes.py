"""Test helpers for processes (no fixtures): kill a running command at a chosen moment."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Callable


def kill_when(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float = 240.0,
              poll: float = 0.01) -> None:  # fmt: skip
    """SIGKILL ``proc`` as soon as ``ready()`` is true (failing if it ends first or nothing
    is ready within ``timeout`` seconds), then reap it: a killed run, mid-work."""
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            assert proc.poll() is None, "the command ended before it could be killed"
            assert time.monotonic() < deadline, "the command did nothing in time"
            time.sleep(poll)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
