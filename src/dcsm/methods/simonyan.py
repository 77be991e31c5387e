r"""``simonyan``: the input gradient of the class score (Simonyan et al. 2014).

The map of class :math:`c` is the largest absolute derivative over the colour channels,
:math:`M^c_{x,y} = \max_k |\partial S_c / \partial I_{x,y,k}|`, divided by its maximum; the
``guided`` method (:mod:`dcsm.methods.guided`) is the same with guided back-propagation.
Both run once at scale 1 (:mod:`dcsm.methods.single_scale`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.methods.maps import explainer_maps
from dcsm.methods.registry import MethodSpec, register
from dcsm.methods.single_scale import SETTINGS, Settings, SingleScale
from dcsm.pipeline.adapters import ModelOptions
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.gradients import BatchMode, ForwardPass, class_gradients, forward_pass
from dcsm.pipeline.images import DEFAULT_MAX_SIDE
from dcsm.pipeline.layer_maps import upsample
from dcsm.pipeline.rules import BackpropRule, get_rule

if TYPE_CHECKING:
    from typing_extensions import Unpack


class InputGradient(SingleScale):
    """Input-gradient saliency: ``plain`` is Simonyan et al. 2014, ``guided`` guided backprop."""

    def __init__(self, model: ModelAdapter | nn.Module | str,
                 backprop: str | BackpropRule = "plain", batch: BatchMode = "loop",
                 max_side: int | None = DEFAULT_MAX_SIDE, precision: str = "float32",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 **model_options: Unpack[ModelOptions]) -> None:
        """Build the adapter and the backward's rule (the arguments: the class's)."""
        super().__init__(model, batch, max_side, precision, max_pixels, get_rule(backprop),
                         **model_options)

    rule: BackpropRule

    @property
    def method(self) -> str:
        """``simonyan`` with the plain rule, ``guided`` with guided back-propagation."""
        return "simonyan" if self.rule.name == "plain" else "guided"

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {**super().parameters(), "backprop": self.rule.name, "wrt": "input"}

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        return forward_pass(self.adapter, x, [], self.rule, input_grad=True,
                            autocast=self.autocast)

    def _maps(self, fp: ForwardPass, targets: torch.Tensor, size: tuple[int, int]
              ) -> torch.Tensor:
        (g,) = class_gradients(fp, targets, [fp.input], self.batch)  # (K, N, 3, h, w)
        with torch.no_grad():
            m = g.float().abs().amax(dim=2).transpose(0, 1)  # max |.| over colour channels
            return upsample(m, size)


def build(model: ModelAdapter | nn.Module | str, **settings: Unpack[Settings]) -> InputGradient:
    """The ``simonyan`` explainer (settings: :data:`dcsm.methods.single_scale.SETTINGS`)."""
    return InputGradient(model, "plain", **settings)


SPEC = register(MethodSpec(
    name="simonyan",
    description="Simonyan et al. 2014: the input gradient of the class score, max |.| over "
                "the colour channels",
    label="Simonyan et al. (dcsm)",
    explainer=build,
    maps=explainer_maps(lambda adapter: InputGradient(adapter, "plain")),
    settings=SETTINGS,
    segmenter="grabcut",
))

__all__ = ["SPEC", "InputGradient", "build"]
