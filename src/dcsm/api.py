"""The one-call API: ``dcsm.explain(model, image, method=...)`` and the method table.

:func:`make_explainer` builds the explainer of a method (the distinct class saliency method or
one of the baselines) once, to apply to many images; :func:`explain` builds one and applies it.
Every explainer follows the :class:`Explainer` protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.methods.baselines import GradCAM, InputGradient
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.affinity import Propagation
from dcsm.pipeline.candidates import ClassSpec
from dcsm.pipeline.explainer import DistinctSaliency
from dcsm.pipeline.images import DEFAULT_MAX_SIDE, ImageLike
from dcsm.pipeline.presets import DEFAULT_PRESET
from dcsm.pipeline.result import BatchResult, SaliencyResult

METHODS: tuple[str, ...] = ("dcsm", "simonyan", "guided", "gradcam")
_MODEL_OPTIONS = ("class_names", "preprocess", "multilabel", "input_size", "layouts")


@runtime_checkable
class Explainer(Protocol):
    """What every method offers: its model, its settings and ``explain``."""

    method: str
    adapter: ModelAdapter

    def parameters(self) -> dict[str, object]:
        """The settings, as written to ``summary.json``."""
        ...

    def explain(self, image: ImageLike | torch.Tensor, classes: ClassSpec = None,
                top_k: int | None = None, threshold: float | None = None,
                per_layer: bool = False) -> SaliencyResult | BatchResult:
        """Maps of the candidate classes of an image or a tensor batch."""
        ...


def make_explainer(
    model: ModelAdapter | nn.Module | str,
    method: str = "dcsm",
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
    **model_options: object,
) -> Explainer:
    """The explainer for ``method`` (``dcsm``, ``simonyan``, ``guided`` or ``gradcam``).

    ``max_pixels``: the most pixels an image may have (default 50 million; None: no limit),
    checked from a file's header before decoding (:func:`dcsm.io.load_image`).

    ``model`` is an adapter, a registry name or any classifier module; ``model_options``
    (``class_names``, ``preprocess``, ``multilabel``, ``input_size``, ``layouts``) describe a
    plain module (:func:`dcsm.pipeline.adapters.module.module_adapter`). ``merge_lookalikes``,
    ``reduce``,
    ``propagate``, ``flip`` and ``gamma`` are the dcsm method's (:class:`DistinctSaliency`).
    """
    unknown = sorted(set(model_options) - set(_MODEL_OPTIONS))
    if unknown:
        raise DcsmError(f"unknown option(s) {', '.join(unknown)}")
    if method == "dcsm":
        return DistinctSaliency(model, preset=preset, scales=scales, layers=layers,
                                backprop=backprop, alpha=alpha, subtract=subtract,
                                upsample=upsample, min_contrast=min_contrast,  # type: ignore[arg-type]
                                max_side=max_side, precision=precision,
                                merge_lookalikes=merge_lookalikes, reduce=reduce,  # type: ignore[arg-type]
                                propagate=propagate, flip=flip, gamma=gamma,
                                max_pixels=max_pixels, **model_options)  # type: ignore[arg-type]
    if min_contrast is not None:
        raise DcsmError(f"--min-contrast applies to the dcsm method only, not {method}")
    if merge_lookalikes is not None:
        raise DcsmError(f"--merge-lookalikes/--no-merge-lookalikes apply to the dcsm method only, "
                        f"not {method}")
    given = [n for n, v in (("reduce", reduce), ("propagate", propagate), ("flip", flip),
                            ("gamma", gamma)) if v is not None]
    if given:
        raise DcsmError(f"{given[0]} applies to the dcsm method only, not {method}")
    if method == "simonyan":
        return InputGradient(model, "plain", max_side=max_side, precision=precision,
                             max_pixels=max_pixels, **model_options)
    if method == "guided":
        return InputGradient(model, "guided", max_side=max_side, precision=precision,
                             max_pixels=max_pixels, **model_options)
    if method == "gradcam":
        if layers is not None and len(layers) != 1:
            raise DcsmError("Grad-CAM reads exactly one layer")
        return GradCAM(model, layers[0] if layers else None, max_side=max_side,
                       precision=precision, max_pixels=max_pixels, **model_options)
    raise DcsmError(f"unknown method '{method}'; known: {', '.join(METHODS)}")


def explain(
    model: ModelAdapter | nn.Module | str,
    image: ImageLike | torch.Tensor,
    method: str = "dcsm",
    classes: ClassSpec = None,
    top_k: int | None = None,
    threshold: float | None = None,
    per_layer: bool = False,
    **settings: object,
) -> SaliencyResult | BatchResult:
    """One call: ``make_explainer(model, method, **settings).explain(image, ...)``."""
    explainer = make_explainer(model, method, **settings)  # type: ignore[arg-type]
    return explainer.explain(image, classes, top_k, threshold, per_layer)
