"""Where a label store or an input image lives: a local path, or an object-store URL
(``s3://bucket/labels.zarr``).

Every command turns what it is given into a location with :func:`locate`: a local path
stays a :class:`pathlib.Path` (and everything about it behaves as before), a URL becomes
a :class:`Remote`, which carries its storage options and gives what the store code needs:
an fsspec file system (:attr:`Remote.fs`), a zarr store (:meth:`Remote.zarr_store`, zarr's
own :class:`zarr.storage.FsspecStore`) and a name to show (``str()``: the URL).

Credentials and the endpoint come from the standard AWS environment variables
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_ENDPOINT_URL``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``: botocore reads them) and from
storage options: fsspec's keyword arguments of the file system (for S3, s3fs's:
``endpoint_url``, ``key``, ``secret``, ``anon``, ``client_kwargs``, ...), given on the
command line as ``--storage-option KEY=VALUE`` (:func:`parse_storage_options`). The
command line makes them the process's defaults (:func:`use_storage_options`), kept in
the environment variable :data:`OPTIONS_ENV` so that the processes it starts (writer
processes, data-loader workers) open the same buckets the same way.

No torch, Qt or napari; fsspec and s3fs are imported only when a URL is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from .format import StoreError

__all__ = ["Remote", "LocationError", "locate", "is_url", "parse_storage_options", "use_storage_options",
           "default_storage_options", "source_name", "OPTIONS_ENV"]  # fmt: skip

#: the environment variable that carries the command line's storage options (JSON) to
#: the processes it starts
OPTIONS_ENV = "CTN_STORAGE_OPTIONS"

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://(.*)$", re.S)


#: (protocol, bucket, storage options) of the buckets :meth:`Remote.check` found usable
_CHECKED: set[tuple[str, str, str]] = set()


class LocationError(StoreError):
    """An object store that cannot be used as asked: one line, naming the URL and why
    (a missing bucket, refused credentials, an endpoint that cannot be reached)."""


def is_url(value: Any) -> bool:
    """Whether ``value`` is an object-store location (a :class:`Remote`, or a string
    ``protocol://...`` other than ``file://``)."""
    if isinstance(value, Remote):
        return True
    if not isinstance(value, str):
        return False
    m = _URL.match(value)
    return m is not None and m.group(1).lower() not in ("file", "local")


def _value(text: str) -> Any:
    """A storage option's value: JSON when it parses (``true``, ``3``, ``{"a": 1}``), else
    the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_storage_options(items: list[str] | None) -> dict:
    """``["KEY=VALUE", ...]`` (``--storage-option``, repeatable) -> a dict of fsspec
    keyword arguments. A value is read as JSON when it is JSON (``anon=true``,
    ``client_kwargs={"region_name": "eu-west-1"}``), else kept as text; a dotted key sets
    a nested one (``client_kwargs.region_name=eu-west-1``). Raises :class:`ValueError`
    naming a malformed item."""
    out: dict = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ValueError(f"--storage-option takes KEY=VALUE (e.g. endpoint_url=http://127.0.0.1:9000), "
                             f"got {item!r}")  # fmt: skip
        *parents, last = key.split(".")
        place = out
        for p in parents:
            nxt = place.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ValueError(f"--storage-option {item!r}: {p} was given a value, not options")
            place = nxt
        place[last] = _value(text)
    return out


def use_storage_options(options: Mapping | None) -> None:
    """Make ``options`` the defaults of every :class:`Remote` made without options in this
    process and in the processes it starts (:data:`OPTIONS_ENV`); None or empty: none."""
    if options:
        os.environ[OPTIONS_ENV] = json.dumps(dict(options), sort_keys=True)
    else:
        os.environ.pop(OPTIONS_ENV, None)


def default_storage_options() -> dict:
    """The storage options :func:`use_storage_options` set (in this process or its parent)."""
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        raise LocationError(f"the environment variable {OPTIONS_ENV} is not JSON: {text[:80]!r}") from None
    return value if isinstance(value, dict) else {}


def locate(path: Any, storage_options: Mapping | None = None) -> "Path | Remote":
    """A local path as a :class:`~pathlib.Path` (as before), a URL as a :class:`Remote`
    with ``storage_options`` (default: :func:`default_storage_options`); a
    :class:`Remote` stays itself (with ``storage_options`` added when given)."""
    if isinstance(path, Remote):
        return path if not storage_options else Remote(path.url, {**path.storage_options, **storage_options})
    if is_url(path):
        return Remote(path, storage_options)
    return Path(path)


def source_name(path: Any) -> str:
    """What a store records as an image's source: a URL as it is, a local path resolved."""
    return str(path) if is_url(path) else str(Path(path).resolve())


def _ns(info: Mapping) -> int | None:
    """A listing's modification time in ns (S3: ``LastModified``, whole seconds)."""
    stamp = info.get("LastModified", info.get("mtime", info.get("last_modified")))
    if stamp is None:
        return None
    if hasattr(stamp, "timestamp"):
        return int(stamp.timestamp()) * 10**9 + int(getattr(stamp, "microsecond", 0)) * 1000
    try:
        return int(float(stamp) * 1e9)
    except (TypeError, ValueError):
        return None


class Remote:
    """An object in (or a prefix of) an object store: ``protocol://bucket/key``, with the
    storage options to reach it. Picklable (the file system is made again where it is
    unpickled); behaves like the few :class:`~pathlib.Path` methods the store code uses
    (``name``, ``suffix``, ``parent``, ``/``, ``with_name``, ``resolve``, ``is_file``,
    ``read_bytes``)."""

    def __init__(self, url: str, storage_options: Mapping | None = None):
        m = _URL.match(str(url))
        if not m:
            raise LocationError(f"{url!r} is not a URL (protocol://bucket/path)")
        self.protocol = m.group(1).lower()
        parts = [p for p in posixpath.normpath("/" + m.group(2)).split("/") if p]  # no '.', '..' or '//'
        if not parts:
            raise LocationError(f"{url}: no bucket in the URL (e.g. s3://bucket/labels.zarr)")
        self.path = "/".join(parts)  # the file system's path: bucket/key
        self.url = f"{self.protocol}://{self.path}"
        self.storage_options = dict(default_storage_options() if storage_options is None else storage_options)
        self._fs = None
        self._fs_pid: int | None = None

    # --------------------------------------------------------------- path-like
    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"Remote({self.url!r})"

    def __reduce__(self):
        return (Remote, (self.url, self.storage_options))

    def __eq__(self, other) -> bool:
        return isinstance(other, Remote) and (other.url, other._key()) == (self.url, self._key())

    def __hash__(self) -> int:
        return hash((self.url, self._key()))

    def _key(self) -> str:
        return json.dumps(self.storage_options, sort_keys=True, default=str)

    @property
    def bucket(self) -> str:
        return self.path.split("/", 1)[0]

    @property
    def key(self) -> str:
        return self.path.partition("/")[2]

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        return PurePosixPath(self.name).suffix

    @property
    def parent(self) -> "Remote":
        return self.at(self.path.rsplit("/", 1)[0] if "/" in self.path else self.path)

    def __truediv__(self, part: str | os.PathLike) -> "Remote":
        return self.at(f"{self.path}/{PurePosixPath(part).as_posix().strip('/')}")

    def with_name(self, name: str) -> "Remote":
        return self.parent / name

    def resolve(self) -> "Remote":
        return self

    absolute = resolve

    def at(self, path: str) -> "Remote":
        """Another object of the same file system (``path``: bucket/key)."""
        out = Remote(f"{self.protocol}://{path}", self.storage_options)
        out._fs, out._fs_pid = self._fs, self._fs_pid
        return out

    def relative_to(self, root: "Remote") -> PurePosixPath:
        """This object's key below the prefix ``root`` (:class:`ValueError` when not below)."""
        if self.protocol != root.protocol or not self.path.startswith(root.path + "/"):
            raise ValueError(f"{self} is not below {root}")
        return PurePosixPath(self.path[len(root.path) + 1 :])

    def is_relative_to(self, root: "Remote") -> bool:
        return self.protocol == root.protocol and self.path.startswith(root.path + "/")

    # -------------------------------------------------------------- the store
    @property
    def fs(self):
        """The fsspec file system (synchronous), made once."""
        if self._fs is None or self._fs_pid != os.getpid():  # made again in a forked process
            self._fs, self._fs_pid = self._filesystem(), os.getpid()
        return self._fs

    def _filesystem(self, **extra):
        try:
            import fsspec
        except ImportError:  # pragma: no cover - fsspec comes with zarr
            raise LocationError(f"{self.url}: object stores need fsspec (pip install fsspec s3fs)") from None
        try:
            return fsspec.filesystem(self.protocol, **{**self.fs_options(), **extra})
        except ImportError as e:
            package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(
                self.protocol, f"the fsspec package for {self.protocol}://"
            )
            raise LocationError(
                f"{self.url}: reading {self.protocol}:// needs {package} (pip install {package}): {e}"
            ) from None
        except TypeError as e:
            raise LocationError(
                f"{self.url}: a storage option the {self.protocol}:// file system does not take: {e}"
            ) from None

    def fs_options(self) -> dict:
        """The file system's keyword arguments: the storage options, and no listings cache
        unless they ask for one (other processes write the same store: a cached listing
        would miss their images, or an earlier write's objects to delete)."""
        return {"use_listings_cache": False, **self.storage_options}

    def zarr_store(self, read_only: bool):
        """zarr's own store of this prefix (:class:`zarr.storage.FsspecStore`)."""
        from zarr.storage import FsspecStore

        try:
            return FsspecStore.from_url(self.url, storage_options=self.fs_options(), read_only=read_only)
        except ImportError as e:
            raise LocationError(f"{self.url}: {e}") from None

    def endpoint(self) -> str:
        """Where requests go, for messages."""
        opts = self.storage_options
        url = opts.get("endpoint_url") or (opts.get("client_kwargs") or {}).get("endpoint_url")
        if self.protocol == "s3":
            url = url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            return url or "AWS S3"
        return url or self.protocol

    def error(self, e: BaseException, doing: str = "") -> LocationError:
        """One line for an error of the object store: the URL, what went wrong, and where."""
        what = f" ({doing})" if doing else ""
        name = type(e).__name__
        text = str(e).strip().splitlines()[0] if str(e).strip() else name
        if isinstance(e, FileNotFoundError) and doing == "checking the bucket":
            return LocationError(f"{self.url}: the bucket {self.bucket!r} does not exist at {self.endpoint()}")
        if (
            isinstance(e, PermissionError)
            or name in ("NoCredentialsError", "PartialCredentialsError", "ClientError")
            and "denied" in text.lower()
        ):
            return LocationError(f"{self.url}: the object store at {self.endpoint()} refused access{what}: {text} "
                                 "(credentials: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
                                 "--storage-option key=... secret=...)")  # fmt: skip
        if name in ("NoCredentialsError", "PartialCredentialsError"):
            return LocationError(
                f"{self.url}: no credentials for the object store at {self.endpoint()}{what}: "
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), give "
                "--storage-option key=... secret=..., or anon=true for a public bucket"
            )
        if name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                    "ClientConnectorError", "ServerDisconnectedError", "ReadTimeoutError") \
                or isinstance(e, (ConnectionError, TimeoutError)):  # fmt: skip
            return LocationError(f"{self.url}: cannot reach the object store at {self.endpoint()}{what}: {text} "
                                 "(AWS_ENDPOINT_URL or --storage-option endpoint_url=...)")  # fmt: skip
        return LocationError(f"{self.url}: the object store at {self.endpoint()} failed{what}: {name}: {text}")

    def check(self) -> None:
        """Raise :class:`LocationError` (one line) unless the bucket exists and answers
        with these credentials: asked with few retries, before anything is done (once per
        bucket and storage options in a process, when the answer was yes)."""
        key = (self.protocol, self.bucket, self._key())
        if key in _CHECKED:
            return
        probe = self._filesystem(skip_instance_cache=True, **self._quick_config())
        try:
            if self.protocol == "s3":
                probe.call_s3("head_bucket", Bucket=self.bucket)
            elif not probe.exists(self.bucket):
                raise FileNotFoundError(self.bucket)
        except LocationError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure of the store, said in one line
            raise self.error(e, "checking the bucket") from None
        _CHECKED.add(key)

    def _quick_config(self) -> dict:
        if self.protocol != "s3":
            return {}
        config = dict(self.storage_options.get("config_kwargs") or {})
        config.setdefault("retries", {"max_attempts": 1})
        config.setdefault("connect_timeout", 10)
        return {"config_kwargs": config}

    # ------------------------------------------------------------- objects
    def is_file(self) -> bool:
        try:
            return bool(self.fs.isfile(self.path))
        except Exception:  # noqa: BLE001 - unreachable or refused: not a file this can read
            return False

    def exists(self) -> bool:
        """Whether anything is at (or under) this key; :class:`LocationError` when the
        bucket cannot be used."""
        self.check()
        try:
            return bool(self.fs.exists(self.path))
        except Exception as e:  # noqa: BLE001 - said in one line
            raise self.error(e, "looking for it") from None

    def read_bytes(self) -> bytes:
        """The object's bytes (:class:`FileNotFoundError` when it is missing)."""
        return self.fs.cat_file(self.path)

    def stat_record(self) -> dict:
        """``{"size", "mtime_ns"}`` of the object (its listing's size and ``LastModified``,
        whole seconds on S3), as :func:`.sources.stat_record` gives of a file."""
        info = self.fs.info(self.path)
        if info.get("type") == "directory":
            raise IsADirectoryError(self.url)
        mtime = _ns(info)
        return {"size": int(info.get("size") or 0), "mtime_ns": 0 if mtime is None else mtime}

    def sha256(self) -> str:
        return hashlib.sha256(self.read_bytes()).hexdigest()

    def put(self, data: bytes, *, exclusive: bool = False) -> bool:
        """Write the object in one request (a PUT replaces an object atomically: a reader
        sees the old bytes or the new ones). ``exclusive``: only when no object has this
        key (S3's conditional ``If-None-Match: *``); False when one had."""
        try:
            if exclusive:
                self.fs.pipe_file(self.path, data, mode="create")
            else:
                self.fs.pipe_file(self.path, data)
        except FileExistsError:  # HTTP 412: the key was taken
            if exclusive:
                return False
            raise
        except OSError as e:  # HTTP 409: another conditional PUT of the key in flight (AWS): it wins
            if exclusive and "ConditionalRequestConflict" in f"{e} {e.__cause__ or ''}":
                return False
            raise
        return True
