"""Any torchvision classifier by name (``torchvision:vgg16``, ``torchvision:resnet50``, ...).

Weights come from a local file (a ``state_dict`` for torchvision's architecture), from one of
torchvision's own weight names such as ``DEFAULT`` or ``IMAGENET1K_V1`` (downloaded by torchvision,
so only with a network), or ``random`` for an untrained network (benchmarks, tests).

Fully convolutional forms (checked to reproduce the original logits at 224 x 224 for VGG-16,
AlexNet, ResNet-18, RegNetY-400MF, DenseNet-121, EfficientNet-B0, MobileNetV2 and MNASNet 0.5,
``tests/pipeline/adapters/test_adapters.py``):

* VGG and AlexNet: the fully connected ``fc6``/``fc7``/``fc8`` become convolutions carrying the same
  weights (7x7 resp. 6x6, then 1x1 and 1x1), as in Long et al. 2015; the adaptive pool before them
  is the identity at the training size and is dropped. Inputs need at least 224 pixels a side.
* ResNet, ResNeXt, Wide ResNet, RegNet, DenseNet, EfficientNet, MobileNetV2, MNASNet: the linear
  classifier is applied at every position before the global average pool.
* SqueezeNet: already fully convolutional.

Layer names: VGG's layers are addressable by the paper's names ``conv1_1`` ... ``conv5_3`` (the
convolution outputs, before their ReLU), ``relu1_1`` ... ``relu5_3``, ``pool1`` ... ``pool5`` and
``fc6``/``fc7``/``fc8``. The authors' code takes its derivatives at the *inputs* of conv3_1 ...
conv5_3 instead (``pool2``, ``relu3_1``, ``relu3_2``, ``pool3``, ...; see
:mod:`dcsm.pipeline.presets`),
which the ``released`` preset uses. AlexNet's are ``conv1`` ... ``conv5``. Every other model's
layers are its module paths (``layer3.0``, ``features.6``). Default layer sets, the analogues of
the paper's conv3_1..conv5_3:

* VGG: ``conv3_1`` ... ``conv5_3`` (9 layers), the paper's set.
* AlexNet: ``conv3`` ... ``conv5``.
* ResNet family: every residual block of ``layer3`` and ``layer4`` (9 for ResNet-50).
* RegNet: every block of ``trunk_output.block3`` and ``trunk_output.block4``.
* DenseNet: ``features.transition2``, ``features.denseblock3``, ``features.transition3``,
  ``features.denseblock4``.
* EfficientNet, MobileNetV2, MNASNet: the last nine (or all but the first two) feature stages.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import IMAGENET_TORCHVISION, ModelAdapter
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.adapters.squeezenet import SqueezeNetFCN
from dcsm.pipeline.adapters.weights import load_into, load_state_dict


# --------------------------------------------------------------------------- heads
def linear_to_conv(linear: nn.Linear, in_channels: int, kernel: int) -> nn.Conv2d:
    """A convolution computing ``linear`` at every position of a ``C x k x k`` window."""
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, bias=linear.bias is not None)
    with torch.no_grad():
        conv.weight.copy_(linear.weight.view(linear.out_features, in_channels, kernel, kernel))
        if linear.bias is not None and conv.bias is not None:
            conv.bias.copy_(linear.bias)
    return conv


def convolutionalize(classifier: nn.Sequential, in_channels: int, kernel: int) -> nn.Sequential:
    """A Dropout/Linear/ReLU classifier as convolutions: first Linear k x k, the others 1x1."""
    layers: list[nn.Module] = []
    channels, k = in_channels, kernel
    for module in classifier:
        if isinstance(module, nn.Linear):
            layers.append(linear_to_conv(module, channels, k))
            channels, k = module.out_features, 1
        elif isinstance(module, nn.ReLU):
            layers.append(nn.ReLU(inplace=False))
        elif isinstance(module, nn.Dropout):
            layers.append(nn.Identity())
        else:
            raise DcsmError(f"cannot convert classifier layer {type(module).__name__}")
    return nn.Sequential(*layers)


class FeaturesConvHeadFCN(nn.Module):
    """``features`` followed by a convolutionalized classifier (VGG, AlexNet)."""

    def __init__(self, net: nn.Module, head: nn.Sequential) -> None:
        super().__init__()
        self.net = net
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w)."""
        scores: torch.Tensor = self.head(self.net.get_submodule("features")(x))
        return scores


