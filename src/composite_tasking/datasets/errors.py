"""The data sets' errors."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..store.location import Remote

__all__ = ["DatasetError", "StoreRuleError", "DatasetNotFoundError", "not_found"]


class DatasetError(Exception):
    """A data set, or one of its files, is missing or invalid; the message says which."""


class StoreRuleError(DatasetError):
    """Images of a label store hold palettes made under another rule than the one asked
    for (:func:`check_stored_palettes`)."""


class DatasetNotFoundError(DatasetError, FileNotFoundError):
    """A folder, list or per-image file of a data set does not exist (``.path``)."""

    def __init__(self, message: str, path: str | os.PathLike | Remote):
        super().__init__(message)
        self.path = str(path)


def not_found(what: str, path: str | os.PathLike | Remote) -> DatasetNotFoundError:
    return DatasetNotFoundError(f"{what} not found: {path}", path)
