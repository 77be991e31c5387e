r"""Any classifier ``nn.Module`` as a model adapter: what ``dcsm.explain(model, ...)`` builds.

A plain module is run **as it is** when its head pools globally before a linear classifier
(ResNet, DenseNet, EfficientNet, MobileNet, RegNet, ConvNeXt, most timm models): it returns
``(N, C)`` logits, which dcsm reads as a ``1 x 1`` score map. No conversion is needed there. With
global average pooling the image score is :math:`S_c = \frac{1}{hw}\sum_{x,y} S_c(x, y)`, the
pooled score's derivative at any layer is the paper's score-map derivative (the seed
:math:`S(:,:,c) = 1` of Eq. 1) times the constant :math:`1/(hw)`, and that constant is the same
for every class and layer at one scale, so Eq. 2's contrast only scales by it and the
normalisation :math:`\tanh(\alpha M / \max M)` of Eq. 3 removes it: the maps are identical
(``tests/pipeline/adapters/test_module.py`` checks a plain ResNet-18 against its fully
convolutional form).
Global max pooling is not linear, so a max-pooled head is only equivalent where one location
wins; vision transformers have no score map at all and are explained through their class token's
score.

Heads that flatten a fixed-size feature map (torchvision's VGG and AlexNet: ``fc6`` sees a 7 x 7
window) cannot run on other sizes as the paper does, so those two are converted to their fully
convolutional form (:mod:`dcsm.pipeline.adapters.torchvision_models`), which returns the original
logits at 224 x 224. A module whose forward only accepts one input size is declared with
``input_size``: every image is then resized to it, at one scale.

Defaults: torchvision's ImageNet normalisation (in [0, 1] units: mean 0.485, 0.456, 0.406, std
0.229, 0.224, 0.225) for images given as files, arrays or PIL images (a tensor is taken as
preprocessed); ImageNet class names for 1000 outputs, ``class_0``... otherwise; softmax scores.
Layers: torchvision's families get their default sets; any other module needs ``layers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from dcsm.errors import DcsmError, first_line
from dcsm.pipeline.adapters.base import (
    IMAGENET_TORCHVISION,
    LayerRef,
    ModelAdapter,
    Preprocessing,
)
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.adapters.torchvision_models import fully_convolutional
from dcsm.pipeline.layouts import LayoutSpec
from dcsm.pipeline.state import inference_state

_TORCHVISION_FAMILIES = (
    ("VGG", "vgg"), ("AlexNet", "alexnet"), ("SqueezeNet", "squeezenet"), ("ResNet", "resnet"),
    ("RegNet", "regnet"), ("DenseNet", "densenet"), ("EfficientNet", "efficientnet"),
    ("MobileNetV2", "mobilenet_v2"), ("MNASNet", "mnasnet"),
)
_FLATTEN_HEADS = ("vgg", "alexnet")


def torchvision_family(model: nn.Module) -> str | None:
    """The torchvision family name of ``model`` (``vgg``, ``resnet``, ...), or None."""
    if not type(model).__module__.startswith("torchvision.models"):
        return None
    for cls, family in _TORCHVISION_FAMILIES:
        if type(model).__name__ == cls:
            return family
    return None


def _probe_classes(model: nn.Module, size: tuple[int, int]) -> int:
    """The number of classes, from one forward pass on a blank input of ``size``."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad(), inference_state(model):
            out = model(torch.zeros((1, 3, *size), device=device))
    except Exception as exc:  # noqa: BLE001 - a user's module fails in its own ways
        raise DcsmError(f"{type(model).__name__} does not run on a 1x3x{size[0]}x{size[1]} "
                        f"input ({first_line(exc)}); give input_size=(H, W) if it takes one size "
                        "only") from exc
    if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DcsmError(f"{type(model).__name__} returns {got}; dcsm needs a classifier "
                        "returning (N, classes) logits or an (N, classes, h, w) score map")
    return int(out.shape[1])


def module_adapter(
    model: nn.Module,
    layers: Sequence[LayerRef] | None = None,
    class_names: Sequence[str] | None = None,
    preprocess: Preprocessing | None = None,
    multilabel: bool = False,
    input_size: tuple[int, int] | None = None,
    layouts: Mapping[str, LayoutSpec] | LayoutSpec | None = None,
    gradcam_layer: LayerRef | None = None,
) -> ModelAdapter:
    """A :class:`ModelAdapter` around a user's classifier module (see the module docstring).

    Args:
        model: returns ``(N, C)`` logits (or an ``(N, C, h, w)`` score map) for ``(N, 3, H, W)``.
        layers: default layers, as names, dotted paths or modules (torchvision families have
            defaults; other modules need them).
        class_names: one per output (default: ImageNet names for 1000 outputs).
        preprocess: pixel normalisation (default torchvision's ImageNet one).
        multilabel: sigmoid scores instead of softmax.
        input_size: ``(H, W)`` if the module takes only that size.
        layouts: a layout for every layer (``"tokens:1"``, ``"nhwc"``, a function), or a dict
            of layer name to layout (:mod:`dcsm.pipeline.layouts`).
        gradcam_layer: Grad-CAM's default layer (default: the last default layer).
    """
    if isinstance(model, ModelAdapter) or not isinstance(model, nn.Module):
        raise DcsmError(f"expected a torch.nn.Module, got {type(model).__name__}")
    family = torchvision_family(model)
    name = f"module:{type(model).__name__}"
    net: nn.Module = model
    aliases: dict[str, str] = {}
    defaults: list[LayerRef] = []
    min_input = 32
    gradcam: LayerRef | None = None
    if family is not None:
        fcn, aliases, default_names, gradcam, min_input = fully_convolutional(family, model)
        if family in _FLATTEN_HEADS:
            net = fcn
        else:  # run the module as is; the aliases were written for the converted wrapper
            aliases = {k: v.removeprefix("net.") for k, v in aliases.items()}
        defaults = list(default_names)
    if input_size is not None:
        input_size = (int(input_size[0]), int(input_size[1]))
    probe = input_size or (max(224, min_input), max(224, min_input))
    num_classes = _probe_classes(net, probe)
    if class_names is None:
        names = list(imagenet_class_names()) if num_classes == 1000 else [
            f"class_{i}" for i in range(num_classes)]
    else:
        names = [str(n) for n in class_names]
        if len(names) != num_classes:
            raise DcsmError(f"{len(names)} class names given for a model with {num_classes} "
                            "outputs")
    if layers is not None:
        defaults = list(layers)
    layer_layouts = dict(layouts) if isinstance(layouts, Mapping) else {}
    default_layout = "auto" if layouts is None or isinstance(layouts, Mapping) else layouts
    adapter = ModelAdapter(
        name=name,
        model=net,
        class_names=names,
        preprocess=preprocess or IMAGENET_TORCHVISION,
        default_layers=[],
        layer_aliases=aliases,
        multilabel=bool(multilabel),
        pooling="mean",
        min_input=min_input,
        gradcam_layer=None,
        description=f"a user's {type(model).__name__}",
        input_size=input_size,
        layer_layouts=layer_layouts,
        default_layout=default_layout,
    )
    adapter.default_layers = [adapter.layer_name(layer) for layer in defaults]
    if adapter.default_layers:
        adapter.resolve_layers(adapter.default_layers)  # unknown names fail here
    chosen = gradcam_layer if gradcam_layer is not None else gradcam
    if chosen is not None:
        adapter.gradcam_layer = adapter.layer_name(chosen)
        adapter.resolve_layers([adapter.gradcam_layer])
    elif adapter.default_layers:
        adapter.gradcam_layer = adapter.default_layers[-1]
    return adapter
