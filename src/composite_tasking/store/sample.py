"""One stored image read back (:class:`StoredSample`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ----------------------------------------------------------------------------- reading


@dataclass
class StoredSample:
    """One image read back from a :class:`LabelStore`.

    ``labels`` holds the task maps as in the canonical sample (uint8 (H, W) maps,
    ``normals`` float32 (H, W, 3)); ``valid`` one boolean (H, W) mask per task:
    ``!= 255`` for integer maps, a non-zero vector for normals, and in addition
    ``palette == task id + 1`` for *pseudo* labels when the image has a palette (a
    pseudo-label is only defined where it was asked for; ground truth and corrections
    count wherever they are not ignore). ``maps`` holds the float maps (``edges_prob``,
    ``saliency_prob``, ``confidence_<task>``, (H, W) float32).
    """

    image_id: str
    image: np.ndarray | None
    palette: np.ndarray | None
    labels: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    maps: dict[str, np.ndarray]
    provenance: dict[str, str]
    attrs: dict

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.attrs["shape"])

    @property
    def image_source(self) -> str | None:
        """Where the image came from (file path or name) as given when it was written."""
        return self.attrs.get("image", {}).get("source")

    @property
    def image_sha256(self) -> str | None:
        """sha256 of the image file's bytes, or of its pixels (see ``attrs["image"]``)."""
        return self.attrs.get("image", {}).get("sha256")

    def to_sample(self) -> dict[str, np.ndarray]:
        """The canonical sample dict: image (when stored), palette, task maps, float maps."""
        out: dict[str, np.ndarray] = {}
        if self.image is not None:
            out["image"] = self.image
        if self.palette is not None:
            out["palette"] = self.palette
        out.update(self.labels)
        out.update(self.maps)
        return out