class PooledLinearFCN(nn.Module):
    """A trunk, an optional pointwise step, then the linear classifier at every position.

    ``trunk`` lists the child names run in order; ``pre_head`` is applied to the feature map
    (DenseNet's final ReLU); ``fc`` is the name of the classifier (a Linear, possibly inside a
    Sequential after Dropout).
    """

    def __init__(self, net: nn.Module, trunk: list[str], fc: nn.Linear, relu_first: bool) -> None:
        super().__init__()
        self.net = net
        self.trunk = trunk
        self.fc = fc
        self.relu_first = relu_first

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, classes, h, w)."""
        for name in self.trunk:
            x = getattr(self.net, name)(x)
        if self.relu_first:
            x = F.relu(x)
        return F.conv2d(x, self.fc.weight[:, :, None, None], self.fc.bias)


# --------------------------------------------------------------------------- families
def vgg_aliases(features: nn.Sequential, prefix: str = "net.features") -> dict[str, str]:
    """VGG-style names for a ``features`` stack: ``conv{b}_{i}`` (the convolution's output, or
    its batch norm's when there is one), ``relu{b}_{i}`` and ``pool{b}``."""
    aliases: dict[str, str] = {}
    block, index = 1, 0
    for i, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            index += 1
            aliases[f"conv{block}_{index}"] = f"{prefix}.{i}"
        elif isinstance(module, nn.BatchNorm2d):
            aliases[f"conv{block}_{index}"] = f"{prefix}.{i}"
        elif isinstance(module, nn.ReLU):
            aliases[f"relu{block}_{index}"] = f"{prefix}.{i}"
        elif isinstance(module, nn.MaxPool2d):
            aliases[f"pool{block}"] = f"{prefix}.{i}"
            block, index = block + 1, 0
    return aliases


def sequential(net: nn.Module, name: str) -> nn.Sequential:
    """``net``'s submodule ``name`` (a dotted path), which must be an :class:`nn.Sequential`."""
    module = net.get_submodule(name)
    if not isinstance(module, nn.Sequential):
        raise DcsmError(f"{type(net).__name__}.{name} is a {type(module).__name__}, not the "
                        "nn.Sequential of torchvision's model")
    return module


def _last_linear(classifier: nn.Module) -> nn.Linear:
    if isinstance(classifier, nn.Linear):
        return classifier
    if isinstance(classifier, nn.Sequential) and all(
        isinstance(m, nn.Linear | nn.Dropout) for m in classifier
    ):
        linears = [m for m in classifier if isinstance(m, nn.Linear)]
        if len(linears) == 1:
            return linears[0]
    raise DcsmError(f"classifier {type(classifier).__name__} is not a single linear layer")


def fully_convolutional(arch: str, net: nn.Module) -> tuple[nn.Module, dict[str, str], list[str], str, int]:  # noqa: E501
    """(fcn, aliases, default layers, Grad-CAM layer, min input) for a torchvision model."""
    if arch.startswith("vgg"):
        head = convolutionalize(sequential(net, "classifier"), 512, 7)
        aliases = vgg_aliases(sequential(net, "features"))
        aliases |= {"fc6": "head.0", "fc7": "head.3", "fc8": "head.6"}
        defaults = [n for n in aliases if n[:5] in {"conv3", "conv4", "conv5"}]
        last_relu = [n for n in aliases if n.startswith("relu5_")][-1]
        return FeaturesConvHeadFCN(net, head), aliases, defaults, last_relu, 224
    if arch == "alexnet":
        head = convolutionalize(sequential(net, "classifier"), 256, 6)
        convs = [i for i, m in enumerate(sequential(net, "features")) if isinstance(m, nn.Conv2d)]
        aliases = {f"conv{k + 1}": f"net.features.{i}" for k, i in enumerate(convs)}
        aliases |= {f"relu{k + 1}": f"net.features.{i + 1}" for k, i in enumerate(convs)}
        return FeaturesConvHeadFCN(net, head), aliases, ["conv3", "conv4", "conv5"], "relu5", 224
    if arch.startswith("squeezenet"):
        aliases = {f"fire{k + 2}": f"net.features.{i}" for k, i in enumerate(
            i for i, m in enumerate(sequential(net, "features")) if type(m).__name__ == "Fire")}
        defaults = list(aliases)[1:]
        return SqueezeNetFCN(net), aliases, defaults, list(aliases)[-1], 64
    children = [name for name, _ in net.named_children()]
    if arch.startswith(("resnet", "resnext", "wide_resnet")):
        trunk = [c for c in children if c not in ("avgpool", "fc")]
        defaults = [f"layer{s}.{b}" for s in (3, 4) for b in range(len(getattr(net, f"layer{s}")))]
        fc = _last_linear(net.get_submodule("fc"))
        return PooledLinearFCN(net, trunk, fc, False), {}, defaults, defaults[-1], 32
    if arch.startswith("regnet"):
        trunk = [c for c in children if c not in ("avgpool", "fc")]
        defaults = [
            f"trunk_output.block{s}.{name}"
            for s in (3, 4)
            for name, _ in getattr(net.trunk_output, f"block{s}").named_children()
        ]
        fc = _last_linear(net.get_submodule("fc"))
        return PooledLinearFCN(net, trunk, fc, False), {}, defaults, "trunk_output", 32
    if arch.startswith("densenet"):
        defaults = [f"features.{n}" for n in
                    ("transition2", "denseblock3", "transition3", "denseblock4")]
        classifier = _last_linear(net.get_submodule("classifier"))
        fcn = PooledLinearFCN(net, ["features"], classifier, True)
        return fcn, {}, defaults, "features.norm5", 32
    if arch.startswith(("efficientnet", "mobilenet_v2", "mnasnet")):
        body = "layers" if arch.startswith("mnasnet") else "features"
        n = len(getattr(net, body))
        defaults = [f"{body}.{i}" for i in range(max(2, n - 9), n)]
        fcn = PooledLinearFCN(net, [body], _last_linear(net.get_submodule("classifier")), False)
        return fcn, {}, defaults, f"{body}.{n - 1}", 32
    raise DcsmError(
        f"torchvision model '{arch}' is not supported: dcsm runs VGG, AlexNet, SqueezeNet, ResNet, "
        "ResNeXt, Wide ResNet, RegNet, DenseNet, EfficientNet, MobileNetV2 and MNASNet fully "
        "convolutionally"
    )


def _final_linear_key(net: nn.Module) -> str:
    name = [n for n, m in net.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)][-1]
    return f"{name}.weight"


