"""Reading files written by ``torch.save`` without letting them run code: shared by the weight
loaders (:mod:`dcsm.pipeline.adapters.weights`) and the checkpoints
(:mod:`dcsm.pipeline.adapters.checkpoint`)."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from dcsm.errors import first_line

__all__ = ["torch_load", "torch_load_reason"]


def torch_load(path: Path) -> Any:  # noqa: ANN401 - whatever the file holds
    """``torch.load(path, weights_only=True)`` on the CPU: tensors, numbers, strings and plain
    containers only, nothing in the file can run code. torch's warning about a pickle protocol
    other than its own is not shown (the load succeeds or fails all the same).

    Raises:
        Exception: whatever ``torch.load`` raises; :func:`torch_load_reason` words it.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol",
                                category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def torch_load_reason(exc: BaseException) -> str:
    """One line saying why :func:`torch_load` failed (torch's long advice to load the file
    with ``weights_only=False``, which would let it run code, left out)."""
    if isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in str(exc):
        return "it holds objects other than tensors and plain containers, which are not loaded"
    return first_line(exc)
