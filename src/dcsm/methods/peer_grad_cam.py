"""pytorch-grad-cam's methods, peers of dcsm in the benchmarks (keys ``pgc-...``).

``GradCAM`` at the layer dcsm's Grad-CAM reads (``pgc-gradcam``), ``GradCAM`` over the model's
default dcsm layers (the library averages its per-layer maps; ``pgc-gradcam-layers``),
``LayerCAM`` over those layers (``pgc-layercam-layers``), and ``FinerCAM`` (its contrastive
variant: the class score minus the other candidates' scores, weighted by their probabilities) at
the Grad-CAM layer (``pgc-finercam``). They need the optional package ``pytorch_grad_cam``
(``pip install 'distinct-saliency[bench]'``; FinerCAM from its version 1.5.5) and give maps only
(:mod:`dcsm.methods.maps`).
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
    contrast_sets,
    default_modules,
    gradcam_module,
    image_batch,
    to_image,
)
from dcsm.methods.registry import MapBuilder, MethodSpec, register
from dcsm.pipeline.adapters.base import ModelAdapter


def grad_cam_maps(kind: Literal["gradcam", "gradcam_layers", "layercam_layers", "finercam"]
                  ) -> MapBuilder:
    """The map builder of one of pytorch-grad-cam's methods.

    ``GradCAM`` (Grad-CAM layer or dcsm's layers), ``LayerCAM`` (dcsm's layers) or ``FinerCAM``
    (Grad-CAM layer; compared with the other candidates).
    """

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        purpose = f"the method pgc-{kind.replace('_', '-')}"
        pgc = optional.require("pytorch_grad_cam", purpose)
        targets_of = optional.require("pytorch_grad_cam.utils.model_targets", purpose)
        model = Logits(adapter).eval()
        layers = default_modules(adapter) if kind.endswith("_layers") else [
            gradcam_module(adapter)]
        cls = pgc.LayerCAM if kind == "layercam_layers" else pgc.GradCAM

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            classes = list(classes)
            x = image_batch(adapter, image, len(classes))
            if kind == "finercam":
                sets = contrast_sets(adapter, image, classes, mode)
                classes = [c for c in classes if sets[c]]  # classes the mode gives no map: out
                if not classes:
                    return {}
                targets = [targets_of.FinerWeightedTarget(c, sets[c], 1.0) for c in classes]
                with pgc.FinerCAM(model, layers) as cam:
                    maps = cam(input_tensor=x[:len(classes)], targets=targets)
            else:
                targets = [targets_of.ClassifierOutputTarget(c) for c in classes]
                with cls(model=model, target_layers=layers) as cam:
                    maps = cam(input_tensor=x, targets=targets)
            model.zero_grad(set_to_none=True)
            return dict(zip(classes, to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


register(MethodSpec(
    name="pgc-gradcam", label="pytorch-grad-cam GradCAM",
    description="pytorch-grad-cam's GradCAM at the Grad-CAM layer",
    maps=grad_cam_maps("gradcam"), requires="pytorch_grad_cam", source="pytorch-grad-cam",
    layers="one"))
register(MethodSpec(
    name="pgc-gradcam-layers", label="pytorch-grad-cam GradCAM, dcsm's layers",
    description="pytorch-grad-cam's GradCAM averaged over dcsm's default layers",
    maps=grad_cam_maps("gradcam_layers"), requires="pytorch_grad_cam",
    source="pytorch-grad-cam", layers="several"))
register(MethodSpec(
    name="pgc-layercam-layers", label="pytorch-grad-cam LayerCAM, dcsm's layers",
    description="pytorch-grad-cam's LayerCAM over dcsm's default layers",
    maps=grad_cam_maps("layercam_layers"), requires="pytorch_grad_cam",
    source="pytorch-grad-cam", layers="several"))
register(MethodSpec(
    name="pgc-finercam", label="pytorch-grad-cam FinerCAM",
    description="pytorch-grad-cam's FinerCAM: the class score minus the other candidates', "
                "weighted by their probabilities",
    maps=grad_cam_maps("finercam"), requires="pytorch_grad_cam", requires_name="FinerCAM",
    source="pytorch-grad-cam", contrastive=True, layers="one"))

__all__ = ["grad_cam_maps"]
