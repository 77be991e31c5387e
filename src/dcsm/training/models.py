"""The backbones ``dcsm train`` fine-tunes or trains, and their optimiser groups.

The architectures themselves (``vgg16``, ``small_vgg``) are defined in
:mod:`dcsm.pipeline.adapters.fcn`,
next to the adapter that explains a trained checkpoint; they are re-exported here.
"""

from __future__ import annotations

from torch import nn

from dcsm.pipeline.adapters.fcn import (
    BACKBONES,
    HEAD_ALIASES,
    SMALL_DEFAULTS,
    SMALL_PREPROCESSING,
    Backbone,
    FCNClassifier,
    build_backbone,
    small_vgg,
    vgg16,
)

__all__ = [
    "BACKBONES",
    "HEAD_ALIASES",
    "SMALL_DEFAULTS",
    "SMALL_PREPROCESSING",
    "Backbone",
    "FCNClassifier",
    "build_backbone",
    "parameter_groups",
    "small_vgg",
    "vgg16",
]


def parameter_groups(backbone: Backbone, lr: float, pretrained_factor: float,
                     weight_decay: float) -> list[dict[str, object]]:
    """Optimiser groups: new layers at ``lr``, pretrained ones at ``lr * pretrained_factor``;
    no weight decay on biases and batch-norm parameters."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in backbone.model.named_parameters():
        key = (name in backbone.pretrained, p.ndim <= 1)
        groups.setdefault(key, []).append(p)
    out = []
    for (pre, flat), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (pretrained_factor if pre else 1.0),
                    "weight_decay": 0.0 if flat else weight_decay,
                    "name": ("pretrained" if pre else "new") + ("_bias" if flat else "")})
    return out

