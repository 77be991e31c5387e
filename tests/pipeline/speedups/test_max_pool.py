"""Max pooling through the channels-last kernel gives F.max_pool2d's values, indices and
gradients exactly, also under vmap, and leaves every call it does not handle alone."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcsm
from dcsm.pipeline.speedups import max_pool
from dcsm.pipeline.speedups.max_pool import FastMaxPool, _ChannelsLastMaxPool

CONFIGS = [  # kernel, stride, padding, dilation, ceil_mode
    (3, 2, 0, 1, True),   # SqueezeNet, GoogLeNet
    (2, 2, 0, 1, False),  # VGG
    (3, 2, 1, 1, False),  # ResNet's stem
    (3, 1, 1, 1, False),
    ((3, 2), (2, 1), (1, 0), 1, True),
    (3, 2, 1, 2, False),
]


def _input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # rectified and rounded: many ties, as after a ReLU
    return torch.relu(torch.round(torch.randn(shape, generator=gen) * 4) / 4)


@pytest.mark.parametrize("config", CONFIGS)
def test_values_and_gradients_are_those_of_pytorchs_kernel(config):
    kernel, stride, padding, dilation, ceil = config
    x = _input((2, 5, 13, 11), 0).requires_grad_(True)
    want = F.max_pool2d(x, kernel, stride, padding, dilation, ceil)
    with FastMaxPool():
        got = F.max_pool2d(x, kernel, stride, padding, dilation, ceil)
    assert got.grad_fn is not None and "ChannelsLast" in type(got.grad_fn).__name__
    assert got.is_contiguous()
    assert torch.equal(got, want)
    g = torch.randn(want.shape, generator=torch.Generator().manual_seed(1))
    (gw,) = torch.autograd.grad(want, x, g)
    (gg,) = torch.autograd.grad(got, x, g)
    assert gw.abs().sum() > 0
    assert torch.equal(gg, gw)
    # without a graph: the same values
    with torch.no_grad(), FastMaxPool():
        assert torch.equal(F.max_pool2d(x, kernel, stride, padding, dilation, ceil), want)


def test_module_and_torch_calls_are_routed_and_others_are_not(monkeypatch):
    calls = []
    real = _ChannelsLastMaxPool.apply

    def spy(*args):  # noqa: ANN002,ANN202
        calls.append(args[1:])
        return real(*args)

    monkeypatch.setattr(_ChannelsLastMaxPool, "apply", spy)
    x = _input((1, 4, 9, 9), 2).requires_grad_(True)
    with FastMaxPool():
        a = nn.MaxPool2d(3, 2, ceil_mode=True)(x)
        b = torch.max_pool2d(x, [2, 2])
        c, idx = F.max_pool2d(x, 2, return_indices=True)  # indices asked for: PyTorch's own
        d = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2)  # already NHWC
        e = F.max_pool2d(x[:, :1], 2)  # one channel: nothing to vectorise over
    assert calls == [([3, 3], [2, 2], [0, 0], [1, 1], True), ([2, 2], [2, 2], [0, 0], [1, 1],
                                                              False)]
    assert torch.equal(a, F.max_pool2d(x, 3, 2, ceil_mode=True))
    assert torch.equal(b, F.max_pool2d(x, 2))
    for t in (c, d):
        assert torch.equal(t, F.max_pool2d(x, 2))
    assert idx.dtype == torch.long
    assert torch.equal(e, F.max_pool2d(x[:, :1], 2))


def test_vmap_over_the_backward_equals_the_loop():
    x = _input((2, 6, 15, 15), 3).requires_grad_(True)
    with FastMaxPool():
        y = F.max_pool2d(torch.tanh(x), 3, 2, ceil_mode=True)
    seeds = torch.randn((3, *y.shape), generator=torch.Generator().manual_seed(4))

    def one(seed: torch.Tensor) -> torch.Tensor:
        return torch.autograd.grad(y, x, seed, retain_graph=True)[0]

    batched = torch.func.vmap(one)(seeds)
    ref = F.max_pool2d(torch.tanh(x), 3, 2, ceil_mode=True)
    for k in range(3):
        (want,) = torch.autograd.grad(ref, x, seeds[k], retain_graph=True)
        torch.testing.assert_close(batched[k], want, rtol=0, atol=1e-7)


def test_maps_of_a_model_with_pooling_do_not_change(squeeze, monkeypatch):
    image = dcsm.load_image(resources.files("dcsm") / "data" / "chelsea_coffee.png")
    ex = dcsm.DistinctSaliency(squeeze, preset="paper", scales=(1.0, 1.2))
    fast = ex.explain(image, classes=["tabby", "espresso"]).maps
    monkeypatch.setattr(max_pool, "FAST_MAX_POOL", False)
    plain = ex.explain(image, classes=["tabby", "espresso"]).maps
    for name in plain:
        assert plain[name].max() > 0.5
        np.testing.assert_array_equal(fast[name], plain[name])
