"""The label store: pseudo-labels, corrections and their provenance, in one zarr v3 store
(OME-Zarr 0.5 image groups; the layout: :mod:`.format`).

- :mod:`.format`: the layout, its constants, OME-Zarr attributes, ids;
- :mod:`.checks`: what a sample must be before it is written;
- :mod:`.sample`: :class:`StoredSample`, one image read back;
- :mod:`.sources`: images kept by reference: what is recorded of their file, and whether
  the file still is it;
- :mod:`.root`: what a path holds (a label store, of which version), a new store's root;
- :mod:`.label_store`: :class:`LabelStore`: opening, listing, and each job below;
- :mod:`.writing`: writing a new image, or new maps of a stored one, behind the
  image's completion marker;
- :mod:`.corrections`: what a person checked: correction masks, corrections, review
  marks;
- :mod:`.reading`: an image read back, and its file when kept by reference;
- :mod:`.fast_files`: new images written as plain files (zarr's own API as the fallback).
"""

from .format import (
    CHECKED_PROVENANCES,
    CORRECTED_PREFIX,
    IMAGE_FORMAT,
    LABEL_NAMES,
    MAP_NAMES,
    NS,
    OME_VERSION,
    PERSON_PROVENANCES,
    PROVENANCES,
    SCORES,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    TILE,
    WHOLE_IMAGE_MAX_PIXELS,
    StoreError,
    chunk_shape,
    file_sha256,
    validate_image_id,
)
from .label_store import LabelStore
from .sample import StoredSample

__all__ = [
    "StoreError",
    "LabelStore",
    "StoredSample",
    "STORE_FORMAT",
    "STORE_FORMAT_VERSION",
    "PROVENANCES",
    "PERSON_PROVENANCES",
    "CHECKED_PROVENANCES",
    "CORRECTED_PREFIX",
    "MAP_NAMES",
    "LABEL_NAMES",
    "TILE",
    "WHOLE_IMAGE_MAX_PIXELS",
    "chunk_shape",
    "file_sha256",
    "validate_image_id",
    "NS",
    "IMAGE_FORMAT",
    "SCORES",
    "OME_VERSION",
]
