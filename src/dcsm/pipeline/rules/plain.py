"""Plain back-propagation (Simonyan et al. 2014): the ordinary chain rule."""

from __future__ import annotations

import contextlib

from dcsm.pipeline.rules.base import BackpropRule


class PlainRule(BackpropRule):
    """Ordinary gradients: ``dS/dx`` through ReLU is ``g * [x > 0]``."""

    name = "plain"

    def _enter(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()
