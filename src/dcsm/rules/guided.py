r"""Guided back-propagation (Springenberg et al. 2015).

Through a rectifier, the ordinary backward is ``g_in = g_out * [x > 0]``; guided
back-propagation also drops negative gradients:

.. math::

    g_{in} = \max(g_{out}, 0) \cdot [x > 0]

and for ReLU6 (a rectifier clipped at 6) ``g_in = max(g_out, 0) * [0 < x < 6]``.

Implementation: a :class:`torch.overrides.TorchFunctionMode` intercepts every rectifier call made
while the rule is active (``nn.ReLU``, ``nn.ReLU6``, in-place or not, ``F.relu``, ``F.relu6``,
``F.hardtanh(x, 0, t)``, ``torch.relu``, ``Tensor.relu`` and their in-place ``_`` variants) and
computes it with an autograd function that carries the guided backward. No hook is registered and
no module is touched, so functional calls inside ``forward`` are covered as well as modules, and
leaving the context (normally or by an exception) restores plain behaviour completely.
In-place calls are computed out of place and copied back, so autograd never sees a rectifier
overwrite a tensor that the guided backward still needs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dcsm.rules.base import BackpropRule


class _GuidedRectifier(torch.autograd.Function):
    """clamp(x, 0, upper) forward; guided backward."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, upper: float | None) -> torch.Tensor:  # type: ignore[override]
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:  # noqa: ANN401
        x, upper = inputs
        mask = x > 0 if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(mask)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]  # noqa: ANN401,E501
        (mask,) = ctx.saved_tensors
        return grad.clamp(min=0) * mask, None


def guided_relu(x: torch.Tensor, upper: float | None = None) -> torch.Tensor:
    """``clamp(x, 0, upper)`` whose backward is guided."""
    return _GuidedRectifier.apply(x, upper)


def _relu_upper(func: Callable[..., Any], args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> tuple[bool, float | None, bool]:
    """(is a rectifier, its upper clip, in place) for an intercepted call."""
    if func in (F.relu, torch.relu, torch.Tensor.relu):
        return True, None, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (torch.relu_, torch.Tensor.relu_, F.relu_):
        return True, None, True
    if func is F.relu6:
        return True, 6.0, bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
    if func in (F.hardtanh, F.hardtanh_):
        lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
        hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
        inplace = func is F.hardtanh_ or bool(
            kwargs.get("inplace", args[3] if len(args) > 3 else False))
        if lo == 0 and hi > 0:
            return True, float(hi), inplace
    return False, None, False


class _GuidedMode(TorchFunctionMode):
    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),  # noqa: ANN401,E501
                           kwargs: dict[str, Any] | None = None) -> Any:  # noqa: ANN401
        kwargs = kwargs or {}
        is_rectifier, upper, inplace = _relu_upper(func, args, kwargs)
        if not is_rectifier or not isinstance(args[0], torch.Tensor):
            return func(*args, **kwargs)
        x = args[0]
        if not torch.is_grad_enabled() or not x.requires_grad:
            return func(*args, **kwargs)
        out = guided_relu(x, upper)
        if inplace:
            return x.copy_(out)
        return out


class GuidedRule(BackpropRule):
    """Guided back-propagation through ReLU, ReLU6 and ``hardtanh(x, 0, t)``."""

    name = "guided"

    def _enter(self) -> contextlib.AbstractContextManager[None]:
        return _GuidedMode()
