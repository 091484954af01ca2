"""Where a labelling run's Task Palettes come from: one :class:`PaletteSource` per
``--palette-from`` (a folder of palette PNGs, a rule alone, a rule on the model's own
semantics, the palette network), each saying what the store records of it, what the
reader makes (no model needed) and what the labelling thread makes."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..inference import Predictor
from ..palette import Rule, load_rule
from .reading import ReadItem
from .settings import image_rng
from .summary import LabelError

__all__ = ["PaletteSource", "FolderPalettes", "RulePalettes", "SemanticPalettes", "NetPalettes", "palette_folder",
           "palette_source"]  # fmt: skip


class PaletteSource(Protocol):
    """The palettes of a run, and what the store records of them."""

    #: recorded as ``palette_from``: ``semantics``, ``rule``, ``net`` or ``folder:<absolute path>``
    origin: str
    #: the rule recorded (its name and fingerprint); None: palettes no rule this run knows made
    rule: Rule | None
    #: the palette network's weights (sha256), recorded when it made the palettes
    model_sha256: str | None
    #: a folder of palette PNGs, read by the reader beside each image
    folder: Path | None
    #: ``rule_palette(shape, image_id)``: a palette the reader makes (a rule needing no model)
    rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None
    #: a rule the predictor applies to each batch's own semantics (then no palettes are given)
    semantic_rule: Rule | None

    def palette(self, item: ReadItem) -> np.ndarray | None:
        """The palette of a read image, in the labelling thread (None: the batch's own)."""


class _Source:
    """What the sources share: nothing made by the reader or the predictor unless said."""

    rule: Rule | None = None
    model_sha256: str | None = None
    folder: Path | None = None
    rule_palette: Callable[[tuple[int, int], str], np.ndarray] | None = None
    semantic_rule: Rule | None = None

    def palette(self, item: ReadItem) -> np.ndarray | None:
        return item.palette  # the reader's


class FolderPalettes(_Source):
    """Palette PNGs of the images' names in ``folder`` (:func:`.reading.Reader`); no rule
    is recorded (a recorded rule would make fine-tuning under another rule refuse them)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.origin = f"folder:{folder}"


class RulePalettes(_Source):
    """A rule that needs no model (mosaic, random, ``S:<task>``): the reader makes each
    image's palette from ``seed`` and the image's id."""

    origin = "rule"

    def __init__(self, rule: Rule, seed: int):
        self.rule = self._rule = rule
        self._seed = seed
        self.rule_palette = self._palette

    def _palette(self, shape: tuple[int, int], image_id: str) -> np.ndarray:
        return self._rule.palette(shape, rng=image_rng(self._seed, image_id))


class SemanticPalettes(_Source):
    """A rule on the model's own semantics: made by the predictor from the batch's
    encoder pass (:meth:`.inference.Predictor.start_batch`)."""

    origin = "semantics"

    def __init__(self, rule: Rule):
        self.rule = self.semantic_rule = rule

    def palette(self, item: ReadItem) -> None:
        return None


class NetPalettes(_Source):
    """The palette network's prediction for each image, in the labelling thread; ``rule``
    is the one it was trained for."""

    origin = "net"

    def __init__(self, predictor: Predictor, rule: Rule, model_sha256: str | None):
        self._predictor, self.rule, self.model_sha256 = predictor, rule, model_sha256

    def palette(self, item: ReadItem) -> np.ndarray:
        assert item.image is not None  # read without an error (the pipeline)
        return self._predictor.palette_from_net(item.image)


def palette_folder(palette_from: str) -> Path | None:
    """The folder ``palette_from`` names (absolute), None for ``semantics`` and ``net``;
    anything else is a usage error."""
    if palette_from in ("semantics", "net"):
        return None
    folder = Path(palette_from).resolve()
    if not folder.is_dir():
        raise LabelError(f"--palette-from is 'semantics', 'net' or a folder of palette PNGs; "
                         f"{palette_from!r} is none of these")  # fmt: skip
    return folder


def palette_source(palette_from: str, rule: str | Path | None, predictor: Predictor,
                   seed: int = 0) -> PaletteSource:  # fmt: skip
    """The source ``--palette-from`` and ``--rule`` ask for (``rule`` None: R2, or the
    palette network's own); a conflict, a bad rule or a missing network: a usage error,
    before anything is written."""
    folder = palette_folder(palette_from)
    if palette_from == "net":
        try:
            predictor.palette_net  # load now: a missing network is a usage error
        except (ValueError, OSError) as e:
            raise LabelError(f"--palette-from net: {e}") from None
        info = predictor.palette_info
        learned = (info.provenance.get("recipe") or {}).get("rule") if info is not None else None
        if info is not None and learned is not None:  # the network makes its rule's palettes, whatever is asked
            if rule is not None and load_rule(rule).name != load_rule(learned).name:
                raise LabelError(f"--palette-from net: the palette network ({info.path}) was trained "
                                 f"for rule {learned}, so its palettes follow {learned}, not "
                                 f"{load_rule(rule).name}; leave out --rule, or use "
                                 f"--palette-from semantics --rule {rule}")  # fmt: skip
            rule = learned
        return NetPalettes(predictor, load_rule("R2" if rule is None else rule),
                           info.sha256 if info is not None else None)  # fmt: skip
    if folder is not None:
        if rule is not None:
            raise LabelError(f"--palette-from {palette_from}: the palettes come from that folder, not from a "
                             f"rule; leave out --rule {rule}")  # fmt: skip
        return FolderPalettes(folder)
    rule_obj = load_rule("R2" if rule is None else rule)
    return SemanticPalettes(rule_obj) if rule_obj.needs_semantics else RulePalettes(rule_obj, seed)
