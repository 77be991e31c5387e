r"""Weighting each distinct map by where the classifier finds its class.

Run fully convolutionally (Sec. 4 of the paper), the classifier gives a class score map: at each
location of its last grid, how strongly the receptive field there holds each class. For a
classifier with a pooled linear head that map is the class activation map (Zhou et al. 2016)
up to the head's bias: coarse (stride 32 on EfficientNet-Lite), but a blob that covers the
object. The distinct maps are fine but sit on an object's most telling parts and keep a floor
of weak evidence elsewhere. Multiplying the two keeps the distinct map's detail where the
classifier sees the class and lowers it where it does not:

.. math::

    M'_c = M_c \cdot \mathrm{up}\Big(\frac{S_c - \min S_c}{\max S_c - \min S_c}\Big)^{p}

with :math:`S_c` the class's score map at the scale the candidates come from (the raw class
scores before any sigmoid or softmax; a class group's log-sum-exp score for grouped labels),
scaled to [0, 1] over its locations as class activation maps are, upsampled bilinearly to the
map's size, and raised to the power :math:`p` (``power``; 0: no weighting). The score map comes
from a forward the explainer runs anyway: the weighting adds a multiplication.

A score map that is the same everywhere (a model whose score map is a single location, such as
a ViT's pooled head) weighs nothing: the map is kept as it is.

Why scores and not probabilities: a softmax over a thousand classes at each location is far
more peaked than the scores, and on SqueezeNet 1.1 its weighting erased most objects (AUC 0.82
to 0.62 on the development photos, docs/RESULTS.md "Maps that cover the object").
"""

from __future__ import annotations

import math

import torch

from dcsm.errors import DcsmError
from dcsm.pipeline.layer_maps import upsample


def check_power(power: float) -> float:
    """``power`` as a float if it is a finite number in [0, 4], else a one-line error."""
    if isinstance(power, bool) or not isinstance(power, int | float) or \
            not math.isfinite(power) or not 0 <= power <= 4:
        raise DcsmError(f"gate must be a number in [0, 4] (0: off), got {power!r}")
    return float(power)


def class_scores(score_map: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The ``(N, K, h, w)`` score maps of each image's slot classes.

    ``score_map``: ``(N, C, h, w)`` class scores per location; ``targets``: ``(N, K)`` class
    indices.
    """
    idx = targets.to(score_map.device).long()
    n, k = idx.shape
    h, w = score_map.shape[-2:]
    return score_map.gather(1, idx[:, :, None, None].expand(n, k, h, w))


def score_gate(maps: torch.Tensor, scores: torch.Tensor, power: float) -> torch.Tensor:
    """``maps`` (``(N, K, H, W)``) weighted by ``scores`` (``(N, K, h, w)``, each slot's class
    score map) as the module's equation says; ``power`` 0 returns ``maps``."""
    if power == 0:
        return maps
    s = scores.float()
    low = s.amin(dim=(-2, -1), keepdim=True)
    span = s.amax(dim=(-2, -1), keepdim=True) - low
    flat = ~(span > 0)  # also a NaN span
    weight = torch.where(flat, 1.0, (s - low) / torch.where(flat, 1.0, span))
    if power != 1:
        weight = weight.pow(power)
    weight = upsample(weight, (int(maps.shape[-2]), int(maps.shape[-1])))
    return maps * weight.to(maps.dtype)
