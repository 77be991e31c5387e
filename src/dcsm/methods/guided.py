"""``guided``: the input gradient through guided back-propagation (Springenberg et al. 2015).

Simonyan et al.'s map (:mod:`dcsm.methods.simonyan`) with the guided rule
(:class:`dcsm.pipeline.rules.GuidedRule`): only positive derivatives pass back through a ReLU,
and only where its input was positive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from dcsm.methods.maps import explainer_maps
from dcsm.methods.registry import MethodSpec, register
from dcsm.methods.simonyan import InputGradient
from dcsm.methods.single_scale import SETTINGS, Settings
from dcsm.pipeline.adapters.base import ModelAdapter

if TYPE_CHECKING:
    from typing_extensions import Unpack


def build(model: ModelAdapter | nn.Module | str, **settings: Unpack[Settings]) -> InputGradient:
    """The ``guided`` explainer (settings: :data:`dcsm.methods.single_scale.SETTINGS`)."""
    return InputGradient(model, "guided", **settings)


SPEC = register(MethodSpec(
    name="guided",
    description="guided back-propagation (Springenberg et al. 2015): the input gradient "
                "through the guided rule",
    label="guided backprop (dcsm)",
    explainer=build,
    maps=explainer_maps(lambda adapter: InputGradient(adapter, "guided")),
    settings=SETTINGS,
))

__all__ = ["SPEC", "build"]
