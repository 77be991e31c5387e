"""Convolutions with a large frozen weight computed as matrix products, on the CPU in float32.

PyTorch's CPU convolution (oneDNN) re-lays out its weight at every call. For a large weight
used at few positions that costs far more than the arithmetic: VGG-16's fc6 (a 7x7 convolution,
103 M weights) takes 0.29-0.38 s forward at 224 pixels (one position) against 0.03 s as a matrix
product, and its input gradient for three class slots 0.47 s against 0.09 s (one thread).
:class:`MatmulConv` computes such a convolution as one product of the unfolded input with the
weight as it is stored (read once for all positions, images and, under ``torch.func.vmap``,
class slots), and its input gradient as one product and a fold: the same numbers up to the
order of float additions. :func:`large_convs` gives the mode
:func:`~dcsm.pipeline.gradients.forward_pass` runs the model under (:class:`MatmulLargeConvs`);
:data:`MATMUL_LARGE_CONVS` switches it off. ``benchmarks/throughput.py`` times the method with
and without it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn

from dcsm.pipeline.speedups.batch_mode import LARGE_WEIGHT
from dcsm.pipeline.speedups.torch_calls import CONV2D_ARGS, Conv2dMode, call_arguments, pair

_Call = tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple[int, int]]
"""The ``(x, weight, bias, padding)`` of a convolution :class:`MatmulConv` computes."""


class _Context(Protocol):
    """What :class:`MatmulConv` keeps from its forward for its backward."""

    saved_tensors: tuple[torch.Tensor, ...]
    geometry: tuple[tuple[int, ...], tuple[int, int]]  # the input's shape, the padding
    macs: int  # multiply-accumulates of the forward (read by the batch-mode cost model)

    def save_for_backward(self, *tensors: torch.Tensor | None) -> None: ...


#: On the CPU in float32, compute the convolutions with a large frozen weight (at least
#: :data:`~dcsm.pipeline.speedups.batch_mode.LARGE_WEIGHT` elements; stride 1, no dilation, no
#: groups) as matrix products (see :class:`MatmulConv`). False: every convolution as the model
#: calls it.
MATMUL_LARGE_CONVS = True
_MATMUL_MAX_COLUMNS = 32 << 20  # elements of the unfolded input (128 MiB in float32) at most


class MatmulConv(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` as one matrix product of the unfolded
    input with the weight, and its input gradient as one product and a fold.

    PyTorch's CPU convolution (oneDNN) re-lays out the weight at every call, which for a large
    weight used at few positions costs far more than the arithmetic: VGG-16's fc6 (a 7x7
    convolution, 103 M weights) takes 0.29-0.38 s forward at 224 pixels (one position) against
    0.03 s as a product, its input gradient for three class slots 0.47 s against 0.09 s (one
    thread). The product reads the weight as it is stored, once for all rows (positions,
    images and, under ``torch.func.vmap``, class slots).
    """

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                padding: tuple[int, int]) -> torch.Tensor:
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        oh, ow = h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1
        if (kh, kw) == (1, 1) and padding == (0, 0):
            rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        else:
            rows = torch.nn.functional.unfold(x, (kh, kw), padding=padding)
            rows = rows.transpose(1, 2).reshape(n * oh * ow, -1)
        w2 = weight.reshape(o, -1).t()
        out = rows @ w2 if bias is None else torch.addmm(bias, rows, w2)
        # contiguous, as a convolution's output: the model may .view() it
        return out.view(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def setup_context(ctx: _Context, inputs: _Call, output: torch.Tensor) -> None:
        x, weight, _, padding = inputs
        ctx.save_for_backward(weight)
        ctx.geometry = (tuple(x.shape), padding)
        ctx.macs = output.numel() * weight[0].numel()

    @staticmethod
    def backward(ctx: _Context, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (weight,) = ctx.saved_tensors
        (n, c, h, w), padding = ctx.geometry
        o, _, kh, kw = weight.shape
        oh, ow = grad.shape[-2:]
        rows = grad.permute(0, 2, 3, 1).reshape(n * oh * ow, o) @ weight.reshape(o, -1)
        if (kh, kw) == (1, 1) and padding == (0, 0):
            return rows.view(n, h, w, c).permute(0, 3, 1, 2), None, None, None
        cols = rows.view(n, oh * ow, -1).transpose(1, 2)
        return (torch.nn.functional.fold(cols, (h, w), (kh, kw), padding=padding),
                None, None, None)


def _matmul_conv_call(args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Call | None:
    """``(x, weight, bias, padding)`` of an ``F.conv2d`` call :class:`MatmulConv` should
    compute, or None."""
    call = call_arguments(CONV2D_ARGS, args, kwargs)
    x, weight, bias = call.get("input"), call.get("weight"), call.get("bias")
    padding = call.get("padding", 0)
    padding = (0, 0) if padding == "valid" else pair(padding)
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) \
            or padding is None or pair(call.get("stride", 1)) != (1, 1) \
            or pair(call.get("dilation", 1)) != (1, 1) or call.get("groups", 1) != 1:
        return None
    if x.ndim != 4 or weight.ndim != 4 or x.device.type != "cpu" \
            or x.dtype != torch.float32 or weight.dtype != torch.float32 \
            or weight.numel() < LARGE_WEIGHT or weight.requires_grad \
            or (bias is not None and (not isinstance(bias, torch.Tensor) or bias.requires_grad
                                      or bias.dtype != torch.float32)):
        return None
    kh, kw = weight.shape[2:]
    positions = (x.shape[2] + 2 * padding[0] - kh + 1) * (x.shape[3] + 2 * padding[1] - kw + 1)
    if positions < 1 or ((kh, kw) != (1, 1) or padding != (0, 0)) and \
            x.shape[0] * positions * weight[0].numel() > _MATMUL_MAX_COLUMNS:
        return None
    return x, weight, bias, padding


def _has_large_weight(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` has
    :data:`~dcsm.pipeline.speedups.batch_mode.LARGE_WEIGHT` elements or more (else
    :class:`MatmulLargeConvs` would only cost time)."""
    return any(p.numel() >= LARGE_WEIGHT for p in model.parameters())


class MatmulLargeConvs(Conv2dMode):
    """Routes the ``F.conv2d`` calls :func:`_matmul_conv_call` accepts to :class:`MatmulConv`."""

    def conv2d(self, func: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """The call as matrix products where :func:`_matmul_conv_call` accepts it, else
        None."""
        call = _matmul_conv_call(args, kwargs)
        if call is None:
            return None
        if torch.is_grad_enabled() and call[0].requires_grad:
            return MatmulConv.apply(*call)
        return MatmulConv.forward(*call)


def large_convs(model: nn.Module, x: torch.Tensor,
                autocast: torch.dtype | None = None) -> contextlib.AbstractContextManager[object]:
    """The mode to run ``model`` on ``x`` under: :class:`MatmulLargeConvs` where it can pay (on
    the CPU, without autocast, for a model with a large weight, :data:`MATMUL_LARGE_CONVS` on),
    else one that changes nothing."""
    if MATMUL_LARGE_CONVS and autocast is None and x.device.type == "cpu" \
            and _has_large_weight(model):
        return MatmulLargeConvs()
    return contextlib.nullcontext()
