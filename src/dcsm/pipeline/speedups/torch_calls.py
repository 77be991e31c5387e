"""Reading the arguments of ``torch`` calls that a :class:`~torch.overrides.TorchFunctionMode`
intercepts (:mod:`dcsm.pipeline.gradients`' convolutions, :mod:`dcsm.pipeline.speedups.max_pool`'s
pooling)."""

from __future__ import annotations

from typing import Any

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
