"""Per-layer class saliency: max |derivative| over channels and bilinear upsampling, in both
orders, against direct float64 loops and a bilinear matrix written from the definition."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError
from dcsm.pipeline.layer_maps import layer_saliency, max_abs_over_channels, upsample

CASES = [  # (K, C, h, w) -> (H, W)
    ((2, 3, 3, 4), (10, 13)),
    ((1, 5, 5, 5), (5, 5)),
    ((3, 4, 6, 8), (4, 5)),
    ((2, 2, 1, 1), (7, 9)),
    ((1, 40, 4, 3), (9, 11)),  # more channels than one chunk
]


def _grad(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape)


def _max_abs_loop(g: np.ndarray) -> np.ndarray:
    k_, c_, h_, w_ = g.shape
    out = np.zeros((k_, h_, w_))
    for k in range(k_):
        for y in range(h_):
            for x in range(w_):
                out[k, y, x] = max(abs(g[k, c, y, x]) for c in range(c_))
    return out


def _ref_max_first(tiny, g: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    m = _max_abs_loop(g)
    ah, aw = tiny.bilinear_matrix(m.shape[1], size[0]), tiny.bilinear_matrix(m.shape[2], size[1])
    return np.stack([ah @ m[k] @ aw.T for k in range(m.shape[0])])


def _ref_upsample_first(tiny, g: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    k_, c_, h_, w_ = g.shape
    ah, aw = tiny.bilinear_matrix(h_, size[0]), tiny.bilinear_matrix(w_, size[1])
    up = np.array([[ah @ g[k, c] @ aw.T for c in range(c_)] for k in range(k_)])
    out = np.zeros((k_, *size))
    for k in range(k_):
        for y in range(size[0]):
            for x in range(size[1]):
                out[k, y, x] = max(abs(up[k, c, y, x]) for c in range(c_))
    return out


@pytest.mark.parametrize("shape,size", CASES)
def test_reference_bilinear_matrix_matches_torch(tiny, shape, size):
    """Sanity of the test's own resampling reference (float64 F.interpolate)."""
    g = _grad(shape, 1)
    got = F.interpolate(torch.from_numpy(g), size=size, mode="bilinear",
                        align_corners=False).numpy()
    np.testing.assert_allclose(tiny.resize(g, size), got, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,size", CASES)
def test_max_first_against_loops(tiny, shape, size, dtype):
    g = _grad(shape, 2)
    out = layer_saliency(torch.from_numpy(g).to(dtype), size, "max_first")
    assert out.shape == (shape[0], *size) and out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(out.double().numpy(), _ref_max_first(tiny, g, size), rtol=tol,
                               atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape,size", CASES)
def test_upsample_first_against_loops(tiny, shape, size, dtype):
    g = _grad(shape, 3)
    out = layer_saliency(torch.from_numpy(g).to(dtype), size, "upsample_first")
    assert out.shape == (shape[0], *size) and out.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    np.testing.assert_allclose(out.double().numpy(), _ref_upsample_first(tiny, g, size),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("chunk", [1, 3, 32])
def test_upsample_first_chunking_is_invisible(chunk):
    g = torch.from_numpy(_grad((2, 7, 4, 5), 4))
    ref = layer_saliency(g, (9, 12), "upsample_first", chunk=100)
    torch.testing.assert_close(layer_saliency(g, (9, 12), "upsample_first", chunk=chunk), ref,
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("shape,size", CASES)
def test_max_first_never_below_upsample_first(shape, size):
    g = torch.from_numpy(_grad(shape, 5))
    hi = layer_saliency(g, size, "max_first")
    lo = layer_saliency(g, size, "upsample_first")
    assert (hi >= lo - 1e-12).all()
    if size != shape[2:] and shape[2:] != (1, 1):
        assert (hi > lo + 1e-6).any()  # the two orders are really different here


def test_orders_agree_for_one_nonnegative_channel_and_without_resizing():
    g = torch.from_numpy(np.abs(_grad((2, 1, 4, 5), 6)))
    torch.testing.assert_close(layer_saliency(g, (11, 9), "max_first"),
                               layer_saliency(g, (11, 9), "upsample_first"), rtol=1e-12,
                               atol=1e-12)
    signed = torch.from_numpy(_grad((2, 3, 4, 5), 7))
    same = layer_saliency(signed, (4, 5), "max_first")
    torch.testing.assert_close(same, layer_saliency(signed, (4, 5), "upsample_first"), rtol=0,
                               atol=0)
    torch.testing.assert_close(same, signed.abs().amax(dim=1), rtol=0, atol=0)


def test_one_signed_channel_upsample_first_is_abs_of_interpolation(tiny):
    """With C = 1 the formula order interpolates the signed derivative, then takes |.|."""
    g = _grad((1, 1, 3, 3), 8)
    g[0, 0] = [[1.0, -1.0, 2.0], [-3.0, 0.5, -0.5], [2.0, 2.0, -1.0]]
    out = layer_saliency(torch.from_numpy(g), (6, 6), "upsample_first").numpy()
    np.testing.assert_allclose(out[0], np.abs(tiny.resize(g[0, 0], (6, 6))), atol=1e-12)
    first = layer_saliency(torch.from_numpy(g), (6, 6), "max_first").numpy()
    np.testing.assert_allclose(first[0], tiny.resize(np.abs(g[0, 0]), (6, 6)), atol=1e-12)
    assert (first > out + 1e-3).any()


def test_helpers_and_errors():
    g = torch.from_numpy(_grad((2, 3, 4, 5), 9))
    torch.testing.assert_close(max_abs_over_channels(g), torch.from_numpy(_max_abs_loop(g.numpy())),
                               rtol=0, atol=0)
    assert upsample(g, (4, 5)) is g  # same size: untouched
    with pytest.raises(DcsmError, match="unknown upsampling order"):
        layer_saliency(g, (8, 8), "nearest")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        layer_saliency(g[0], (8, 8))
