"""The classifier at the top of the graph, used for fewer FLOPs in the backward and the forward.

Where a model's score map comes from a 1x1 convolution ``z = W h + b`` (the fully convolutional
heads of SqueezeNet, EfficientNet-Lite0 and VGG-16's fc8), two things need not be computed:

* in the backward, the classifier itself: class c's derivative at ``h`` is ``W[c]`` times the
  derivative at ``z[:, c]``, so each class slot's backward starts at ``h`` with that
  (:class:`ClassHead`, found by :func:`class_head`), which saves about a third of each class's
  backward FLOPs on SqueezeNet and EfficientNet-Lite0;
* in the forward of every scale after the one the candidates come from, the rows of the classes
  no slot needs: the classifier runs on ``W[rows]`` alone (:class:`HeadRestriction`, from
  :func:`head_restriction`), a fifth of SqueezeNet's forward at 1000 classes.

Both give the numbers of the full computation (up to the order of float additions); where the
model does not let them apply cleanly (operations after the classifier that mix the classes, a
per-class tensor, two classifier-shaped convolutions), the full computation runs instead.
``tests/pipeline/speedups/test_head.py`` checks both against the full model;
``benchmarks/throughput.py`` counts the FLOPs they save.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.autograd.graph import GradientEdge, Node

from dcsm.errors import DcsmError
from dcsm.pipeline.passes import ForwardPass, Targets, target_matrix
from dcsm.pipeline.speedups.torch_calls import (
    CONV2D_ARGS,
    Conv2dMode,
    call_arguments,
    saved_convolution,
)


@dataclass
class ClassHead:
    """The classifier at the top of the graph: a 1x1 convolution ``z = W h + b`` (any tail of
    ops after it must keep the classes apart, which is checked on the gradients).

    The derivative of class c's score map at ``h`` is ``W[c]`` times the (one-channel) derivative
    at ``z[:, c]``, so the backward can start at ``h`` with that, instead of running a
    ``C -> C_in`` transposed convolution per class slot (SqueezeNet's and EfficientNet-Lite0's
    1000-class heads: about a third of the FLOPs of each class's backward).
    """

    node: Node  # the convolution's backward node
    input: torch.Tensor  # h, as the convolution saw it (autocast: its cast copy)
    weight: torch.Tensor  # (C, C_in)
    tail: bool  # operations between z and the score map

    def seeds(self, fp: ForwardPass, t: torch.Tensor, k: int) -> torch.Tensor | None:
        """The derivative at ``h`` of slot k's score maps; None if the tail mixes classes."""
        n = t.shape[0]
        rows = torch.arange(n, device=self.weight.device)
        cls = t[:, k].to(self.weight.device)
        w = self.weight.detach()[cls][:, :, None, None]  # (N, C_in, 1, 1)
        out = torch.empty_like(self.input, requires_grad=False)
        if not self.tail:  # z is the score map: its seed is 1 at every location of class c
            with torch.no_grad():
                return out.copy_(w.expand_as(out))
        seed = torch.zeros_like(fp.score_map)
        seed[rows, cls] = 1.0
        (gz,) = torch.autograd.grad(fp.score_map, GradientEdge(self.node, 0), grad_outputs=seed,
                                    retain_graph=True)
        if gz.shape[0] != n or gz.shape[1] != self.weight.shape[0]:
            return None
        with torch.no_grad():
            mass = gz.abs().sum(dim=tuple(range(2, gz.ndim)))  # (N, C)
            mass[rows, cls] = 0
            if bool(mass.any()):
                return None
            return torch.mul(w, gz[rows, cls].unsqueeze(1), out=out)


def class_head(fp: ForwardPass, wrt: Sequence[torch.Tensor]) -> ClassHead | None:
    """The 1x1 convolution that computes the score map (see :class:`ClassHead`), or None.

    Found by following the score map's autograd graph down (at most 16 operations) until
    every path has reached the same convolution (an in-place ReLU after it, as in SqueezeNet,
    makes two); None if no single one is reached, if it is strided, padded, grouped or
    transposed, if its weight or bias carry a graph, or if one of ``wrt`` lies above it.
    """
    tail: list[Node] = []
    seen: dict[int, Node] = {}  # keeps the node objects alive, so ids stay unique
    frontier = [fp.score_map.grad_fn]
    node: Node | None = None
    while frontier:
        current = frontier.pop()
        if current is None or id(current) in seen:
            continue
        seen[id(current)] = current
        if saved_convolution(current) is not None:
            if node is not None:
                return None  # two convolutions: no single classifier
            node = current
            continue
        if type(current).__name__ == "AccumulateGrad" or len(tail) >= 16:
            return None  # a path that bypasses any convolution, or too far down
        tail.append(current)
        frontier.extend(n for n, _ in current.next_functions if n is not None)
    conv = None if node is None else saved_convolution(node)
    if node is None or conv is None:
        return None
    try:
        weight, h = conv._saved_weight, conv._saved_input
        simple = (not conv._saved_transposed and conv._saved_groups == 1
                  and all(v == 1 for v in conv._saved_stride)
                  and all(v == 0 for v in conv._saved_padding))
    except (AttributeError, RuntimeError):
        return None
    if not simple or weight.ndim != 4 or tuple(weight.shape[2:]) != (1, 1) or h.ndim != 4 \
            or not h.requires_grad or weight.shape[0] != fp.score_map.shape[1] \
            or any(n is not None for n, _ in node.next_functions[1:]):
        return None
    above = [node, *tail]
    if any(t is fp.score_map or any(t.grad_fn is a for a in above) for t in wrt):
        return None
    return ClassHead(node, h, weight[:, :, 0, 0], bool(tail))


@dataclass
class HeadRestriction:
    """Which output channels of the classifier (:class:`ClassHead`) a forward computes.

    The method needs every class's score only at the scale its candidates come from; at every
    other scale only the score maps of the classes in the slots are back-propagated, and the
    classifier's other rows (991 of SqueezeNet's 1000 for three classes) would be computed for
    nothing. With a restriction the classifier's convolution runs with ``weight[rows]`` and
    ``bias[rows]``: ``z_rows = W[rows] h + b[rows]``, the same numbers as rows of the full
    ``z`` (up to the order of float additions), and the backward sees a ``len(rows)``-class
    model, whose slots are ``targets``.
    """

    shape: tuple[int, ...]  # the classifier weight's (C, C_in, 1, 1)
    rows: torch.Tensor  # (U,) the classes the slots of any image need, ascending
    targets: torch.Tensor  # (N, K) each slot's class as a position in rows


class HeadRestrictionFailed(DcsmError):
    """The model did not run cleanly with a restricted classifier (see :func:`forward_pass`)."""


def head_restriction(fp: ForwardPass, wrt: Sequence[torch.Tensor],
                     targets: Targets) -> HeadRestriction | None:
    """A :class:`HeadRestriction` to the classes of ``targets`` for the model that gave ``fp``,
    or None where its score map does not come from one 1x1 convolution through operations
    that keep the classes apart (checked on ``fp`` as :class:`ClassHead` does), or where the
    slots need every class anyway."""
    top = class_head(fp, wrt)
    if top is None:
        return None
    t = target_matrix(targets, fp.score_map.shape[0])
    rows, positions = torch.unique(t, sorted=True, return_inverse=True)
    if t.shape[1] == 0 or len(rows) >= top.weight.shape[0]:
        return None
    if top.tail and top.seeds(fp, t, 0) is None:  # the operations after z mix the classes
        return None
    return HeadRestriction((*top.weight.shape, 1, 1), rows, positions.reshape(t.shape))


class RestrictHead(Conv2dMode):
    """Runs the one ``F.conv2d`` call with the classifier's weight shape on ``rows`` only."""

    def __init__(self, head: HeadRestriction) -> None:
        super().__init__()
        self.head = head
        self.calls = 0

    def conv2d(self, func: Callable[..., Any], args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
        """The classifier's call on ``rows`` only; None for any other convolution."""
        call = call_arguments(CONV2D_ARGS, args, kwargs)
        weight, bias = call.get("weight"), call.get("bias")
        if not (isinstance(weight, torch.Tensor) and tuple(weight.shape) == self.head.shape):
            return None
        self.calls += 1
        rows = self.head.rows.to(weight.device)
        call["weight"] = weight.index_select(0, rows)
        if isinstance(bias, torch.Tensor):
            call["bias"] = bias.index_select(0, rows.to(bias.device))
        return func(**call)
