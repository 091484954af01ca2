"""Scenes of the synthetic world as training items."""

from __future__ import annotations

from .items import Augment, ItemDataset, prepare_item

__all__ = ["SyntheticDataset"]


class SyntheticDataset(ItemDataset):
    """Scenes of the synthetic world, generated on the fly: item ``i`` is scene
    ``generate(seed, i, size, config)`` with a palette from ``rule`` and ``augment``.

    ``length`` scenes; deterministic per ``(seed, index, epoch)``. ``world`` names a
    world of :data:`composite_tasking.synthetic.WORLDS` (``"shifted"``), ``config`` is a
    :class:`~composite_tasking.synthetic.SceneConfig`; at most one of them, the default
    world when neither.
    """

    def __init__(self, seed: int, length: int, size: int | tuple[int, int] = 256,
                 rule="mosaic", augment: Augment | None = None, config=None,
                 world: str | None = None):  # fmt: skip
        from ..synthetic import get_world

        super().__init__(rule, augment, seed)
        if self.rule is None:
            raise ValueError("a SyntheticDataset needs a rule to make palettes")
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if config is not None and world is not None:
            raise ValueError("give a SyntheticDataset a world name or a config, not both")
        self.length = int(length)
        self.size = size
        self.config = get_world(world if config is None else config)

    def __len__(self) -> int:
        return self.length

    def shapes(self) -> list[tuple[int, int]]:
        h, w = (self.size, self.size) if isinstance(self.size, int) else self.size
        return [(int(h), int(w))] * self.length

    def sample(self, index: int) -> dict:
        """The canonical (not augmented) sample of item ``index``."""
        from ..synthetic import generate

        return generate(self.seed, self._check_index(index), self.size, self.config)

    def __getitem__(self, index: int) -> dict:
        index = self._check_index(index)
        return prepare_item(self.sample(index), self.rule, self.augment, self.rng(index),
                            f"synthetic-{self.seed}-{index}")  # fmt: skip
