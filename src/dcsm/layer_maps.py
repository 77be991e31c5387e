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
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError

UpsampleOrder = Literal["max_first", "upsample_first"]
UPSAMPLE_ORDERS: tuple[str, ...] = ("max_first", "upsample_first")


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(N, C, h, w)`` maps to ``size`` (half-pixel centres)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def max_abs_over_channels(grad: torch.Tensor) -> torch.Tensor:
    """``max_k |g[..., k, y, x]|``: (..., C, h, w) -> (..., h, w)."""
    return grad.abs().amax(dim=-3)


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
