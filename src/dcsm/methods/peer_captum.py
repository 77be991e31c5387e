"""Captum's ``Saliency`` (absolute input gradient) and ``GuidedBackprop``.

Peers of dcsm's input-gradient baselines in the benchmarks (``captum-saliency``, ``captum-guided``).

Both are reduced over the colour channels by the largest absolute value, as dcsm's baselines.
Captum's guided rule only replaces ``nn.ReLU`` modules, so on EfficientNet-Lite (``nn.ReLU6``)
its ``GuidedBackprop`` is a plain gradient. They need the optional package ``captum``
(``pip install 'distinct-saliency[bench]'``) and give maps only (:mod:`dcsm.methods.maps`).

"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np

from dcsm import optional
from dcsm.methods.maps import (
    Candidates,
    Logits,
    MapFunction,
    image_batch,
    to_image,
)
from dcsm.methods.registry import MapBuilder, MethodSpec, register
from dcsm.pipeline.adapters.base import ModelAdapter


def captum_maps(kind: Literal["saliency", "guided"]) -> MapBuilder:
    """Captum's ``Saliency`` or ``GuidedBackprop``, max |.| over colour channels."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        attr_methods = optional.require("captum.attr", f"the method captum-{kind}")
        model = Logits(adapter).eval()

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            x = image_batch(adapter, image, len(classes))
            with warnings.catch_warnings():  # Captum's notes on hooks and requires_grad
                warnings.simplefilter("ignore", UserWarning)
                if kind == "saliency":
                    attr = attr_methods.Saliency(model).attribute(x, target=list(classes),
                                                                  abs=True)
                else:
                    attr = attr_methods.GuidedBackprop(model).attribute(x, target=list(classes))
            model.zero_grad(set_to_none=True)
            maps = attr.detach().abs().amax(dim=1)
            return dict(zip(classes, to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


register(MethodSpec(
    name="captum-saliency", label="Captum Saliency",
    description="Captum's Saliency: the absolute input gradient, max over the colour channels",
    maps=captum_maps("saliency"), requires="captum", source="captum", segmenter="grabcut"))
register(MethodSpec(
    name="captum-guided", label="Captum GuidedBackprop",
    description="Captum's GuidedBackprop, max |.| over the colour channels",
    maps=captum_maps("guided"), requires="captum", source="captum"))

__all__ = ["captum_maps"]
