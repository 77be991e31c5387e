"""A model's state for explaining: eval mode and frozen parameters, always restored.

Below both the adapters (whose probe forward uses it) and :mod:`dcsm.pipeline.gradients` (every
forward
pass), so that neither imports the other for it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn


@contextlib.contextmanager
def inference_state(model: nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters for the block; every flag restored afterwards, also when
    the block raises."""
    params = [(p, p.requires_grad) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p, _ in params:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p, flag in params:
            p.requires_grad_(flag)
        for m, training in modes:
            m.training = training
