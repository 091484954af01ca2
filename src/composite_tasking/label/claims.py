"""Claims: concurrent runs of ``ctn label`` on one store share the work.

Two identical runs started together (two terminals, a job started twice, shards of
another size) used to label every image twice: correct, but twice the work. A run now
*claims* an image before it reads it, with a file created exclusively
(``O_CREAT | O_EXCL``, atomic on local and network file systems) in a hidden folder
beside the store (``.labels.zarr.claims/`` for ``labels.zarr``), and removes the claim
once the image is written. An image another
live run has claimed is left to that run (counted in the summary). A claim whose run
is gone (its process no longer exists on this machine, or, made on another machine,
older than :data:`STALE_SECONDS`) is taken over, so a killed run never blocks the next.

The folder is beside the store, not in it: zarr warns about folders inside a store
that are not part of its hierarchy. It is removed when the last claim is released.

A store in an object store (``s3://bucket/labels.zarr``) has no ``O_EXCL``: a claim is
an object under the prefix beside the store (``s3://bucket/.labels.zarr.claims/``)
created with S3's conditional PUT (``If-None-Match: *``), which the object store
performs atomically: of two runs creating the same claim, one gets it and the other is
refused (HTTP 412). A PUT is never half written, so a claim is always readable; the rest
(a claim whose run is gone is taken over) is as on a disk, the pid check included for
runs on this machine.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path

from ..store.location import Remote, locate

__all__ = ["Claims", "STALE_SECONDS", "CLAIMS_FOLDER"]

CLAIMS_FOLDER = ".{}.claims"  # beside the store, of its name
#: a claim made on another machine counts as abandoned after this long (an image takes
#: seconds to minutes; its run refreshes nothing, so this is generous)
STALE_SECONDS = 3600.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    except OSError:
        return False
    return True


class Claims:
    """The claims of one run on the store at ``store_path``."""

    def __init__(self, store_path: str | os.PathLike | Remote, run: str | None = None):
        store_path = locate(store_path)
        self.folder = store_path.with_name(CLAIMS_FOLDER.format(store_path.name))
        self.run = run or uuid.uuid4().hex[:16]
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._mine: set[str] = set()

    def _path(self, image_id: str) -> Path | Remote:
        return self.folder / f"{image_id}.json"

    def _record(self) -> bytes:
        return json.dumps({"run": self.run, "pid": self.pid, "host": self.host, "time": time.time()}).encode()

    def _abandoned(self, path: Path | Remote) -> bool:
        try:
            other = json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return True  # released meanwhile
        except (OSError, ValueError):  # half-written by a run that died: judge by its age
            try:
                mtime = path.stat_record()["mtime_ns"] / 1e9 if isinstance(path, Remote) else path.stat().st_mtime
                return time.time() - mtime > 60.0
            except OSError:
                return True
        if other.get("run") == self.run:
            return True
        if other.get("host") == self.host and isinstance(other.get("pid"), int):
            return not _alive(other["pid"])
        return time.time() - float(other.get("time") or 0) > STALE_SECONDS

    def _create(self, path: Path | Remote) -> bool:
        """The claim's file made exclusively, with this run's record; False when it exists."""
        if isinstance(path, Remote):
            return path.put(self._record(), exclusive=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(self._record())
        return True

    @staticmethod
    def _remove(path: Path | Remote) -> None:
        try:
            if isinstance(path, Remote):
                path.fs.rm_file(path.path)
            else:
                path.unlink()
        except FileNotFoundError:
            pass

    def claim(self, image_id: str) -> bool:
        """True when this run may label ``image_id`` (claimed now, or already its own);
        False when another live run is labelling it."""
        if image_id in self._mine:
            return True
        path = self._path(image_id)
        for _ in range(3):
            if not self._create(path):
                if not self._abandoned(path):
                    return False
                self._remove(path)  # take over an abandoned claim: remove it, then race for it again
                continue
            self._mine.add(image_id)
            return True
        return False

    def release(self, image_id: str) -> None:
        """The image is written (or given up): another run may take it."""
        if image_id in self._mine:
            self._mine.discard(image_id)
            self._remove(self._path(image_id))

    def release_all(self) -> None:
        for image_id in list(self._mine):
            self.release(image_id)
        if isinstance(self.folder, Remote):
            return  # an object store has no folders: the prefix is gone with its last claim
        try:
            self.folder.rmdir()  # gone when no run holds a claim
        except OSError:
            pass
