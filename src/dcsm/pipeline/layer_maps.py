r"""Per-layer class saliency: derivative maps reduced over channels and upsampled.

For a layer :math:`L_i` with derivative :math:`v_i^c = \partial S_c / \partial L_i` (Eq. 1), the
class saliency map at each image location is the largest absolute derivative across the layer's
channels, bilinearly upsampled to the image:

.. math::

    M^c_{i,x,y} = \max_k |w^c_{i,h_i(x,y,k)}|

The paper's text takes the channel maximum first and then upsamples (``"max_first"``, cheap:
one channel is upsampled); its formula upsamples every channel of :math:`v_i^c` to
:math:`w_i^c` and then takes the maximum (``"upsample_first"``, as many upsamplings as channels).
Bilinear interpolation is a positive combination of neighbours, so ``max_first`` is never
smaller than ``upsample_first`` and the two agree wherever one channel dominates a neighbourhood.

The channel reduction is the paper's maximum of absolute derivatives (``"max_abs"``) by default.
``"grad_act"`` weighs each channel's positive derivative by the layer's (positive) activation
and sums over channels,

.. math::

    M^c_{i,x,y} = \sum_k \max(v^c_{i,k,x,y}, 0)\, \max(a_{i,k,x,y}, 0)

(the product LayerCAM, Jiang et al. 2021, forms at each location): a location counts by how much
of the class evidence its features carry, not only by how steeply the score would change there,
so the map spreads over the object's extent instead of its few steepest points.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError

UpsampleOrder = Literal["max_first", "upsample_first"]
UPSAMPLE_ORDERS: tuple[str, ...] = ("max_first", "upsample_first")
ChannelReduction = Literal["max_abs", "grad_act"]
CHANNEL_REDUCTIONS: tuple[str, ...] = ("max_abs", "grad_act")


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` maps to ``size`` (half-pixel centres)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def max_abs_over_channels(grad: torch.Tensor) -> torch.Tensor:
    """``max_k |g[..., k, y, x]|``: (..., C, h, w) -> (..., h, w)."""
    return grad.abs().amax(dim=-3)


def grad_times_activation(grad: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """``sum_k max(g_k, 0) max(a_k, 0)``: (N, C, h, w) derivatives and activations -> (N, h, w).
    """
    return (grad.clamp(min=0) * act.clamp(min=0)).sum(dim=-3)


def reduce_channels(grad: torch.Tensor, act: torch.Tensor | None,
                    how: ChannelReduction = "max_abs") -> torch.Tensor:
    """One layer's derivatives ``(N, C, h, w)`` reduced over channels to ``(N, h, w)``."""
    if how == "max_abs":
        return max_abs_over_channels(grad)
    if how == "grad_act":
        if act is None:
            raise ValueError("the 'grad_act' reduction needs the layer's activations")
        return grad_times_activation(grad, act)
    raise DcsmError(f"unknown channel reduction '{how}'; known: {', '.join(CHANNEL_REDUCTIONS)}")


def layer_saliency(
    grad: torch.Tensor,
    size: tuple[int, int],
    order: UpsampleOrder = "max_first",
    chunk: int = 32,
) -> torch.Tensor:
    """Saliency maps ``(K, H, W)`` of one layer from its derivatives ``(K, C, h, w)``.

    ``chunk`` bounds the channels upsampled at once by ``"upsample_first"`` (memory).
    """
    if grad.ndim != 4:
        raise ValueError(f"expected (K, C, h, w) derivatives, got {tuple(grad.shape)}")
    if order == "max_first":
        return upsample(max_abs_over_channels(grad).unsqueeze(1), size).squeeze(1)
    if order == "upsample_first":
        out = grad.new_zeros((grad.shape[0], *size))
        for start in range(0, grad.shape[1], chunk):
            part = upsample(grad[:, start:start + chunk], size)
            out = torch.maximum(out, max_abs_over_channels(part))
        return out
    raise DcsmError(f"unknown upsampling order '{order}'; known: {', '.join(UPSAMPLE_ORDERS)}")
