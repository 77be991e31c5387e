"""``dcsm``: the distinct class saliency method (Shimoda & Yanai), :class:`DistinctSaliency`.

The method itself is the pipeline of :mod:`dcsm.pipeline` (its explainer:
:mod:`dcsm.pipeline.explainer`); this module registers it and gives its map function for the
benchmarks, where it runs with each preset (:mod:`dcsm.methods.benchmarked`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dcsm.methods.maps import Candidates, MapFunction, result_maps
from dcsm.methods.registry import MapBuilder, MethodSpec, register
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.explainer import DistinctSaliency

#: The settings :class:`DistinctSaliency` takes besides a plain module's description.
SETTINGS = frozenset({
    "preset", "scales", "layers", "backprop", "alpha", "subtract", "upsample", "reduce",
    "propagate", "flip", "gamma", "gate", "batch", "min_contrast", "max_side", "precision",
    "max_pixels", "merge_lookalikes"})


def dcsm_maps(preset: str, subtract: bool = True) -> MapBuilder:
    """The dcsm method with ``preset``.

    The classes it contrasts depend on the mode (see :data:`dcsm.bench.methods.CANDIDATE_MODES`):
    given (``oracle``), the named class topped up by the preset's own candidate rule (``target``),
    or chosen by that rule (``auto``).
    """

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        explainer = DistinctSaliency(adapter, preset=preset, subtract=subtract)
        by_size: dict[int, DistinctSaliency] = {}

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            k = len(classes)
            if mode == "oracle":
                return result_maps(explainer.explain(image, classes=list(classes)), classes)
            if mode == "auto":
                return result_maps(explainer.explain(image, classes="auto", top_k=k), classes)
            if k not in by_size:
                by_size[k] = DistinctSaliency(
                    adapter, preset=preset, subtract=subtract,
                    min_contrast=max(k, explainer.preset.min_contrast))
            return {c: result_maps(by_size[k].explain(image, classes=[c]), [c])[c]
                    for c in classes}

        return run

    return build


SPEC = register(MethodSpec(
    name="dcsm",
    description="distinct class saliency maps (Shimoda & Yanai): each class's gradients at "
                "several layers and scales, contrasted with the other candidates'",
    label="dcsm",
    explainer=DistinctSaliency,
    settings=SETTINGS,
    contrastive=True,
    layers="several",
    per_layer=True,
))

__all__ = ["SETTINGS", "SPEC", "DistinctSaliency", "dcsm_maps"]
