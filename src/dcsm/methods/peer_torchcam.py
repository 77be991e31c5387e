"""TorchCAM's ``GradCAM`` and ``LayerCAM`` at the Grad-CAM layer, bilinearly upsampled.

Peers of dcsm in the benchmarks (``torchcam-gradcam``, ``torchcam-layercam``).

They need the optional package ``torchcam`` (``pip install 'distinct-saliency[bench]'``) and
give maps only (:mod:`dcsm.methods.maps`).

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from dcsm import optional
from dcsm.methods.maps import (
    Candidates,
    Logits,
    MapFunction,
    gradcam_module,
    image_batch,
    to_image,
)
from dcsm.methods.registry import MapBuilder, MethodSpec, register
from dcsm.pipeline.adapters.base import ModelAdapter


def torchcam_maps(kind: Literal["gradcam", "layercam"]) -> MapBuilder:
    """TorchCAM's ``GradCAM`` or ``LayerCAM`` at the Grad-CAM layer, bilinearly upsampled."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        cams = optional.require("torchcam.methods", f"the method torchcam-{kind}")
        model = Logits(adapter).eval()
        layer = gradcam_module(adapter)
        cls = cams.GradCAM if kind == "gradcam" else cams.LayerCAM

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            classes = list(classes)
            x = image_batch(adapter, image, len(classes))
            with cls(model, target_layer=layer) as extractor:
                scores = model(x)
                (maps,) = extractor(class_idx=classes, scores=scores)
            model.zero_grad(set_to_none=True)
            return dict(zip(classes, to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


register(MethodSpec(
    name="torchcam-gradcam", label="TorchCAM GradCAM",
    description="TorchCAM's GradCAM at the Grad-CAM layer",
    maps=torchcam_maps("gradcam"), requires="torchcam", source="torchcam", layers="one"))
register(MethodSpec(
    name="torchcam-layercam", label="TorchCAM LayerCAM",
    description="TorchCAM's LayerCAM at the Grad-CAM layer",
    maps=torchcam_maps("layercam"), requires="torchcam", source="torchcam", layers="one"))

__all__ = ["torchcam_maps"]
