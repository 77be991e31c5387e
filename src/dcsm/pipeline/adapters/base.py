"""What dcsm needs to know about a classifier: the model adapter.

An adapter wraps a classifier so that it runs *fully convolutionally*: for an input of any
size it returns a class score map of shape ``(N, C, h, w)`` (the paper's ``h x w x C``), where a
standard classifier would return ``(N, C)`` at its training size. The image-level score is the
pooling of that map (``mean`` for average-pooled heads, ``max`` for the global max pooling of
Oquab et al. 2015 that the paper trains with).

The adapter also knows the preprocessing, the class names, the layers the method reads
derivatives at (with readable aliases such as VGG-16's ``conv3_1``), and whether the classifier is
multi-label (sigmoid) or single-label (softmax).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeAlias

import numpy as np
import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.layouts import LayoutSpec, check_layout

Pooling = Literal["mean", "max"]
LayerRef: TypeAlias = str | nn.Module
"""A layer: an alias, a dotted module path, or the module object itself."""


@dataclass(frozen=True)
class Preprocessing:
    """How an RGB uint8 image becomes the model's input tensor.

    ``x = (pixel - mean) / std`` per channel, with pixels in 0..255 and ``mean``/``std`` given in
    that range and in the model's channel order (``"RGB"`` or ``"BGR"``).
    """

    mean: tuple[float, float, float]
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    channel_order: Literal["RGB", "BGR"] = "RGB"

    def __call__(self, image: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Turn (H, W, 3) uint8 RGB (array or tensor) into a (1, 3, H, W) float32 tensor."""
        x = torch.as_tensor(np.array(image, copy=True)).to(torch.float32)
        if x.ndim != 3 or x.shape[2] != 3:
            raise DcsmError(f"expected an (H, W, 3) RGB image, got shape {tuple(x.shape)}")
        x = x.permute(2, 0, 1)
        if self.channel_order == "BGR":
            x = x.flip(0)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(3, 1, 1)
        return ((x - mean) / std).unsqueeze(0)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly description."""
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order}


    @classmethod
    def from_unit(cls, mean: Sequence[float], std: Sequence[float],
                  channel_order: Literal["RGB", "BGR"] = "RGB") -> Preprocessing:
        """Normalisation given in [0, 1] pixel units, as torchvision and timm state it."""
        if len(mean) != 3 or len(std) != 3:
            raise DcsmError("mean and std need three values, one per colour channel")
        if any(not np.isfinite(v) or v <= 0 for v in std):
            raise DcsmError(f"std must be positive, got {list(std)}")
        return cls(mean=float_triple(float(m) * 255 for m in mean),
                   std=float_triple(float(v) * 255 for v in std), channel_order=channel_order)


def float_triple(values: Iterable[float]) -> tuple[float, float, float]:
    """Three values (one per colour channel) as floats; ValueError for another count."""
    first, second, third = (float(v) for v in values)
    return first, second, third


def unique_class_names(names: Sequence[str]) -> list[str]:
    """Class names made unique: a name shared by several classes gets its index.

    For example ``crane (134)`` and ``crane (517)`` (torchvision's ImageNet categories repeat
    two).
    """
    counts = Counter(names)
    return [f"{n} ({i})" if counts[n] > 1 else str(n) for i, n in enumerate(names)]


IMAGENET_TORCHVISION = Preprocessing(
    mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255)
)


def check_class_key(key: object) -> str | int:
    """A class as named by a user: a name (str) or an index (int, numpy integer).

    A bool, a float (``1.7``), None or anything else is a one-line :class:`DcsmError`, never
    taken as an index.
    """
    if isinstance(key, str):
        return key
    if isinstance(key, int | np.integer) and not isinstance(key, bool | np.bool_):
        return int(key)
    raise DcsmError(f"classes are names (str) or indices (int), got {key!r} of type "
                    f"{type(key).__name__}")


@dataclass
class ModelAdapter:
    """A classifier made ready for class saliency.

    Attributes:
        name: the registry name (``efficientnet_lite0``, ``torchvision:vgg16``, ...).
        model: a module mapping ``(N, 3, H, W)`` preprocessed input to a ``(N, C, h, w)`` score map.
        class_names: one name per output class.
        preprocess: pixels to input tensor.
        default_layers: layer names (aliases or module paths) the method uses by default.
        layer_aliases: readable names mapped to module paths of ``model``.
        multilabel: sigmoid scores (True) or softmax probabilities (False).
        pooling: how the score map becomes the image-level score.
        min_input: the smallest input side the fully convolutional model accepts; smaller
            images are enlarged for the computation and the maps resized back.
        gradcam_layer: the layer Grad-CAM reads by default (the last convolutional features).
        description: one line for ``dcsm models``.
        input_size: ``(H, W)`` for a model that takes one input size only: every image is
            resized to it and the maps back, at one scale. None: any size.
        layer_layouts: per layer (alias or path), how its output becomes an ``(N, C, h, w)``
            grid (:mod:`dcsm.pipeline.layouts`); layers not listed take ``default_layout``.
        default_layout: the layout of the layers not in ``layer_layouts`` (``"auto"``).

    Duplicate class names are made unique on creation (:func:`unique_class_names`).
    """

    name: str
    model: nn.Module
    class_names: list[str]
    preprocess: Preprocessing
    default_layers: list[str]
    layer_aliases: dict[str, str] = field(default_factory=dict)
    multilabel: bool = False
    pooling: Pooling = "mean"
    min_input: int = 32
    gradcam_layer: str | None = None
    description: str = ""
    input_size: tuple[int, int] | None = None
    layer_layouts: dict[str, LayoutSpec] = field(default_factory=dict)
    default_layout: LayoutSpec = "auto"

    def __post_init__(self) -> None:
        """Make the class names unique and check the layouts."""
        self.class_names = unique_class_names(list(self.class_names))
        for name, spec in self.layer_layouts.items():
            self.layer_layouts[name] = check_layout(spec)
        self.default_layout = check_layout(self.default_layout)
        if self.input_size is not None:
            h, w = (int(v) for v in self.input_size)
            if h < 1 or w < 1:
                raise DcsmError(f"input_size must be positive, got {self.input_size}")
            self.input_size = (h, w)

    @property
    def num_classes(self) -> int:
        """Number of classes the model scores."""
        return len(self.class_names)

    @property
    def score_channels(self) -> int:
        """Channels of the model's score map: one per class, in class order (``num_classes``).

        An adapter may carry more after them for its own :meth:`pool` and :meth:`probabilities`
        (:class:`dcsm.pipeline.adapters.groups.GroupedAdapter`: its base model's logits); only
        the first ``num_classes`` are class score maps.
        """
        return self.num_classes

    def to(self, device: torch.device | str) -> ModelAdapter:
        """Move the model to ``device`` (in place) and return self."""
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """The device of the model's first parameter (CPU for a parameter-less model)."""
        for p in self.model.parameters():
            return p.device
        return torch.device("cpu")

    # ----------------------------------------------------------------- layers
    def layer_path(self, name: LayerRef) -> str:
        """The module path of a layer given as alias, module path or module; DcsmError if none."""
        if isinstance(name, nn.Module):
            for path, module in self.model.named_modules():
                if module is name and path:
                    return str(path)
            raise DcsmError(f"layer {type(name).__name__} given as a module is not part of "
                            f"model {self.name}" + (" (its classifier was converted to "
                            "convolutions: name the layer instead)" if self.layer_aliases else ""))
        if not isinstance(name, str):
            raise DcsmError(f"a layer is a name or a module, got {type(name).__name__}")
        if name in self.layer_aliases:
            return self.layer_aliases[name]
        modules = dict(self.model.named_modules())
        for path in (name, f"net.{name}"):
            if path in modules and name != "":
                return path
        known = list(self.layer_aliases) or [n for n in modules if n][:20]
        raise DcsmError(
            f"unknown layer '{name}' for model {self.name}; known layers include: "
            + ", ".join(known[:30])
        )

    def layer_name(self, layer: LayerRef) -> str:
        """The name a layer is reported under: a string as given, a module by its path."""
        return layer if isinstance(layer, str) else self.layer_path(layer)

    def resolve_layers(self, names: Sequence[LayerRef] | None) -> dict[str, nn.Module]:
        """Map each requested layer (name, path or module, mixed) to its module, in order."""
        refs = list(self.default_layers if names is None else names)
        if not refs:
            raise DcsmError("no layers requested")
        modules = dict(self.model.named_modules())
        resolved = {self.layer_name(r): modules[self.layer_path(r)] for r in refs}
        if len(resolved) != len(refs) or len({id(m) for m in resolved.values()}) != len(refs):
            raise DcsmError("a layer is requested twice: "
                            + ", ".join(self.layer_name(r) for r in refs))
        return resolved

    def layer_layout(self, name: str) -> LayoutSpec:
        """The declared layout of a layer (by its reported name or its path), else ``auto``."""
        if name in self.layer_layouts:
            return self.layer_layouts[name]
        path = self.layer_path(name)
        for key, spec in self.layer_layouts.items():
            if key in self.layer_aliases and self.layer_aliases[key] == path or key == path:
                return spec
        return self.default_layout

    # ----------------------------------------------------------------- scores
    def pool(self, score_map: torch.Tensor) -> torch.Tensor:
        """Image-level scores ``(N, C)`` from a score map ``(N, C, h, w)``."""
        if self.pooling == "max":
            return score_map.amax(dim=(2, 3))
        return score_map.mean(dim=(2, 3))

    def probabilities(self, scores: torch.Tensor) -> torch.Tensor:
        """Sigmoid for a multi-label model, softmax over classes otherwise."""
        return torch.sigmoid(scores) if self.multilabel else torch.softmax(scores, dim=-1)

    def class_index(self, key: str | int) -> int:
        """Index of a class given by index, exact name, or case-insensitive name.

        An index is an int or numpy integer, not a bool; any other type is a
        :class:`DcsmError`.
        """
        key = check_class_key(key)
        if isinstance(key, int) or key.strip().lstrip("-").isdigit():
            idx = int(key)
            if not 0 <= idx < self.num_classes:
                raise DcsmError(
                    f"class index {idx} out of range for model {self.name} "
                    f"({self.num_classes} classes)"
                )
            return idx
        if key in self.class_names:
            return self.class_names.index(key)
        lowered = [n.lower() for n in self.class_names]
        wanted = key.strip().lower()
        if wanted in lowered:
            return lowered.index(wanted)
        shared = [n for n in self.class_names if n.lower().rsplit(" (", 1)[0] == wanted]
        if len(shared) > 1:
            raise DcsmError(f"class '{key}' is ambiguous for model {self.name}: "
                            + ", ".join(shared) + " (name one of these, or give an index)")
        raise DcsmError(f"unknown class '{key}' for model {self.name}")
