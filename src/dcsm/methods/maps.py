"""The benchmarks' interface to a method: a map function, and what the peers' wrappers share.

A method turns an image and the classes to explain into one map per class, at the image's size
(a :data:`MapFunction`). Classes a method gives no map for (dcsm with automatically chosen
candidates that miss a class) are simply absent from the returned dict and score 0. A method's
``maps`` builder (:class:`dcsm.methods.registry.MethodSpec`) makes one from a model and a
candidate mode (:data:`Candidates`).

The peers run through their own public APIs on the same model, given a module that returns
logits ``(N, C)`` (the adapter's fully convolutional model followed by its pooling,
:class:`Logits`) and the adapter's preprocessing. They are called once per image with the image
repeated once per class in the batch (each copy with its own target), which is how their APIs
explain several classes in one call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.images import model_input
from dcsm.pipeline.result import SaliencyResult

MapFunction = Callable[[np.ndarray, Sequence[int]], dict[int, np.ndarray]]
Candidates = Literal["oracle", "target", "auto"]


class Logits(nn.Module):
    """The adapter's fully convolutional model followed by its pooling: ``(N, C)`` logits."""

    def __init__(self, adapter: ModelAdapter) -> None:
        """The adapter's model and pooling, shared with it (not copied)."""
        super().__init__()
        self.fcn = adapter.model
        self.pooling = adapter.pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed images -> (N, C) logits."""
        s = self.fcn(x)
        return s.amax(dim=(2, 3)) if self.pooling == "max" else s.mean(dim=(2, 3))


def result_maps(result: SaliencyResult, classes: Sequence[int]) -> dict[int, np.ndarray]:
    """The maps of a :class:`~dcsm.pipeline.result.SaliencyResult` by class index.

    Only those of ``classes`` that it has.
    """
    by_index = {c.index: result.maps[c.name] for c in result.candidates}
    return {c: by_index[c] for c in classes if c in by_index}


@torch.no_grad()
def pooled_ranking(adapter: ModelAdapter, image: np.ndarray, k: int) -> list[int]:
    """The ``k`` most probable classes of the image as a whole (pooled scores at scale 1)."""
    scores = adapter.pool(adapter.model(model_input(adapter, image, 1.0)))[0]
    return scores.topk(min(k, scores.numel())).indices.tolist()


def contrast_sets(adapter: ModelAdapter, image: np.ndarray, classes: Sequence[int],
                  mode: Candidates) -> dict[int, list[int] | None]:
    """For a peer's contrastive method, the classes each class of ``classes`` is contrasted with.

    Under ``mode`` (itself excluded), from the image's pooled ranking, or None where the mode
    gives it no map (see :data:`dcsm.bench.methods.CANDIDATE_MODES`).
    """
    k = len(classes)
    if mode == "oracle":
        return {c: [o for o in classes if o != c] for c in classes}
    ranked = pooled_ranking(adapter, image, k + 1)
    if mode == "target":
        return {c: [o for o in ranked if o != c][:k - 1] for c in classes}
    top = ranked[:k]
    return {c: [o for o in top if o != c] if c in top else None for c in classes}


def image_batch(adapter: ModelAdapter, image: np.ndarray, k: int) -> torch.Tensor:
    """The preprocessed image repeated ``k`` times: ``(k, 3, H, W)`` on the model's device."""
    x = adapter.preprocess(image).to(adapter.device)
    return x.expand(k, -1, -1, -1).contiguous()


def to_image(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) maps -> (K, H, W) float32 numpy, bilinearly resized if needed."""
    t = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps.detach())
    t = t.float().cpu()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return t.numpy().astype(np.float32)


def gradcam_module(adapter: ModelAdapter) -> nn.Module:
    """The module dcsm's Grad-CAM reads.

    The adapter's Grad-CAM layer, else its last default layer.
    """
    layer = adapter.gradcam_layer or adapter.default_layers[-1]
    return adapter.resolve_layers([layer])[layer]


def default_modules(adapter: ModelAdapter) -> list[nn.Module]:
    """The modules of the adapter's default dcsm layers."""
    return list(adapter.resolve_layers(adapter.default_layers).values())


def explainer_maps(build: Callable[[ModelAdapter], Explainer]
                   ) -> Callable[[ModelAdapter, Candidates], MapFunction]:
    """The map function of an explainer that is given the classes (``build(adapter)``).

    The maps of exactly the classes asked for, whatever the mode.
    """

    def maps(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        explainer = build(adapter)

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            return result_maps(explainer.explain(image, classes=list(classes)), classes)

        return run

    return maps


__all__ = ["Candidates", "Logits", "MapFunction", "contrast_sets", "default_modules",
           "explainer_maps", "gradcam_module", "image_batch", "pooled_ranking", "result_maps",
           "to_image"]
