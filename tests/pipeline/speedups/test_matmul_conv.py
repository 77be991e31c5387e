"""The convolution as a matrix product gives F.conv2d's outputs and input gradients, runs only
where it is meant to, and leaves the class gradients of a model with a large weight unchanged."""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dcsm.pipeline.gradients import class_gradients, forward_pass
from dcsm.pipeline.rules import get_rule
from dcsm.pipeline.speedups import matmul_conv
from dcsm.pipeline.speedups.batch_mode import LARGE_WEIGHT
from dcsm.pipeline.speedups.matmul_conv import MatmulConv, MatmulLargeConvs, large_convs


def _kinds(root: torch.Tensor) -> set[str]:
    """The names of every node in the autograd graph below ``root``."""
    kinds, stack, seen = set(), [root.grad_fn], set()
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        kinds.add(type(node).__name__)
        stack.extend(n for n, _ in node.next_functions)
    return kinds


@pytest.mark.parametrize(("kernel", "padding", "bias"), [
    ((1, 1), (0, 0), True), ((3, 3), (1, 1), False), ((3, 2), (0, 1), True),
    ((7, 7), (0, 0), True)])
def test_forward_and_input_gradient_equal_conv2d_in_float64(kernel, padding, bias):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 9, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, *kernel, generator=gen, dtype=torch.float64)
    b = torch.randn(4, generator=gen, dtype=torch.float64) if bias else None
    out = MatmulConv.apply(x, w, b, padding)
    ref = F.conv2d(x, w, b, padding=padding)
    assert out.is_contiguous() and out.shape == ref.shape
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    seed = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    (got,) = torch.autograd.grad(out, x, seed)
    (want,) = torch.autograd.grad(ref, x, seed)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


WIDE = LARGE_WEIGHT // 2048  # input channels of a 2048-channel 1x1 convolution that is large


@pytest.mark.parametrize(("case", "routed"), [
    ("large", True), ("padded 3x3", True), ("strided", False), ("small", False),
    ("trainable", False), ("float64", False), ("grouped", False)])
def test_only_large_frozen_float32_stride_one_convolutions_are_routed(case, routed):
    gen = torch.Generator().manual_seed(0)
    groups = 2 if case == "grouped" else 1
    inputs = WIDE - 1 if case == "small" else WIDE
    kernel = 3 if case == "padded 3x3" else 1
    w = torch.randn(2048, inputs, kernel, kernel, generator=gen) * 0.01
    x = torch.randn(1, inputs * groups, 3, 3, generator=gen, requires_grad=True)
    if case == "float64":
        x, w = x.detach().double().requires_grad_(True), w.double()
    w.requires_grad_(case == "trainable")
    call = {"stride": 2 if case == "strided" else 1, "padding": kernel // 2, "groups": groups}
    with MatmulLargeConvs():
        out = F.conv2d(x, w, **call)
    assert ("MatmulConvBackward" in _kinds(out)) is routed
    torch.testing.assert_close(out, F.conv2d(x, w, **call), rtol=1e-5, atol=1e-5)


def test_large_convs_only_where_it_can_pay(monkeypatch):
    big, small = nn.Conv2d(WIDE, 2048, 1), nn.Conv2d(3, 4, 3)
    x = torch.zeros(1, 3, 4, 4)
    assert isinstance(large_convs(big, x), MatmulLargeConvs)
    assert isinstance(large_convs(small, x), contextlib.nullcontext)
    assert isinstance(large_convs(big, x, torch.bfloat16), contextlib.nullcontext)
    monkeypatch.setattr(matmul_conv, "MATMUL_LARGE_CONVS", False)
    assert isinstance(large_convs(big, x), contextlib.nullcontext)


class _LargeHead(nn.Module):
    """A convolution, then a 1x1 convolution with a large weight, then a 3-class classifier."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(1)
        self.conv1 = nn.Conv2d(3, WIDE, 3, padding=1)
        self.big = nn.Conv2d(WIDE, 2048, 1)
        self.cls = nn.Conv2d(2048, 3, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(torch.relu(self.big(torch.relu(self.conv1(x)))))


@pytest.mark.parametrize("batch", ["loop", "vmap"])
def test_class_gradients_through_a_large_weight_are_unchanged(tiny, monkeypatch, batch):
    adapter = tiny.adapter(_LargeHead(), classes=3, layers=("c1",), gradcam_layer=None)
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(2))
    grads = {}
    for on in (True, False):
        monkeypatch.setattr(matmul_conv, "MATMUL_LARGE_CONVS", on)
        fp = forward_pass(adapter, x, ["c1"], get_rule("plain"))
        assert ("MatmulConvBackward" in _kinds(fp.score_map)) is on
        (grads[on],) = class_gradients(fp, [0, 2], [fp.activations["c1"]], batch)
    assert grads[True].abs().max() > 0
    torch.testing.assert_close(grads[True], grads[False], rtol=1e-4, atol=1e-6)
