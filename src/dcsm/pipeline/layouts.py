r"""Layer output layouts: from what a layer returns to a ``(N, C, h, w)`` grid of locations.

The method reads, at each location of a layer, the largest absolute derivative over its channels.
Convolutional layers return ``(N, C, h, w)``. Other families do not:

* ``"tokens"``: vision transformers (ViT, DeiT, EVA, ...) return ``(N, T, D)`` tokens: ``P``
  prefix tokens (a class token, distillation or register tokens) followed by ``h * w`` patch
  tokens in row-major order. ``"tokens:P"`` states ``P``.
* ``"nhwc"``: channel-last layers (timm's Swin stages, some ConvNeXt and MLP-Mixer variants)
  return ``(N, h, w, C)``.
* ``"nchw"``: the convolutional layout, returned as is.
* a callable ``f(t) -> (N, C, h, w)`` for anything else.

``"auto"`` (the default) decides from the shape and the input size ``(H, W)`` of the forward pass:

* 3-d outputs are tokens. A grid fits if an integer patch stride ``s`` gives it,
  ``h = H / s`` and ``w = W / s`` (rounded down, or up for padded patch embeddings), with
  ``P = T - h w`` prefix tokens, at most 16. Of the grids that fit, the one with the fewest prefix
  tokens (the most patch tokens) is taken; if two grids share that count, or none fits, the error
  asks for ``"tokens:P"`` or a function.
* 4-d outputs are NCHW unless that reading gives the two spatial sides different strides (say
  ``(N, 7, 7, 768)`` for a 224 x 224 input: 32 and 0.29) while the channel-last reading is
  consistent. A tensor both readings fit (``(N, 7, 7, 7)``) is taken as NCHW.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import torch

from dcsm.errors import DcsmError

LayoutSpec: TypeAlias = str | Callable[[torch.Tensor], torch.Tensor]
LAYOUTS: tuple[str, ...] = ("auto", "nchw", "nhwc", "tokens")
MAX_PREFIX_TOKENS = 16


def check_layout(spec: LayoutSpec) -> LayoutSpec:
    """``spec`` if it names a layout (or is a callable); DcsmError otherwise."""
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise DcsmError(f"a layout is a name or a function, got {type(spec).__name__}")
    if spec in LAYOUTS:
        return spec
    if spec.startswith("tokens:"):
        tail = spec.split(":", 1)[1]
        if tail.isdigit():
            return spec
    raise DcsmError(f"unknown layout '{spec}'; known: {', '.join(LAYOUTS)}, tokens:P, "
                    "or a function returning (N, C, h, w)")


def _sides(size: int, stride: int) -> set[int]:
    return {size // stride, -(-size // stride)}


def token_grids(tokens: int, input_hw: tuple[int, int]) -> list[tuple[int, int, int]]:
    """Every ``(prefix, h, w)`` with ``prefix + h w = tokens`` for some integer patch stride."""
    height, width = input_hw
    found: set[tuple[int, int, int]] = set()
    for stride in range(1, max(height, width) + 1):
        for h in _sides(height, stride):
            for w in _sides(width, stride):
                prefix = tokens - h * w
                if h >= 1 and w >= 1 and 0 <= prefix <= MAX_PREFIX_TOKENS:
                    found.add((prefix, h, w))
        if height // stride * (width // stride) == 0:
            break
    return sorted(found)


def _consistent(h: int, w: int, input_hw: tuple[int, int]) -> bool:
    """Whether an ``h x w`` grid is the input subsampled by about the same stride per side."""
    if h < 1 or w < 1:
        return False
    sh, sw = input_hw[0] / h, input_hw[1] / w
    slack = 1.0 + 2.0 / min(h, w) + 0.05
    return max(sh, sw) / min(sh, sw) <= slack


def resolve_layout(shape: tuple[int, ...], input_hw: tuple[int, int],
                   spec: LayoutSpec = "auto", name: str = "layer") -> LayoutSpec:
    """The concrete layout (``nchw``, ``nhwc``, ``tokens:P`` or the callable) of an output."""
    if callable(spec):
        return spec
    if spec == "auto":
        if len(shape) == 3:
            grids = token_grids(shape[1], input_hw)
            grids = [g for g in grids if grids and g[0] == grids[0][0]]
            if len(grids) != 1:
                what = "no" if not grids else f"{len(grids)}"
                raise DcsmError(
                    f"layer '{name}' returns {tuple(shape)} tokens and {what} patch grid fits a "
                    f"{input_hw[0]}x{input_hw[1]} input; give its layout as 'tokens:P' (P prefix "
                    "tokens) or a function returning (N, C, h, w)")
            return f"tokens:{grids[0][0]}"
        if len(shape) == 4:
            if not _consistent(shape[2], shape[3], input_hw) and \
                    _consistent(shape[1], shape[2], input_hw):
                return "nhwc"
            return "nchw"
        raise DcsmError(f"layer '{name}' returns shape {tuple(shape)}: no grid of locations "
                        "(expected (N, C, h, w), (N, h, w, C) or (N, tokens, D))")
    if spec == "tokens":
        return resolve_layout(shape, input_hw, "auto", name) if len(shape) == 3 else spec
    return spec


def to_grid(t: torch.Tensor, layout: LayoutSpec, input_hw: tuple[int, int],
            name: str = "layer") -> torch.Tensor:
    """``t`` (a layer's output or its derivative, with any leading batch dimensions folded into
    the first) as ``(N, C, h, w)`` for a resolved ``layout``."""
    if callable(layout):
        out = layout(t)
        if not isinstance(out, torch.Tensor) or out.ndim != 4:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise DcsmError(f"the reshape function of layer '{name}' returned {got}, "
                            "not (N, C, h, w)")
        return out
    if layout == "nchw":
        if t.ndim != 4:
            raise DcsmError(f"layer '{name}' returns shape {tuple(t.shape)}, not (N, C, h, w)")
        return t
    if layout == "nhwc":
        if t.ndim != 4:
            raise DcsmError(f"layer '{name}' returns shape {tuple(t.shape)}, not (N, h, w, C)")
        return t.permute(0, 3, 1, 2)
    if isinstance(layout, str) and layout.startswith("tokens"):
        if t.ndim != 3:
            raise DcsmError(f"layer '{name}' returns shape {tuple(t.shape)}, not (N, T, D)")
        prefix = int(layout.split(":", 1)[1]) if ":" in layout else 0
        grids = [g for g in token_grids(t.shape[1], input_hw) if g[0] == prefix]
        if len(grids) != 1:
            raise DcsmError(f"layer '{name}': {t.shape[1]} tokens with {prefix} prefix tokens "
                            f"do not make one patch grid of a {input_hw[0]}x{input_hw[1]} input")
        _, h, w = grids[0]
        patches = t[:, prefix:, :]
        return patches.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)
    raise DcsmError(f"unknown layout '{layout}' for layer '{name}'")
