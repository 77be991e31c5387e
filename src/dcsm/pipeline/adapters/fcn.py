"""The architectures of ``dcsm train``'s models: fully convolutional classifiers.

They live with the adapters because a trained model (``checkpoint:PATH``,
:mod:`dcsm.pipeline.adapters.trained`) is rebuilt from them; :mod:`dcsm.training` trains them.

Both are a ``features`` stack and a convolutional ``head`` (fc6, fc7, fc8 as convolutions),
so for any input they return a class score map ``(N, C, h, w)``; training takes its global
maximum (Oquab et al. 2015), explaining back-propagates the whole map.

* ``vgg16``: torchvision's VGG-16 (the paper's network). ``features`` is torchvision's;
  fc6/fc7 become 7x7 and 1x1 convolutions carrying the ImageNet weights; fc8 is a new 1x1
  convolution with one output per class. Layers ``conv1_1`` ... ``conv5_3``, ``relu*``,
  ``pool*``, ``fc6``..``fc8``; default layers ``conv3_1`` ... ``conv5_3``; inputs of at least 224
  pixels a side; torchvision's ImageNet preprocessing.
* ``small_vgg``: a compact VGG-style network for the synthetic set, trained from scratch:
  five blocks of 3x3 convolutions (1, 1, 2, 2, 2 of them; 16, 32, 48, 64, 96 channels), each
  followed by batch normalisation and ReLU, with a 2x2 max pool after every block (stride 32);
  fc6 a 3x3 convolution to 256 channels, fc7 1x1 to 256, fc8 1x1 to the classes, with dropout
  0.3 before fc7 and fc8. Layer names as VGG's: ``conv3_1`` is the output of the third block's
  first convolution after its batch normalisation (what a convolution folded with its batch norm
  would give), before the ReLU. Default layers ``conv3_1`` ... ``conv5_2`` (stride 4 to 16, the
  analogue of VGG-16's conv3_1..conv5_3); inputs of at least 32 pixels; pixels scaled as
  ``(x - 127.5) / 64``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import IMAGENET_TORCHVISION, Preprocessing
from dcsm.pipeline.adapters.torchvision_models import (
    build_torchvision,
    convolutionalize,
    sequential,
    vgg_aliases,
)

#: The convolutional head's fc6, fc7 and fc8 (conv, ReLU, dropout, conv, ReLU, dropout, conv).
HEAD_ALIASES = {"fc6": "head.0", "fc7": "head.3", "fc8": "head.6"}

SMALL_PREPROCESSING = Preprocessing(mean=(127.5, 127.5, 127.5), std=(64.0, 64.0, 64.0))
SMALL_DEFAULTS: dict[str, object] = {
    "widths": [16, 32, 48, 64, 96], "convs": [1, 1, 2, 2, 2], "fc": 256, "dropout": 0.3,
}
BACKBONES: tuple[str, ...] = ("small_vgg", "vgg16")


class FCNClassifier(nn.Module):
    """``head(features(x))``: a class score map for any input size."""

    def __init__(self, features: nn.Sequential, head: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w)."""
        scores: torch.Tensor = self.head(self.features(x))
        return scores


@dataclass
class Backbone:
    """A built network and what the explainer and the trainer need to know about it.

    ``pretrained`` lists the parameter names that came with pretrained weights (trained with the
    lower learning rate); the others are new.
    """

    arch: str
    config: dict[str, object]
    model: FCNClassifier
    preprocess: Preprocessing
    layer_aliases: dict[str, str]
    default_layers: list[str]
    gradcam_layer: str
    min_input: int
    pretrained: set[str] = field(default_factory=set)


