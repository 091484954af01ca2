"""Writing new zarr v3 groups and arrays as plain files, with zarr's own metadata.

``ctn label`` writes ~30 small files per image (a group per label map, an array per map,
their metadata and one chunk each). Through zarr-python's API each array costs ~2 ms of
Python beyond compressing it (metadata objects, the codec pipeline's coroutines and
threads, the store's asyncio calls); on a GPU machine that bound the labelling at a
few images/s (docs/benchmarks.md). Here the metadata documents come from zarr itself
(a template array made once per kind of array in a :class:`zarr.storage.MemoryStore`,
its ``zarr.json`` bytes reused; group documents from :class:`GroupMetadata`), the chunks
are encoded with the same numcodecs codecs zarr uses and written to the file names of
zarr's default chunk-key encoding, and chunks equal to the fill value everywhere are not
written (zarr's ``write_empty_chunks=False``). The result is the store zarr would write,
file for file (``tests/test_store.py`` compares the bytes); anything this module does
not know (another codec, a sharded array) raises :class:`Unsupported` before a file is
written, and the caller uses zarr's API instead.

Only for *new* nodes; corrections and reads go through zarr. On the local file system
the files are written here; in an object store (:mod:`.remote_io`) the same bytes are
written as objects (:func:`array_files`).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from pathlib import Path
from typing import Any

import numcodecs
import numpy as np
import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.group import GroupMetadata
from zarr.core.metadata import ArrayV3Metadata
from zarr.storage import MemoryStore

__all__ = [
    "Unsupported",
    "group_document",
    "prepare_array",
    "write_group",
    "write_array",
    "array_files",
    "replace_group_attrs",
]


class Unsupported(Exception):
    """This array's codecs or layout are not written here (use zarr's API)."""


def group_document(attributes: dict) -> bytes:
    """The ``zarr.json`` of a group with these attributes, as zarr writes it."""
    return _group_document(json.dumps(attributes))  # the label groups' are the same each time


@functools.lru_cache(maxsize=64)
def _group_document(attributes: str) -> bytes:
    meta = GroupMetadata(attributes=json.loads(attributes), zarr_format=3)
    return meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in text.split(".")[:2])


def _numcodec(codec) -> Any:
    """The numcodecs encoder of a zarr v3 bytes-to-bytes codec, configured as zarr does."""
    spec = codec.to_dict()
    name, cfg = spec["name"], dict(spec.get("configuration", {}))
    if name == "zstd":
        return numcodecs.Zstd(level=cfg["level"], checksum=cfg.get("checksum", False))
    if name == "blosc":
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[cfg["shuffle"]]
        config = {"id": "blosc", "cname": cfg["cname"], "clevel": cfg["clevel"], "shuffle": shuffle,
                  "blocksize": cfg.get("blocksize", 0)}  # fmt: skip
        if _version(numcodecs.__version__) >= (0, 16):  # as zarr's BloscCodec does
            config["typesize"] = cfg["typesize"]
        return numcodecs.get_codec(config)
    raise Unsupported(f"codec {name!r}")


@functools.lru_cache(maxsize=512)
def _template(key: str) -> tuple[bytes, str, tuple[int, ...], Any, tuple]:
    """(zarr.json bytes, dtype '<..', chunk shape, fill value, encoders) of the array that
    zarr creates with the JSON-encoded keyword arguments ``key``."""
    kw = json.loads(key)
    kw["compressors"] = tuple(_zarr_codec(c) for c in kw["compressors"])
    arr = zarr.create_array(store=MemoryStore(), **kw)
    meta = arr.metadata
    assert isinstance(meta, ArrayV3Metadata)  # zarr_format 3, create_array's default
    doc = meta.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
    spec: dict[str, Any] = meta.to_dict()  # JSON
    if spec.get("chunk_key_encoding") != {"name": "default", "configuration": {"separator": "/"}}:
        raise Unsupported(f"chunk key encoding {spec.get('chunk_key_encoding')}")
    if spec.get("chunk_grid", {}).get("name") != "regular" or spec.get("storage_transformers"):
        raise Unsupported("a chunk grid other than regular")
    codecs = list(meta.codecs)
    first: dict[str, Any] = codecs[0].to_dict()  # JSON
    if first["name"] != "bytes" or len(codecs) > 2:  # sharding and filters are not written here
        raise Unsupported(f"codecs {[c.to_dict()['name'] for c in codecs]}")
    dtype = np.dtype(kw["dtype"])
    if dtype.itemsize > 1:
        endian = first.get("configuration", {}).get("endian", "little")
        dtype = dtype.newbyteorder("<" if endian == "little" else ">")
    encoders = tuple(_numcodec(c) for c in codecs[1:])
    fill = np.array(meta.fill_value, dtype=dtype)
    return doc, dtype.str, tuple(spec["chunk_grid"]["configuration"]["chunk_shape"]), fill, encoders


def _zarr_codec(spec: dict):
    """A zarr codec from its JSON dict (``to_dict()``), for the template's arguments."""
    from zarr.registry import get_codec_class

    return get_codec_class(spec["name"]).from_dict(spec)


