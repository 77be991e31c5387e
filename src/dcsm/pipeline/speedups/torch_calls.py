"""Reading the arguments of ``torch`` calls that a :class:`~torch.overrides.TorchFunctionMode`
intercepts (the convolutions of :mod:`dcsm.pipeline.speedups.matmul_conv` and
:mod:`dcsm.pipeline.speedups.head`, the pooling of :mod:`dcsm.pipeline.speedups.max_pool`), and
what a convolution's autograd node keeps of its call (:class:`ConvolutionNode`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import torch
from torch.autograd.graph import Node
from torch.overrides import TorchFunctionMode

CONV2D_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
MAX_POOL2D_ARGS = ("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode",
                   "return_indices")


def call_arguments(names: tuple[str, ...], args: tuple[object, ...],
                   kwargs: dict[str, Any]) -> dict[str, object]:
    """A call's positional ``args`` named by ``names``, and its ``kwargs``, as one dict."""
    return dict(zip(names, args, strict=False)) | kwargs


def pair(v: object) -> tuple[int, int] | None:
    """A two-dimensional size argument (an int, or a sequence of one or two ints) as a pair;
    None for anything else (a string such as ``"same"``, a bool, a longer sequence)."""
    if isinstance(v, tuple | list) and len(v) == 1:
        v = v[0]
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, tuple | list) and len(v) == 2 and all(
            isinstance(i, int) and not isinstance(i, bool) for i in v):
        return (int(v[0]), int(v[1]))
    return None


class Conv2dMode(TorchFunctionMode):
    """A :class:`~torch.overrides.TorchFunctionMode` that hands every ``conv2d`` call to
    :meth:`conv2d` and runs every other call, and each ``conv2d`` that :meth:`conv2d` declines
    (returns None), as it is."""

    def conv2d(self, func: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """The result of the ``conv2d`` call ``func(*args, **kwargs)``, or None to run it as
        it is."""
        return None

    def __torch_function__(
        self, func: Callable[..., Any], types: Any, args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        if func is torch.conv2d or func is torch.nn.functional.conv2d:
            out = self.conv2d(func, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


class ConvolutionNode(Protocol):
    """What PyTorch's backward node of a convolution (``ConvolutionBackward0``) keeps of the
    forward call: its tensors and settings, read to inspect a graph (they are not part of
    PyTorch's typed interface)."""

    _saved_input: torch.Tensor
    _saved_weight: torch.Tensor
    _saved_stride: Sequence[int]
    _saved_padding: Sequence[int]
    _saved_dilation: Sequence[int]
    _saved_transposed: bool
    _saved_groups: int

    @property
    def next_functions(self) -> tuple[tuple[Node | None, int], ...]: ...


def saved_convolution(node: Node) -> ConvolutionNode | None:
    """``node`` read as the backward node of a convolution (``ConvolutionBackward0``); None
    for any other kind of node."""
    return cast(ConvolutionNode, node) if type(node).__name__ == "ConvolutionBackward0" else None