def _head(channels: int, kernel: int, fc: int, classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(channels, fc, kernel, padding=kernel // 2), nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True), nn.Dropout(dropout),
        nn.Conv2d(fc, classes, 1),
    )


def _config_ints(cfg: Mapping[str, object], key: str) -> list[int]:
    value = cfg[key]
    if not isinstance(value, list | tuple):
        raise DcsmError(f"small_vgg's {key} must be a list of integers, got {value!r}")
    return [int(v) for v in value]


def _config_number(cfg: Mapping[str, object], key: str) -> int | float | str:
    value = cfg[key]
    if not isinstance(value, int | float | str):
        raise DcsmError(f"small_vgg's {key} must be a number, got {value!r}")
    return value


def small_vgg(num_classes: int, config: Mapping[str, object] | None = None) -> Backbone:
    """The compact VGG-style network (see the module docstring), freshly initialised."""
    cfg = {**SMALL_DEFAULTS, **(config or {})}
    widths = _config_ints(cfg, "widths")
    convs = _config_ints(cfg, "convs")
    if len(widths) != len(convs) or not widths:
        raise DcsmError("small_vgg needs as many widths as blocks")
    layers: list[nn.Module] = []
    channels = 3
    for width, n in zip(widths, convs, strict=True):
        for _ in range(n):
            layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2, ceil_mode=True))
    features = nn.Sequential(*layers)
    head = _head(channels, 3, int(_config_number(cfg, "fc")), num_classes,
                 float(_config_number(cfg, "dropout")))
    model = FCNClassifier(features, head)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    last = head[-1]
    if isinstance(last, nn.Conv2d):  # fc8 (see _head)
        nn.init.normal_(last.weight, 0, 0.01)
    aliases = vgg_aliases(features, "features") | HEAD_ALIASES
    blocks = len(widths)
    defaults = [n for n in aliases if n.startswith("conv")
                and int(n[4:].split("_")[0]) >= max(1, blocks - 2)]
    last_relu = [n for n in aliases if n.startswith("relu")][-1]
    return Backbone("small_vgg", {k: cfg[k] for k in SMALL_DEFAULTS}, model, SMALL_PREPROCESSING,
                    aliases, defaults, last_relu, 32)


def vgg16(num_classes: int, weights: str | Path | None = None) -> Backbone:
    """torchvision's VGG-16 made fully convolutional with a new fc8 (see the module docstring).

    ``weights``: a local ImageNet state dict for torchvision's ``vgg16``, a torchvision weight
    name (``DEFAULT``, ``IMAGENET1K_V1``: downloads), or None/``random`` for random weights.
    """
    net, _ = build_torchvision("vgg16", "random" if weights is None else weights)
    pretrained = weights not in (None, "random")
    classifier = sequential(net, "classifier")
    features = sequential(net, "features")
    head6_7 = convolutionalize(classifier[:-1], 512, 7)  # fc6 7x7, ReLU, -, fc7 1x1, ReLU, -
    layers = list(head6_7)
    layers[2] = nn.Dropout(0.5)
    layers[5] = nn.Dropout(0.5)
    fc8 = nn.Conv2d(4096, num_classes, 1)
    nn.init.normal_(fc8.weight, 0, 0.01)
    if fc8.bias is not None:  # built with a bias
        nn.init.zeros_(fc8.bias)
    head = nn.Sequential(*layers, fc8)
    model = FCNClassifier(features, head)
    aliases = vgg_aliases(features, "features") | HEAD_ALIASES
    defaults = [n for n in aliases if n[:5] in {"conv3", "conv4", "conv5"}]
    names = {n for n, _ in model.named_parameters() if not n.startswith("head.6")}
    return Backbone("vgg16", {}, model, IMAGENET_TORCHVISION, aliases, defaults, "relu5_3", 224,
                    names if pretrained else set())


def build_backbone(arch: str, num_classes: int, weights: str | Path | None = None,
                   config: Mapping[str, object] | None = None) -> Backbone:
    """A backbone by name (``small_vgg`` or ``vgg16``)."""
    if num_classes < 1:
        raise DcsmError("a classifier needs at least one class")
    if arch == "small_vgg":
        if weights not in (None, "random"):
            raise DcsmError("small_vgg trains from scratch; --weights applies to vgg16")
        return small_vgg(num_classes, config)
    if arch == "vgg16":
        return vgg16(num_classes, weights)
    raise DcsmError(f"unknown backbone '{arch}'; known: {', '.join(BACKBONES)}")
