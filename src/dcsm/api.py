"""The one-call API: ``dcsm.explain(model, image, method=...)`` and the method table.

:func:`make_explainer` builds the explainer of a method (the distinct class saliency method or
one of the baselines, looked up in the registry :mod:`dcsm.methods.registry`) once, to apply to
many images; :func:`explain` builds one and applies it. Every explainer is an
:class:`Explainer` (:mod:`dcsm.pipeline.base`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, overload

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.methods import registry
from dcsm.pipeline.adapters import ModelOptions
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.affinity import Propagation
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import ClassSpec
from dcsm.pipeline.images import DEFAULT_MAX_SIDE, ImageLike
from dcsm.pipeline.presets import DEFAULT_PRESET
from dcsm.pipeline.result import BatchResult, SaliencyResult

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: The methods :func:`make_explainer` builds, in the registry's order (those registered with an
#: explainer when dcsm is imported: ``dcsm``, ``simonyan``, ``guided``, ``gradcam``).
METHODS: tuple[str, ...] = registry.names(explainers=True)
_MODEL_OPTIONS = tuple(ModelOptions.__annotations__)


class Settings(ModelOptions, total=False):
    """The keyword arguments :func:`explain` hands on to :func:`make_explainer`.

    Its settings and a plain module's description (:class:`~dcsm.pipeline.adapters.ModelOptions`).
    """

    preset: str
    scales: Sequence[float] | None
    layers: Sequence[LayerRef] | None
    backprop: str
    alpha: float | None
    subtract: bool
    upsample: str | None
    min_contrast: int | None
    max_side: int | None
    precision: str
    max_pixels: int | None
    merge_lookalikes: bool | None
    reduce: str | None
    propagate: Propagation | bool | None
    flip: bool | None
    gamma: float | None
    gate: float | None


def make_explainer(
    model: ModelAdapter | nn.Module | str,
    method: str = registry.DEFAULT_METHOD,
    preset: str = DEFAULT_PRESET,
    scales: Sequence[float] | None = None,
    layers: Sequence[LayerRef] | None = None,
    backprop: str = "guided",
    alpha: float | None = None,
    subtract: bool = True,
    upsample: str | None = None,
    min_contrast: int | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    precision: str = "float32",
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    merge_lookalikes: bool | None = None,
    reduce: str | None = None,
    propagate: Propagation | bool | None = None,
    flip: bool | None = None,
    gamma: float | None = None,
    gate: float | None = None,
    **model_options: Unpack[ModelOptions],
) -> Explainer:
    """The explainer for ``method``, built once to apply to many images.

    ``method``: ``dcsm``, ``simonyan``, ``guided``, ``gradcam`` or another registered method
    that has an explainer (:func:`dcsm.methods.registry.names`).

    ``max_pixels``: the most pixels an image may have (default 50 million; None: no limit),
    checked from a file's header before decoding (:func:`dcsm.io.load_image`).

    ``model`` is an adapter, a registry name or any classifier module; ``model_options``
    (``class_names``, ``preprocess``, ``multilabel``, ``input_size``, ``layouts``) describe a
    plain module (:func:`dcsm.pipeline.adapters.module.module_adapter`). Each method takes the
    settings of its :class:`~dcsm.methods.registry.MethodSpec` and leaves the others out;
    ``min_contrast``, ``merge_lookalikes``, ``reduce``, ``propagate``, ``flip``, ``gamma`` and
    ``gate`` (the dcsm method's, :class:`~dcsm.pipeline.explainer.DistinctSaliency`) are an
    error when given to a method that does not take them.
    """
    unknown = sorted(set(model_options) - set(_MODEL_OPTIONS))
    if unknown:
        raise DcsmError(f"unknown option(s) {', '.join(unknown)}")
    spec = registry.get(method, explainers=True)
    settings = {
        "preset": preset, "scales": scales, "layers": layers, "backprop": backprop,
        "alpha": alpha, "subtract": subtract, "upsample": upsample,
        "min_contrast": min_contrast, "max_side": max_side, "precision": precision,
        "max_pixels": max_pixels, "merge_lookalikes": merge_lookalikes, "reduce": reduce,
        "propagate": propagate, "flip": flip, "gamma": gamma,
        "gate": gate}
    return spec.build(model, settings, model_options)


@overload
def explain(model: ModelAdapter | nn.Module | str, image: ImageLike,
            method: str = registry.DEFAULT_METHOD, classes: ClassSpec = None,
            top_k: int | None = None, threshold: float | None = None, per_layer: bool = False,
            **settings: Unpack[Settings]) -> SaliencyResult: ...


@overload
def explain(model: ModelAdapter | nn.Module | str, image: torch.Tensor,
            method: str = registry.DEFAULT_METHOD, classes: ClassSpec = None,
            top_k: int | None = None, threshold: float | None = None, per_layer: bool = False,
            **settings: Unpack[Settings]) -> BatchResult: ...


def explain(
    model: ModelAdapter | nn.Module | str,
    image: ImageLike | torch.Tensor,
    method: str = registry.DEFAULT_METHOD,
    classes: ClassSpec = None,
    top_k: int | None = None,
    threshold: float | None = None,
    per_layer: bool = False,
    **settings: Unpack[Settings],
) -> SaliencyResult | BatchResult:
    """One call: ``make_explainer(model, method, **settings).explain(image, ...)``.

    An image (a path, an array, a PIL image) gives a :class:`SaliencyResult`, a preprocessed
    tensor batch a :class:`BatchResult` (:meth:`Explainer.explain`); ``settings``: those of
    :func:`make_explainer` (:class:`Settings`).
    """
    explainer = make_explainer(model, method, **settings)
    return explainer.explain(image, classes, top_k, threshold, per_layer)


__all__ = ["METHODS", "Explainer", "Settings", "explain", "make_explainer"]