def build_torchvision(arch: str, weights: str | Path | None) -> tuple[nn.Module, list[str]]:
    """The plain torchvision classifier and its class names."""
    import torchvision.models as tvm  # on demand: `import dcsm` does not load torchvision

    if arch not in tvm.list_models(module=tvm):
        raise DcsmError(f"unknown torchvision classifier '{arch}'")
    if weights is None:
        raise DcsmError(
            f"torchvision:{arch} needs --weights: a local state-dict file, a torchvision weight "
            "name such as DEFAULT (downloads, needs a network), or 'random'"
        )
    weights = str(weights)
    if weights == "random":
        net = tvm.get_model(arch, weights=None)
        return net.eval(), _names(net)
    if Path(weights).exists() or any(sep in weights for sep in ("/", "\\", ".pt")):
        state = load_state_dict(weights)
        net = tvm.get_model(arch, weights=None)
        key = _final_linear_key(net)
        if key in state and state[key].shape[0] != net.state_dict()[key].shape[0]:
            net = tvm.get_model(arch, weights=None, num_classes=int(state[key].shape[0]))
        load_into(net, state, weights)
        return net.eval(), _names(net)
    try:
        enum = tvm.get_model_weights(arch)
        w = enum["DEFAULT" if weights.upper() == "DEFAULT" else weights.split(".")[-1]]
    except (KeyError, ValueError) as exc:
        raise DcsmError(f"unknown weights '{weights}' for torchvision:{arch}") from exc
    try:
        net = tvm.get_model(arch, weights=w)
    except Exception as exc:  # noqa: BLE001 - download failures come in many types
        raise DcsmError(f"could not get torchvision weights {w} (offline?): {exc}") from exc
    return net.eval(), list(w.meta.get("categories") or _names(net))


def _names(net: nn.Module) -> list[str]:
    key = _final_linear_key(net)
    n = int(net.state_dict()[key].shape[0])
    return list(imagenet_class_names()) if n == 1000 else [f"class_{i}" for i in range(n)]


def torchvision_adapter(arch: str, weights: str | Path | None = None,
                        multilabel: bool = False) -> ModelAdapter:
    """Adapter for ``torchvision:<arch>``."""
    net, names = build_torchvision(arch, weights)
    fcn, aliases, defaults, gradcam, min_input = fully_convolutional(arch, net)
    return ModelAdapter(
        name=f"torchvision:{arch}",
        model=fcn.eval(),
        class_names=names,
        preprocess=IMAGENET_TORCHVISION,
        default_layers=defaults,
        layer_aliases=aliases,
        multilabel=multilabel,
        pooling="mean",
        min_input=min_input,
        gradcam_layer=gradcam,
        description=f"torchvision {arch} (weights: {weights})",
    )
