r"""Class contrast: subtracting the other candidates' maps.

The paper's Eq. 2, on the per-layer maps :math:`M_i` of the candidate classes:

.. math::

    \tilde M^c_{i,x,y} = \sum_{c' \in candidates} \max(M^c_{i,x,y} - M^{c'}_{i,x,y}, 0)\,[c \ne c']

With a single candidate there is nothing to subtract and the map is returned unchanged (as in the
paper's single-object images).

The authors' released MatConvNet code (``dcsm.m``) instead normalises each pairwise difference by
its own maximum and saturates it before summing:

.. math::

    \hat M^c_{i,x,y} = \sum_{c' \ne c} \max\Big(\tanh\big(\alpha\,
        \frac{M^c_i - M^{c'}_i}{\max_{x,y} (M^c_i - M^{c'}_i)}\big), 0\Big)

A pair whose difference is nowhere positive contributes nothing (the released code divides by a
negative maximum there, which flips the sign; we treat that as no evidence for ``c``), and so
does a pair whose difference peaks below :data:`PAIR_FLOOR` (1e-4) of the larger of the two
maps' peaks: divided by its own maximum, a difference made of rounding would otherwise count as
much as a real one (dcsm's addition; the released code has no floor).

A third form subtracts only the strongest other class at each location,

.. math::

    \bar M^c_{i,x,y} = \max\big(M^c_{i,x,y} - \max_{c' \ne c} M^{c'}_{i,x,y}, 0\big)

which, unlike the sum, does not let the differences between two *other* classes' background
responses add up in a region that belongs to neither.
"""

from __future__ import annotations

import torch


def subtract_others(maps: torch.Tensor) -> torch.Tensor:
    """Eq. 2 over the class dimension: ``(..., K, H, W)`` maps of K candidates, same shape out.

    Leading dimensions (a batch of images) are independent.
    """
    if maps.shape[-3] <= 1:
        return maps
    out = torch.zeros_like(maps)
    for other in range(maps.shape[-3]):
        out += (maps - maps[..., other:other + 1, :, :]).clamp(min=0)
    return out


def subtract_strongest(maps: torch.Tensor) -> torch.Tensor:
    """``max(M_c - max_{c' != c} M_c', 0)`` over the class dimension of ``(..., K, H, W)``;
    K = 1 is unchanged.

    The strongest other class of c is the larger of the running maxima of the classes before
    c and of those after it: ``3K - 6`` element-wise maxima of one map each (``torch.topk``
    over the class dimension took 13 to 40 times as long on this project's CPU, for 2 to 5
    classes at 224 to 512 pixels).
    """
    k = maps.shape[-3]
    if k <= 1:
        return maps
    planes = maps.unbind(-3)
    before: list[torch.Tensor] = [planes[0]]  # before[c - 1] = max(planes[:c])
    for c in range(1, k - 1):
        before.append(torch.maximum(before[-1], planes[c]))
    after: list[torch.Tensor] = [planes[-1]]  # built from the end, reversed below
    for c in range(k - 2, 0, -1):
        after.append(torch.maximum(after[-1], planes[c]))
    after.reverse()  # after[c] = max(planes[c + 1:]) for c = 0 .. k - 2
    others = [after[0], *(torch.maximum(before[c - 1], after[c]) for c in range(1, k - 1)),
              before[k - 2]]
    return (maps - torch.stack(others, dim=-3)).clamp_(min=0)


CONTRASTS = {"sum": subtract_others, "strongest": subtract_strongest}


PAIR_FLOOR = 1e-4
"""A pair whose positive difference peaks below this fraction of the larger of the two maps' own
peaks carries no evidence (see :func:`pairwise_saturated_contrast`)."""


def pairwise_saturated_contrast(maps: torch.Tensor, alpha: float,
                                floor: float = PAIR_FLOOR) -> torch.Tensor:
    r"""The released code's contrast: ``(..., K, H, W)`` -> same shape; K = 1 gives zeros.

    A pair ``(c, c')`` counts only when its difference peaks above ``floor`` times the larger of
    the two maps' peaks, :math:`\max_{x,y}(M^c - M^{c'}) > f \max(\max|M^c|, \max|M^{c'}|)`.
    Dividing by the pair's own maximum makes the contrast scale-free, so without a floor two maps
    that differ only by rounding (as guided gradients of look-alike classes at a low layer nearly
    do) would give a full-strength ``tanh(alpha)`` contribution made of float noise, different in
    float32 and float64. The error of a counted pair's term is about ``alpha`` times the maps'
    relative rounding error times :math:`\max M / \max (M^c - M^{c'})`; the floor bounds that
    factor by ``1 / floor``. ``1e-4`` lies well above float32 rounding in the maps (about 1e-7
    relative on one layer, 1e-6 after a deep backward) and well below any difference one can see
    (one grey level of an 8-bit map is 1/255, 4e-3 of its peak).
    """
    out = torch.zeros_like(maps)
    k = maps.shape[-3]
    own = maps.abs().amax(dim=(-2, -1), keepdim=True)  # (..., K, 1, 1)
    for c in range(k):
        for other in range(k):
            if other == c:
                continue
            diff = maps[..., c, :, :] - maps[..., other, :, :]
            peak = diff.amax(dim=(-2, -1), keepdim=True)
            scale = torch.maximum(own[..., c, :, :], own[..., other, :, :])
            counts = peak > floor * scale  # also false where both maps are zero
            safe = torch.where(counts, peak, torch.ones_like(peak))
            part = torch.where(counts, torch.tanh(alpha * diff / safe).clamp(min=0),
                               torch.zeros_like(diff))
            out[..., c, :, :] += part
    return out
