"""The batch-mode cost model counts a backward graph's multiply-accumulates and large weights by
hand-computed numbers, and picks "vmap" exactly where the large weights per MAC reach the
measured thresholds."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dcsm.pipeline.speedups.batch_mode import (
    CONV_LARGE_FROM,
    LARGE_WEIGHT,
    PRODUCT_LARGE_FROM,
    GraphCost,
    choose_batch_mode,
    graph_cost,
)
from dcsm.pipeline.speedups.matmul_conv import MatmulConv

WIDE = LARGE_WEIGHT // 2048


def test_convolution_macs_follow_stride_padding_and_dilation():
    x = torch.randn(2, 3, 11, 9, requires_grad=True)
    w = torch.randn(5, 3, 3, 2)
    out = F.conv2d(x, w, stride=(2, 1), padding=(1, 0), dilation=(1, 2))
    # output 6 x 7 positions, each 3 * 3 * 2 MACs per output channel
    assert out.shape == (2, 5, 6, 7)
    assert graph_cost(out) == GraphCost(macs=2 * 5 * 6 * 7 * 3 * 3 * 2)


def test_large_weights_are_counted_by_kind():
    image = torch.randn(1, WIDE, 3, 1, requires_grad=True)
    large, small = torch.randn(2048, WIDE, 1, 1), torch.randn(10, WIDE, 1, 1)
    conv = F.conv2d(image, large) + F.conv2d(image, small).sum()
    assert graph_cost(conv) == GraphCost(macs=3 * WIDE * (2048 + 10), conv_large=large.numel())
    matmul = MatmulConv.apply(image, large, None, (0, 0))  # reads the weight as stored
    assert graph_cost(matmul) == GraphCost(macs=3 * WIDE * 2048, product_large=large.numel())


def test_a_product_of_two_activations_is_no_weight():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(4, 5, requires_grad=True)
    assert graph_cost(a @ b) == GraphCost()


@pytest.mark.parametrize(("rows", "kind", "mode"), [
    (1, "product", "vmap"), (249, "product", "vmap"), (251, "product", "loop"),
    (1, "conv", "vmap"), (666, "conv", "vmap"), (667, "conv", "loop")])
def test_vmap_from_one_large_weight_element_per_threshold_mac(rows, kind, mode):
    # pressure = weights / threshold / (rows * weights) = 1 / (threshold * rows): 250 positions
    # as a matrix product (4e-3) and 666.7 in a PyTorch convolution (1.5e-3) are the break-even
    x = torch.randn(1, WIDE, rows, 1, requires_grad=True)
    w = torch.randn(2048, WIDE, 1, 1)
    if kind == "product":
        root = MatmulConv.apply(x, w, None, (0, 0))
        threshold = PRODUCT_LARGE_FROM
    else:
        root = F.conv2d(x, w)
        threshold = CONV_LARGE_FROM
    assert graph_cost(root).weight_pressure == pytest.approx(1 / (threshold * rows))
    assert choose_batch_mode(root, 3) == mode
    assert choose_batch_mode(root, 1) == "loop"  # one slot: nothing to batch


def test_no_weight_no_vmap():
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    root = F.conv2d(x, torch.randn(4, 3, 3, 3))
    assert graph_cost(root).weight_pressure == 0.0
    assert choose_batch_mode(root, 4) == "loop"
