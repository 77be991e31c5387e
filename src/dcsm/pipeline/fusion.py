r"""Multi-scale, multi-layer fusion of class saliency maps.

The paper's Eq. 3 averages the per-layer maps of every scale after a saturation with
:math:`\alpha = 3`:

.. math::

    M^c_{x,y} = \frac{1}{|S||L|} \sum_{j \in S} \sum_{l \in L} \tanh(\alpha M^c_{i,x,y})

and, of the single-layer maps, says: "each value of the saliency map is normalized by
:math:`\tanh(\alpha M_{i,x,y} / \max_{x,y} M_{i,x,y})` for visualization in Fig.2 and all the
other figures with alpha = 3". Eq. 3 itself has no division by the maximum. dcsm's reading
(:class:`PaperFusion`) puts the division inside Eq. 3, per layer and scale, on the contrasted
map :math:`\tilde M` of Eq. 2:

.. math::

    M^c_{x,y} = \frac{1}{|S||L|} \sum_{j \in S} \sum_{l \in L}
        \tanh\Big(\alpha \frac{\tilde M^c_{l,x,y}}{\max_{x,y} \tilde M^c_{l,x,y}}\Big)

because :math:`\tanh(\alpha M)` on raw derivatives would not be the same function from one
model, layer or image to the next: derivatives have no fixed scale (it depends on the model, the
layer, the class score and the image, and differs by orders between them), so the tanh would be
nearly linear for some layers and saturated for others, and the average would be ruled by the
layers with the largest derivatives. Divided by its maximum, each layer's map spans
[0, tanh alpha] and weighs the same, and alpha sets the saturation as in the paper's figures.
The authors' released code divides by maxima too (``dcsm.m`` lines 111 and 131), in its own
places. This is dcsm's reading, not the paper's equation. Each scale's maps are computed at the
input image's size, so the average is over aligned maps. The result lies in
:math:`[0, \tanh \alpha]`.

The released code instead sums its pairwise contrasts over layers, other classes and scales,
then normalises the sum once: :math:`\tanh(\alpha\, s / \max s)`, shown divided by its maximum
(``dcsm.m`` lines 128-136, :mod:`dcsm.pipeline.presets`).
"""

from __future__ import annotations

import torch

from dcsm.pipeline.contrast import CONTRASTS, pairwise_saturated_contrast


def tanh_normalize(maps: torch.Tensor, alpha: float) -> torch.Tensor:
    """``tanh(alpha * M / max M)`` per map over its last two dimensions; 0 where max <= 0.

    One new map and two passes over it: the factor ``alpha / max M`` is formed per map first.
    """
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    positive = peak > 0
    scale = alpha / torch.where(positive, peak, torch.ones_like(peak))
    return torch.tanh_(maps * scale).masked_fill_(~positive, 0.0)


def sharpen(maps: torch.Tensor, gamma: float) -> torch.Tensor:
    r"""Each map raised to ``gamma`` relative to its own maximum, the maximum kept:

    .. math::

        M' = \max M \cdot \Big(\frac{M}{\max M}\Big)^{\gamma}

    With ``gamma > 1`` the weak evidence that every location of a derivative map carries (the
    floor the fused mean of tanh-normalised maps keeps) shrinks faster than the strong: the
    map's mass moves to where the evidence is, its order of locations (and so its argmax and any
    ranking measure) is unchanged. ``gamma = 1`` returns the maps unchanged.
    """
    if gamma == 1:
        return maps
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    safe = torch.where(peak > 0, peak, torch.ones_like(peak))
    return (maps.clamp(min=0) / safe).pow(gamma) * peak.clamp(min=0)


class PaperFusion:
    """Eq. 2 (optional) then Eq. 3 as dcsm reads it: the mean over layers and scales of each
    contrasted map normalised by its own maximum, ``tanh(alpha M / max M)`` (see the module).

    ``contrast`` is ``"sum"`` (Eq. 2) or ``"strongest"`` (only the strongest other class).
    """

    def __init__(self, num_layers: int, alpha: float, subtract: bool = True,
                 keep_layers: bool = False, contrast: str = "sum") -> None:
        self.alpha = alpha
        self.subtract = subtract
        self.contrast = CONTRASTS[contrast]
        self.total: torch.Tensor | None = None
        self.count = 0
        self.per_layer: list[torch.Tensor | None] | None = (
            [None] * num_layers if keep_layers else None)
        self.scales_seen = 0

    def add(self, layer: int, maps: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Add one layer's maps ``(..., K, H, W)`` at one scale (``active`` is not used here)."""
        contrasted = self.contrast(maps) if self.subtract else maps
        normalized = tanh_normalize(contrasted, self.alpha)
        self.total = normalized if self.total is None else self.total + normalized
        self.count += 1
        if self.per_layer is not None:
            prev = self.per_layer[layer]
            self.per_layer[layer] = normalized if prev is None else prev + normalized

    def result(self) -> torch.Tensor:
        """Fused maps ``(..., K, H, W)``."""
        assert self.total is not None, "no maps were added"
        return self.total / self.count

    def layer_results(self) -> list[torch.Tensor] | None:
        """Per-layer maps averaged over scales (for the paper's Fig. 2), if kept."""
        if self.per_layer is None:
            return None
        scales = self.count // len(self.per_layer)
        return [m / scales for m in self.per_layer if m is not None]


class ReleasedFusion:
    """The released MatConvNet code: summed saturated pairwise contrasts, normalised once.

    ``active`` marks the classes that pass the score threshold at the scale being added; only
    they receive contributions at that scale (all of them are subtracted).
    """

    def __init__(self, num_layers: int, alpha: float, subtract: bool = True,
                 keep_layers: bool = False, contrast: str = "pairwise") -> None:
        self.alpha = alpha
        self.subtract = subtract
        self.total: torch.Tensor | None = None
        self.per_layer: list[torch.Tensor | None] | None = (
            [None] * num_layers if keep_layers else None)

    def add(self, layer: int, maps: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Add one layer's maps ``(..., K, H, W)`` at one scale; ``active`` is ``(..., K)``."""
        if self.subtract and maps.shape[-3] > 1:
            part = pairwise_saturated_contrast(maps, self.alpha)
        else:
            part = tanh_normalize(maps, self.alpha)
        if active is not None:
            part = part * active.to(part.dtype)[..., None, None]
        self.total = part if self.total is None else self.total + part
        if self.per_layer is not None:
            prev = self.per_layer[layer]
            self.per_layer[layer] = part if prev is None else prev + part

    def _finish(self, s: torch.Tensor) -> torch.Tensor:
        m = tanh_normalize(s, self.alpha)
        peak = m.amax(dim=(-2, -1), keepdim=True)
        return torch.where(peak > 0, m / peak.clamp(min=1e-12), m)

    def result(self) -> torch.Tensor:
        """Fused maps ``(..., K, H, W)`` in [0, 1]."""
        assert self.total is not None, "no maps were added"
        return self._finish(self.total)

    def layer_results(self) -> list[torch.Tensor] | None:
        """Per-layer sums, each normalised as the final map is."""
        if self.per_layer is None:
            return None
        return [self._finish(m) for m in self.per_layer if m is not None]
