"""The batch mode of the class slots' backwards: one per slot or one for all (``batch="auto"``).

``batch="loop"`` back-propagates each class slot on its own; ``batch="vmap"`` all of them in one
backward (``torch.func.vmap`` over ``torch.autograd.grad``: the slots become a batch dimension
of every backward operation, so each weight is read once for all of them). Which is faster
depends on the model: the batched backward pays where reading weights too large for the CPU's
caches costs more than computing with them (VGG-16's fc6 and fc7, AlexNet's: 0.35 to 0.92 of
the loop's time), and costs more elsewhere (up to 1.78 times on MobileNetV2).
:func:`choose_batch_mode` decides per scale from the backward graph's multiply-accumulates and
large weights (:func:`graph_cost`), by thresholds measured on a CPU (the table in its
docstring); on VGG-16 at the paper's settings the whole method then takes 0.93-0.96 times the
time of ``"loop"``. PyTorch's own ``torch.autograd.grad(..., is_grads_batched=True)`` uses the
legacy vmap, which has no batching rule for the convolution backward and loops over the slots:
it measured as slow as ``"loop"``, and is not offered. ``benchmarks/throughput.py`` reports the
mode chosen per scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, cast

import torch
from torch.autograd.graph import Node

from dcsm.pipeline.speedups.torch_calls import saved_convolution


@dataclass
class GraphCost:
    """Multiply-accumulates of the convolutions and matrix products in a backward graph, and
    the elements of their large weights (what :func:`choose_batch_mode` decides by): those
    PyTorch's convolutions read, and those read by matrix products
    (:class:`~dcsm.pipeline.speedups.matmul_conv.MatmulConv`, linear layers)."""

    macs: int = 0
    conv_large: int = 0  # weights of at least LARGE_WEIGHT elements in PyTorch convolutions
    product_large: int = 0  # the same in matrix products
    mixed_batch_norm: bool = False  # autocast: vmap's batch-norm backward rejects it (2.14)

    @property
    def weight_pressure(self) -> float:
        """Large-weight elements per multiply-accumulate, each kind relative to the level from
        which reading them for every class slot costs more than batching the slots does
        (:data:`CONV_LARGE_FROM`, :data:`PRODUCT_LARGE_FROM`); ``"vmap"`` from 1 up."""
        if not self.macs:
            return 0.0
        return (self.conv_large / CONV_LARGE_FROM
                + self.product_large / PRODUCT_LARGE_FROM) / self.macs


#: A weight this large (elements; 16 MiB in float32) no longer stays in a CPU's caches from one
#: use to the next: VGG-16's fc6 (103 M) and fc7 (17 M), AlexNet's; no convolution of
#: VGG-16 (2.4 M at most), ResNet-50, SqueezeNet or EfficientNet-Lite0.
LARGE_WEIGHT = 4 << 20
#: Large weights in PyTorch's convolutions per MAC from which ``"vmap"`` pays (measured, see
#: :func:`choose_batch_mode`).
CONV_LARGE_FROM = 1.5e-3
#: Large weights in matrix products per MAC from which ``"vmap"`` pays.
PRODUCT_LARGE_FROM = 4e-3


class _ProductNode(Protocol):
    """What the backward node of a matrix product (``AddmmBackward0``, ``MmBackward0``) keeps."""

    _saved_mat1: torch.Tensor
    _saved_mat2: torch.Tensor


class _MatmulConvNode(Protocol):
    """What the backward node of :class:`~dcsm.pipeline.speedups.matmul_conv.MatmulConv` keeps."""

    saved_tensors: tuple[torch.Tensor, ...]
    macs: int


class _BatchNormNode(Protocol):
    """What the backward node of a batch norm (``NativeBatchNormBackward0``) keeps."""

    _saved_input: torch.Tensor
    _saved_weight: torch.Tensor | None


def graph_cost(root: torch.Tensor) -> GraphCost:
    """:class:`GraphCost` of everything below ``root`` in its autograd graph."""
    cost = GraphCost()
    seen: dict[int, Node] = {}  # keeps the node objects alive, so ids stay unique
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(n for n, _ in node.next_functions)
        kind = type(node).__name__
        conv = saved_convolution(node)
        product = True
        try:
            if conv is not None and not conv._saved_transposed:
                w, x = conv._saved_weight, conv._saved_input
                out = x.shape[0] * w.shape[0]
                for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], conv._saved_stride,
                                            conv._saved_padding, conv._saved_dilation,
                                            strict=True):
                    out *= (size + 2 * p - d * (k - 1) - 1) // s + 1
                weights, macs, product = w.numel(), out * w[0].numel(), False
            elif kind == "MatmulConvBackward":
                matmul = cast(_MatmulConvNode, node)
                weights, macs = matmul.saved_tensors[0].numel(), matmul.macs
            elif kind in ("AddmmBackward0", "MmBackward0"):
                mm = cast(_ProductNode, node)
                a, b = mm._saved_mat1, mm._saved_mat2
                if b.requires_grad:  # a product of two activations, not a weight
                    continue
                weights, macs = b.numel(), a.shape[0] * a.shape[1] * b.shape[1]
            elif kind == "NativeBatchNormBackward0":
                bn = cast(_BatchNormNode, node)
                x, bn_weight = bn._saved_input, bn._saved_weight
                cost.mixed_batch_norm |= bn_weight is not None and x.dtype != bn_weight.dtype
                continue
            else:
                continue
        except (AttributeError, RuntimeError):
            continue
        cost.macs += macs
        if weights >= LARGE_WEIGHT:
            if product:
                cost.product_large += weights
            else:
                cost.conv_large += weights
    return cost


def choose_batch_mode(root: torch.Tensor, slots: int) -> Literal["loop", "vmap"]:
    """``batch="auto"``: ``"vmap"`` (one backward for all slots) where the backward is bound by
    reading large weights, ``"loop"`` otherwise and for one slot.

    A batched backward reads each weight once for all K slots, at some cost of its own
    (expanded saved tensors, zero fills, PyTorch's batching rules). It pays where weights too
    large for the caches (:data:`LARGE_WEIGHT`) are used at few positions, so that reading
    them costs more than computing with them: :attr:`GraphCost.weight_pressure` at least 1.
    Measured on a CPU (one thread, three slots, guided, one scale's backward; the time of
    ``"vmap"`` over that of ``"loop"``, and the large-weight elements per MAC):

    =====================  =====  =======  ===============  ===============
    model                  input  per MAC  PyTorch's convs  matrix products
    =====================  =====  =======  ===============  ===============
    AlexNet                224    0.18     0.35             0.92
    AlexNet, 4 images      224    0.045    0.52             0.64
    AlexNet                358    0.027    0.60             0.76
    VGG-16                 224    0.012    0.63             0.99, 1.06
    VGG-16                 269    0.0085                    0.93
    VGG-16                 314    0.0060                    0.95
    VGG-16                 358    0.0044   0.70             0.96, 1.00
    VGG-16, 4 images       224    0.0030   0.81             1.08
    VGG-16                 512    0.0019   0.92             1.02
    VGG-16, 4 images       358    0.0011   1.02
    VGG-16                 819    0.00091  1.08
    VGG-16, 16 images      224    0.00076  1.15
    ResNet-50              224    0        1.05 (358: 1.16)
    SqueezeNet 1.1         224    0        1.13 (358: 0.94)
    EfficientNet-Lite0     224    0        1.46 (358: 0.90)
    MobileNetV2            224    0        1.78
    =====================  =====  =======  ===============  ===============

    (Two values: two runs; on the shared machine of these measurements single ratios move by
    about 5 %. The whole method on VGG-16 at the paper's settings, one image, both modes
    timed in alternation: ``"vmap"`` 0.93-0.96x the time of ``"loop"``.)

    PyTorch's convolutions re-lay out a large weight at every call, so batching pays from
    :data:`CONV_LARGE_FROM` (1.5e-3) up; read as stored by a matrix product (the CPU's float32
    default, :data:`~dcsm.pipeline.speedups.matmul_conv.MATMUL_LARGE_CONVS`), only from
    :data:`PRODUCT_LARGE_FROM` (4e-3) up. MACs grow with the batch and the image, so large
    batches and images go back to ``"loop"``. Under autocast, a graph with batch norm stays
    with ``"loop"`` (PyTorch 2.14's vmap rejects its mixed-precision backward). On CUDA the
    same rule applies, unmeasured: ``benchmarks/gpu_benchmark.py`` times both modes.
    """
    if slots < 2:
        return "loop"
    cost = graph_cost(root)
    if cost.mixed_batch_norm:
        return "loop"
    return "vmap" if cost.weight_pressure >= 1.0 else "loop"
