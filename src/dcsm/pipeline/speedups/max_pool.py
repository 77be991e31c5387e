"""Max pooling on the CPU through PyTorch's channels-last kernel.

On this project's CPU (PyTorch 2.14, one thread), max pooling of a contiguous ``(N, C, H, W)``
tensor takes about 16 times as long as PyTorch's channels-last kernel on the same data: 6.1 ms
against 0.33 ms for SqueezeNet's first pooling at 224 pixels (64 x 111 x 111, 3x3, stride 2).
With the two layout conversions the channels-last way is still 1.4 to 7.6 times faster on the
pooling layers of SqueezeNet and VGG-16. Its backward for a channels-last input is slow, while
the ``(N, C, H, W)`` backward from saved indices is fast. :class:`FastMaxPool` takes the better of
each: the forward on a channels-last copy, the output and the indices (positions within each
plane, the same numbers in either layout) made contiguous again, and PyTorch's own backward from
those indices. Values, indices and gradients are those of ``F.max_pool2d`` exactly, ties
included: ``tests/pipeline/speedups/test_max_pool.py`` checks them on inputs full of ties.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dcsm.pipeline.speedups.torch_calls import MAX_POOL2D_ARGS, call_arguments, pair

Pair = list[int]
# The arguments of :func:`max_pool2d` after ``x``: kernel, stride, padding, dilation, ceil_mode.
PoolCall = tuple[torch.Tensor, Pair, Pair, Pair, Pair, bool]

#: On the CPU, run max pooling through PyTorch's channels-last kernel (:class:`FastMaxPool`).
#: False: every pooling as the model calls it.
FAST_MAX_POOL = True


class _ChannelsLastMaxPool(torch.autograd.Function):
    """``max_pool2d`` forward in channels-last; the ``(N, C, H, W)`` backward from indices."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair,
                dilation: Pair, ceil_mode: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out, idx = torch.ops.aten.max_pool2d_with_indices(
            x.contiguous(memory_format=torch.channels_last), kernel, stride, padding, dilation,
            ceil_mode)
        return out.contiguous(), idx.contiguous()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...],  # noqa: ANN401
                      ) -> None:
        x, kernel, stride, padding, dilation, ceil_mode = inputs
        ctx.save_for_backward(x, output[1])
        ctx.params = (kernel, stride, padding, dilation, ceil_mode)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor, _: torch.Tensor) -> tuple[Any, ...]:  # noqa: ANN401
        x, idx = ctx.saved_tensors
        gx = torch.ops.aten.max_pool2d_with_indices_backward(
            grad.contiguous(), x, *ctx.params, idx)
        return gx, None, None, None, None, None


def max_pool2d(x: torch.Tensor, kernel: Pair, stride: Pair, padding: Pair, dilation: Pair,
               ceil_mode: bool) -> torch.Tensor:
    """``F.max_pool2d(x, ...)`` of a contiguous ``(N, C, H, W)`` CPU tensor, computed as the
    module docstring says."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        pooled: torch.Tensor = torch.ops.aten.max_pool2d(
            x.contiguous(memory_format=torch.channels_last), kernel, stride, padding, dilation,
            ceil_mode)
        return pooled.contiguous()
    out_and_indices: tuple[torch.Tensor, torch.Tensor] = _ChannelsLastMaxPool.apply(
        x, kernel, stride, padding, dilation, ceil_mode)
    return out_and_indices[0]


def _call(args: tuple[object, ...], kwargs: dict[str, Any]) -> PoolCall | None:
    """``(x, kernel, stride, padding, dilation, ceil_mode)`` of a pooling call to reroute."""
    call = call_arguments(MAX_POOL2D_ARGS, args, kwargs)
    x = call.get("input")
    if call.get("return_indices", False) or not isinstance(x, torch.Tensor) or x.ndim != 4 \
            or x.device.type != "cpu" or not x.is_floating_point() or x.shape[1] < 2 \
            or not x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
        return None
    kernel = pair(call.get("kernel_size"))
    stride = call.get("stride")
    stride = kernel if stride is None or stride == [] or stride == () else pair(stride)
    padding = pair(call.get("padding", 0))
    dilation = pair(call.get("dilation", 1))
    ceil_mode = call.get("ceil_mode", False)
    if kernel is None or stride is None or padding is None or dilation is None \
            or not isinstance(ceil_mode, bool):
        return None
    return x, [*kernel], [*stride], [*padding], [*dilation], ceil_mode


class FastMaxPool(TorchFunctionMode):
    """Routes the CPU ``F.max_pool2d`` / ``torch.max_pool2d`` calls of contiguous 4-d tensors
    without ``return_indices`` to :func:`max_pool2d`; every other call runs as made."""

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),  # noqa: ANN401,E501
                           kwargs: dict[str, Any] | None = None) -> Any:  # noqa: ANN401
        kwargs = kwargs or {}
        if func is F.max_pool2d or func is torch.max_pool2d:
            call = _call(args, kwargs)
            if call is not None:
                return max_pool2d(*call)
        return func(*args, **kwargs)


def fast_pooling(x: torch.Tensor) -> contextlib.AbstractContextManager[object]:
    """The mode to run a model on ``x`` under: :class:`FastMaxPool` on the CPU
    (:data:`FAST_MAX_POOL` on), else one that changes nothing."""
    if FAST_MAX_POOL and x.device.type == "cpu":
        return FastMaxPool()
    return contextlib.nullcontext()