def _template_key(kwargs: dict) -> str:
    kw = {k: v for k, v in kwargs.items() if k != "overwrite"}
    kw["shape"] = list(kw["shape"])
    kw["chunks"] = list(kw["chunks"])
    kw["dtype"] = np.dtype(kw["dtype"]).str
    kw["compressors"] = [c.to_dict() for c in kw["compressors"]]
    fill = kw.get("fill_value")
    if isinstance(fill, float) and np.isnan(fill):
        kw["fill_value"] = "NaN"  # JSON has no NaN; zarr reads the string
    elif isinstance(fill, np.generic):
        kw["fill_value"] = fill.item()
    return json.dumps(kw)  # key order kept: zarr writes attributes in the order given


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)


def _write_document(path: str, data: bytes) -> None:
    """A ``zarr.json`` in one step (a temporary file, then a rename), as zarr's own store
    writes it: a reader listing the store meanwhile never meets an empty document."""
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
    _write_file(tmp, data)
    os.replace(tmp, path)


def write_group(path: Path, attributes: dict) -> None:
    """A new group (its folder and ``zarr.json``) at ``path``."""
    os.makedirs(path, exist_ok=True)
    _write_document(os.path.join(path, "zarr.json"), group_document(attributes))


def replace_group_attrs(path: Path, attributes: dict) -> None:
    """Replace a group's ``zarr.json`` in one step (a temporary file, then a rename): a
    reader or a killed writer sees the old document or the new one, never a torn one."""
    _write_document(os.path.join(path, "zarr.json"), group_document(attributes))


def prepare_array(kwargs: dict) -> tuple:
    """The template of an array created with ``kwargs`` (``zarr.create_array``'s keyword
    arguments: shape, dtype, chunks, compressors, fill_value, dimension_names,
    attributes); raises :class:`Unsupported` when this module cannot write it."""
    try:
        return _template(_template_key(kwargs))
    except Unsupported:
        raise
    except (TypeError, ValueError, KeyError) as e:  # not JSON-able, unknown codec config
        raise Unsupported(str(e)) from e


def _all_fill(block: np.ndarray, fill: np.ndarray) -> bool:
    """zarr's test for a chunk it does not write: equal to the fill value everywhere (NaN
    equal to NaN; a float fill of 0 compared bit for bit, so -0.0 is not 0.0)."""
    if block.dtype.kind == "f" and fill == 0:
        view = "V" + str(block.dtype.itemsize)
        return np.array_equal(block.view(view), np.broadcast_to(fill, block.shape).view(view))
    return np.array_equal(block, np.broadcast_to(fill, block.shape), equal_nan=block.dtype.kind == "f")


def _chunks(data: np.ndarray, template: tuple):
    """(chunk index, encoded bytes) of each chunk of ``data`` that holds a value other
    than the fill value, encoded as zarr encodes it."""
    doc, dtype, chunks, fill, encoders = template
    data = np.asarray(data)
    if data.ndim != len(chunks):
        raise ValueError(f"array of {data.ndim} dimensions for chunks {chunks}")
    data = data.astype(dtype, copy=False)
    grid = [-(-n // c) for n, c in zip(data.shape, chunks)]
    for index in np.ndindex(*grid):
        region = tuple(slice(i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, data.shape))
        block = data[region]
        if block.shape != chunks:  # an edge chunk: zarr pads it with the fill value
            full = np.full(chunks, fill, dtype=dtype)
            full[tuple(slice(0, s) for s in block.shape)] = block
            block = full
        if _all_fill(block, fill):
            continue  # zarr's write_empty_chunks=False
        encoded = np.ascontiguousarray(block).view(np.uint8).reshape(-1)
        for enc in encoders:
            encoded = np.frombuffer(enc.encode(encoded), dtype=np.uint8)
        yield index, encoded.tobytes()


def array_files(data: np.ndarray, template: tuple) -> list[tuple[str, bytes]]:
    """The files of a new array as (key below the array, bytes): ``zarr.json`` first, then
    its chunks (an object store writes them as objects: :mod:`.remote_io`)."""
    files = [("zarr.json", template[0])]
    files += [("/".join(["c", *map(str, index)]), blob) for index, blob in _chunks(data, template)]
    return files


def write_array(path: Path, data: np.ndarray, template: tuple) -> None:
    """A new array at ``path``: ``zarr.json``, then each chunk that holds a value other than
    the fill value, encoded as zarr encodes it."""
    doc = template[0]
    chunks = _chunks(data, template)
    first = next(chunks, None)  # the checks of the data, before anything is written
    os.makedirs(path, exist_ok=True)
    _write_document(os.path.join(path, "zarr.json"), doc)
    made: set[str] = set()
    for index, blob in ([] if first is None else [first]) + list(chunks):
        folder = os.path.join(path, "c", *map(str, index[:-1]))
        if folder not in made:
            os.makedirs(folder, exist_ok=True)
            made.add(folder)
        _write_file(os.path.join(folder, str(index[-1])), blob)
