"""What one forward pass leaves for the backward (:class:`ForwardPass`) and which classes are
back-propagated through it (:data:`Targets`, one class per slot and image).

The two types the gradients (:mod:`dcsm.pipeline.gradients`) and their speed-ups
(:mod:`dcsm.pipeline.speedups.head`) share; here, below both, so that neither imports the
other's module to name them. :mod:`dcsm.pipeline.gradients` exports them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from dcsm.errors import DcsmError


@dataclass
class ForwardPass:
    """The score map of one forward pass and the tensors gradients can be taken at.

    ``score_map`` is ``(N, C, h, w)``; a model returning ``(N, C)`` logits gives ``h = w = 1``.
    ``activations`` are the layers' outputs as the model returns them (see
    :mod:`dcsm.pipeline.layouts`).
    """

    input: torch.Tensor
    score_map: torch.Tensor
    activations: dict[str, torch.Tensor]


Targets = Sequence[int] | torch.Tensor
"""Classes to back-propagate: K indices shared by every image, or an (N, K) index tensor."""


def target_matrix(targets: Targets, batch: int) -> torch.Tensor:
    """``targets`` as an (N, K) long tensor on the CPU."""
    t = torch.as_tensor(targets, dtype=torch.long).cpu()
    if t.ndim == 1:
        t = t.unsqueeze(0).expand(batch, -1)
    if t.ndim != 2 or t.shape[0] != batch:
        raise DcsmError(f"targets must be K indices or an ({batch}, K) tensor, got shape "
                        f"{tuple(t.shape)}")
    return t
