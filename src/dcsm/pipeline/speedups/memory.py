"""The memory probe of full-resolution runs: the bytes free on a device, and the bytes
autograd saves for a backward (measured while a forward runs).

:meth:`dcsm.pipeline.base.Explainer.estimate_memory` measures with :func:`count_saved` and
compares with :func:`available_memory` before a run at full resolution (``max_side=None``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a computation on ``device`` (None where it cannot be told)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu" and os.path.exists("/proc/meminfo"):
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    return None


@contextlib.contextmanager
def count_saved() -> Iterator[list[int]]:
    """Sum the bytes autograd saves for the backward during the block."""
    total = [0]

    def pack(t: torch.Tensor) -> torch.Tensor:
        total[0] += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield total


__all__ = ["available_memory", "count_saved"]
