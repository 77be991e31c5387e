r"""Spreading each class map over its object through the model's own feature affinities.

The derivative maps of an ImageNet classifier sit on an object's most telling parts; the
object's other pixels carry features like them. A random walk on the affinities between the
feature vectors of one layer (training-free, after the learnt walks of AffinityNet, Ahn & Kwak
2018) carries each map's mass to the locations that look like where it already is.

With :math:`f_i` the feature vector at location :math:`i` of an ``(h, w)`` feature grid, the
affinity of two locations within ``radius`` of each other is

.. math::

    a_{ij} = \max(\cos(f_i, f_j), 0)^{\beta}

(zero beyond the radius), the transition :math:`P_{ij} = a_{ij} / \sum_k a_{kj}`, and the map
:math:`m` (shrunk to the grid by area averaging) becomes :math:`m P^t` after ``steps`` = t steps:
each location takes the affinity-weighted mean of the map around it, t times. ``beta`` sharpens
the affinities (only near-identical features exchange mass); the radius keeps the walk from
jumping to a distant object that looks alike. The propagated map is brought back to the working
resolution bilinearly and scaled to the original map's maximum. A grid of more than
:data:`MAX_CELLS` locations (a photo explained at its full resolution) is pooled to fit, which
widens the radius in pixels accordingly.

Which features: by default (:data:`AUTO_LAYER`) the deepest of the explainer's layers whose grid
is at least as fine as a sixteenth of the input (stride 16 or less; the finest layer if none
is), average-pooled to stride 16 when finer: deep enough that an object's parts look alike,
fine enough to follow its outline, and at most ``(H/16 x W/16)^2`` affinities (a 512 x 384
working image: 768 locations).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError

AUTO_LAYER = "auto"
"""The :attr:`Propagation.layer` that lets :func:`affinity_features` choose."""
#: The coarsest feature grid the automatic choice takes, and the grid it pools finer ones to.
AFFINITY_STRIDE = 16
#: The most locations the walk runs on (its matrix has this many squared entries: 64 MiB of
#: float32 per image); a larger grid (a photo at its full resolution) is pooled to fit.
MAX_CELLS = 4096


@dataclass(frozen=True)
class Propagation:
    """Settings of the feature-affinity random walk (:func:`random_walk`).

    Attributes:
        steps: random-walk steps t (0: off).
        beta: exponent of the cosine affinities.
        radius: largest distance, in feature-grid cells, between two locations that exchange
            mass (Chebyshev distance).
        layer: the layer whose features define the affinities (a name of the explainer's
            layers), or ``"auto"`` (also empty): chosen by :func:`affinity_features`.
    """

    steps: int = 8
    beta: float = 8.0
    radius: int = 5
    layer: str = AUTO_LAYER

    def __post_init__(self) -> None:
        """Refuse settings the walk cannot run with, with a one-line :class:`DcsmError`."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 0:
            raise DcsmError(f"propagation steps must be a non-negative integer, got "
                            f"{self.steps!r}")
        if isinstance(self.beta, bool) or not isinstance(self.beta, int | float) \
                or not 0 < self.beta < 1e3:
            raise DcsmError(f"propagation beta must be a positive number, got {self.beta!r}")
        if isinstance(self.radius, bool) or not isinstance(self.radius, int) or self.radius < 1:
            raise DcsmError(f"propagation radius must be a positive integer, got "
                            f"{self.radius!r}")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)


def affinity_features(grids: list[torch.Tensor], input_hw: tuple[int, int]) -> torch.Tensor:
    """Of the layers' ``(N, C, h, w)`` outputs (shallow to deep), the features the walk uses.

    One layer: its output as it is. Several (:data:`AUTO_LAYER`): the deepest with a stride of
    at most :data:`AFFINITY_STRIDE` (the finest if none), average-pooled to that stride when
    finer (module docstring).
    """
    if len(grids) == 1:
        return grids[0]
    target = (max(1, math.ceil(input_hw[0] / AFFINITY_STRIDE)),
              max(1, math.ceil(input_hw[1] / AFFINITY_STRIDE)))
    least = (max(1, input_hw[0] // AFFINITY_STRIDE), max(1, input_hw[1] // AFFINITY_STRIDE))
    fine = [g for g in grids if g.shape[-2] >= least[0] and g.shape[-1] >= least[1]]
    # the deepest of the fine enough, else the deepest of the finest
    chosen = fine[-1] if fine else max(reversed(grids), key=lambda g: g.shape[-2] * g.shape[-1])
    if chosen.shape[-2] > target[0] or chosen.shape[-1] > target[1]:
        chosen = F.adaptive_avg_pool2d(chosen, target)
    return chosen


def transition_matrix(features: torch.Tensor, beta: float, radius: int) -> torch.Tensor:
    """``(N, hw, hw)`` column-stochastic transitions from ``(N, C, h, w)`` features."""
    n, _, h, w = features.shape
    f = F.normalize(features.flatten(2).float(), dim=1)  # (N, C, hw)
    aff = torch.bmm(f.transpose(1, 2), f).clamp_(min=0).pow_(beta)
    ys, xs = torch.meshgrid(torch.arange(h, device=f.device), torch.arange(w, device=f.device),
                            indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    near = ((ys[:, None] - ys[None, :]).abs() <= radius) & \
        ((xs[:, None] - xs[None, :]).abs() <= radius)
    aff = aff * near
    return aff / aff.sum(dim=1, keepdim=True).clamp(min=1e-12)


def random_walk(maps: torch.Tensor, features: torch.Tensor, settings: Propagation
                ) -> torch.Tensor:
    """Propagate ``(N, K, H, W)`` maps through the affinities of ``(N, C, h, w)`` features.

    Returns maps of the same shape, each scaled to its input's maximum (all-zero maps stay
    zero).
    """
    if settings.steps == 0:
        return maps
    if maps.ndim != 4 or features.ndim != 4 or maps.shape[0] != features.shape[0]:
        raise ValueError(f"expected (N, K, H, W) maps and (N, C, h, w) features, got "
                         f"{tuple(maps.shape)} and {tuple(features.shape)}")
    n, k, big_h, big_w = maps.shape
    h, w = features.shape[-2:]
    if h * w > MAX_CELLS:
        shrink = math.sqrt(h * w / MAX_CELLS)
        h, w = max(1, int(h / shrink)), max(1, int(w / shrink))
        features = F.adaptive_avg_pool2d(features, (h, w))
    small = F.adaptive_avg_pool2d(maps.float(), (h, w)).flatten(2)  # (N, K, hw)
    trans = transition_matrix(features, settings.beta, settings.radius)
    for _ in range(settings.steps):
        small = torch.bmm(small, trans)
    out = F.interpolate(small.view(n, k, h, w), size=(big_h, big_w), mode="bilinear",
                        align_corners=False).clamp_(min=0)
    peak_in = maps.amax(dim=(-2, -1), keepdim=True).float()
    peak_out = out.amax(dim=(-2, -1), keepdim=True)
    scale = torch.where(peak_out > 0, peak_in / peak_out.clamp(min=1e-12),
                        torch.zeros_like(peak_out))
    return (out * scale).to(maps.dtype)
