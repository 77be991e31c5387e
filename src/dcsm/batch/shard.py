"""Ranks, shards and devices: how one batch run is split over processes and GPUs.

``torchrun --nproc-per-node N -m dcsm batch ...`` starts N processes and gives each the
environment variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (and, across nodes, the same
through its rendezvous). Each rank takes every ``WORLD_SIZE``-th input of the sorted list,
starting at its ``RANK`` (:func:`shard`), so the shards are disjoint, cover the list and do not
depend on timing; each writes only its own outputs and its own manifest file. Without those
variables (or with ``--rank``/``--world-size``, for job arrays) the same split applies.

``torch.distributed`` is used only at the end, to wait for every rank and add up the counts
(:class:`Group`); it is initialised (gloo, which needs no GPU) only when torchrun's rendezvous
variables are there, and a run works the same without it.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch

from dcsm.errors import DcsmError

T = TypeVar("T")

#: How long the final barrier waits for the slowest rank.
BARRIER_TIMEOUT = datetime.timedelta(days=2)


@dataclass(frozen=True)
class Rank:
    """This process's place in the run: ``rank`` of ``world_size``, ``local_rank`` on its node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.world_size < 1:
            raise DcsmError(f"the world size must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise DcsmError(f"rank {self.rank} is outside 0..{self.world_size - 1}")
        if self.local_rank < 0:
            raise DcsmError(f"the local rank must be >= 0, got {self.local_rank}")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise DcsmError(f"environment variable {name}={value!r} is not an integer") from None


def from_env(rank: int | None = None, world_size: int | None = None) -> Rank:
    """The rank from the arguments, else torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``."""
    env_rank, env_world = _env_int("RANK"), _env_int("WORLD_SIZE")
    world = world_size if world_size is not None else (env_world or 1)
    r = rank if rank is not None else (env_rank or 0)
    local = _env_int("LOCAL_RANK")
    return Rank(r, world, local if local is not None else 0)


def shard(items: Sequence[T], rank: Rank) -> list[T]:
    """This rank's share of the sorted ``items``: every ``world_size``-th from ``rank``."""
    return list(items[rank.rank::rank.world_size])


def pick_device(requested: str | None, rank: Rank) -> str:
    """``auto``/None: ``cuda:<local rank>`` when CUDA is there, else ``cpu``; a bare ``cuda``
    becomes this rank's GPU; anything else is kept."""
    if requested in (None, "auto"):
        if torch.cuda.is_available():
            return f"cuda:{rank.local_rank % torch.cuda.device_count()}"
        return "cpu"
    if requested == "cuda" and torch.cuda.is_available():
        return f"cuda:{rank.local_rank % torch.cuda.device_count()}"
    return requested


class Group:
    """The optional process group: final barrier and sums over ranks, or no-ops without it."""

    def __init__(self, rank: Rank, enable: bool = True) -> None:
        self.rank = rank
        self.owned = False
        if not enable or rank.world_size == 1 or not torch.distributed.is_available():
            return
        dist = torch.distributed
        if dist.is_initialized():
            return
        if not (os.environ.get("MASTER_ADDR") and os.environ.get("MASTER_PORT")):
            return
        dist.init_process_group("gloo", rank=rank.rank, world_size=rank.world_size,
                                timeout=BARRIER_TIMEOUT)
        self.owned = True

    @property
    def active(self) -> bool:
        """Whether ranks can talk to each other."""
        dist = torch.distributed
        return (self.rank.world_size > 1 and dist.is_available() and dist.is_initialized())

    def sum(self, values: Sequence[int]) -> list[int]:
        """Element-wise sums over ranks (after every rank got here); ``values`` alone without
        a group."""
        if not self.active:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.int64)
        torch.distributed.all_reduce(t)
        return [int(v) for v in t.tolist()]

    def barrier(self) -> None:
        """Wait for every rank (no-op without a group)."""
        if self.active:
            torch.distributed.barrier()

    def close(self) -> None:
        """Destroy the group if this object created it."""
        if self.owned and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        self.owned = False
