"""Which images a labelling process takes: ``--shard I/N``, or the ``RANK`` and
``WORLD_SIZE`` that ``torchrun`` sets. No torch import: ``ctn label`` checks these
before it loads anything."""

from __future__ import annotations

import os
import re
from typing import Mapping

__all__ = ["ShardError", "parse_shard", "shard_from_environment"]


class ShardError(ValueError):
    """A shard or a torchrun environment that cannot be: the message names the value."""


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m or int(m.group(2)) < 1 or int(m.group(1)) >= int(m.group(2)):
        raise ShardError(f"--shard takes I/N with 0 <= I < N, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_from_environment(environ: Mapping[str, str] = os.environ) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` of a torchrun process; None when WORLD_SIZE is unset or 1."""
    world_text = environ.get("WORLD_SIZE")
    if world_text is None or world_text.strip() == "":
        return None
    try:
        world = int(world_text)
    except ValueError:
        world = 0
    if world < 1:
        raise ShardError(f"the environment variable WORLD_SIZE is the number of processes (an "
                         f"integer >= 1), got WORLD_SIZE={world_text!r}")  # fmt: skip
    rank_text = environ.get("RANK")
    if rank_text is None:
        if world == 1:
            return None
        raise ShardError(f"WORLD_SIZE={world_text} is set but RANK is not: set both (torchrun "
                         f"does), or give --shard I/N")  # fmt: skip
    try:
        rank = int(rank_text)
    except ValueError:
        rank = -1
    if not 0 <= rank < world:
        raise ShardError(f"the environment variable RANK is this process's index, 0 to {world - 1} "
                         f"with WORLD_SIZE={world_text}, got RANK={rank_text!r}")  # fmt: skip
    return (rank, world) if world > 1 else None
