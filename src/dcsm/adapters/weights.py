"""Reading weight files from disk with clear errors, and a digest of a model's weights."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from dcsm.errors import DcsmError, first_line


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (plain, or under ``state_dict``/``model``)."""
    path = Path(path)
    if not path.is_file():
        raise DcsmError(f"weights file '{path}' does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on junk in many ways
        raise DcsmError(f"cannot read weights file '{path}': {first_line(exc)}") from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DcsmError(f"weights file '{path}' does not hold a state dict of tensors")
    return dict(obj)


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line DcsmError when they do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                f"vs {tuple(own[k].shape)})"
            )
        raise DcsmError(f"weights from {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's state: names, dtypes, shapes and values; what
    resumable runs (``dcsm batch``, ``dcsm evaluate``) fingerprint the model by."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
