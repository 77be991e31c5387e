"""Class contrast (Eq. 2), fusion (Eq. 3) and the released code's variant, against slow direct
loop-based float64 re-implementations written from the paper and the module descriptions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcsm.pipeline.contrast import pairwise_saturated_contrast, subtract_others
from dcsm.pipeline.fusion import PaperFusion, ReleasedFusion, tanh_normalize

H, W = 5, 6


def _maps(k: int, seed: int, shape: tuple[int, int] = (H, W)) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 2, size=(k, *shape))


# ----------------------------------------------------------------------------- references
def eq2_loop(m: np.ndarray) -> np.ndarray:
    """Eq. 2 pixel by pixel; a single candidate is returned unchanged."""
    k_ = m.shape[0]
    if k_ == 1:
        return m.copy()
    out = np.zeros_like(m)
    for c in range(k_):
        for y in range(m.shape[1]):
            for x in range(m.shape[2]):
                total = 0.0
                for other in range(k_):
                    if other != c:
                        total += max(m[c, y, x] - m[other, y, x], 0.0)
                out[c, y, x] = total
    return out


def normalise_loop(m: np.ndarray, alpha: float) -> np.ndarray:
    """tanh(alpha * M / max M) for one (H, W) map; zero when the maximum is not positive."""
    peak = max(m[y, x] for y in range(m.shape[0]) for x in range(m.shape[1]))
    out = np.zeros_like(m)
    if peak > 0:
        for y in range(m.shape[0]):
            for x in range(m.shape[1]):
                out[y, x] = math.tanh(alpha * m[y, x] / peak)
    return out


def eq3_loop(per_scale_layer: list[list[np.ndarray]], alpha: float, subtract: bool) -> np.ndarray:
    """Eq. 3: mean over scales and layers of the normalised (contrasted) maps."""
    k_ = per_scale_layer[0][0].shape[0]
    total = np.zeros_like(per_scale_layer[0][0])
    n = 0
    for layers in per_scale_layer:
        for m in layers:
            m2 = eq2_loop(m) if subtract else m
            for c in range(k_):
                total[c] += normalise_loop(m2[c], alpha)
            n += 1
    return total / n


def released_pairwise_loop(m: np.ndarray, alpha: float, floor: float = 1e-4) -> np.ndarray:
    """sum_{c' != c} max(tanh(alpha * d / max d), 0) with d = M^c - M^c'; pairs with max d at or
    below ``floor`` times the larger of max |M^c| and max |M^c'| contribute nothing."""
    k_ = m.shape[0]
    out = np.zeros_like(m)
    for c in range(k_):
        for other in range(k_):
            if other == c:
                continue
            d = m[c] - m[other]
            peak = max(d[y, x] for y in range(d.shape[0]) for x in range(d.shape[1]))
            own = max(abs(m[i, y, x]) for i in (c, other) for y in range(d.shape[0])
                      for x in range(d.shape[1]))
            if peak <= floor * own:
                continue
            for y in range(d.shape[0]):
                for x in range(d.shape[1]):
                    out[c, y, x] += max(math.tanh(alpha * d[y, x] / peak), 0.0)
    return out


def released_fusion_loop(per_scale_layer: list[list[np.ndarray]], active: np.ndarray,
                         alpha: float, subtract: bool) -> np.ndarray:
    """Sum over scales and layers of the pairwise contrasts (or normalised maps without
    subtraction or with one class) of the active classes, then tanh(a s / max s) / its max."""
    k_ = per_scale_layer[0][0].shape[0]
    s = np.zeros_like(per_scale_layer[0][0])
    for j, layers in enumerate(per_scale_layer):
        for m in layers:
            if subtract and k_ > 1:
                part = released_pairwise_loop(m, alpha)
            else:
                part = np.stack([normalise_loop(m[c], alpha) for c in range(k_)])
            for c in range(k_):
                if active[j, c]:
                    s[c] += part[c]
    out = np.zeros_like(s)
    for c in range(k_):
        t = normalise_loop(s[c], alpha)
        peak = t.max()
        out[c] = t / peak if peak > 0 else t
    return out


# ----------------------------------------------------------------------------- Eq. 2
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_eq2_against_loops(k):
    m = _maps(k, seed=k)
    got = subtract_others(torch.from_numpy(m)).numpy()
    np.testing.assert_allclose(got, eq2_loop(m), rtol=1e-12, atol=1e-12)
    if k > 1:
        assert (got >= 0).all() and (got == 0).any()


def test_eq2_single_candidate_unchanged_and_known_values():
    one = torch.from_numpy(_maps(1, seed=9))
    assert torch.equal(subtract_others(one), one)
    m = torch.tensor([[[3.0, 1.0]], [[1.0, 2.0]], [[2.0, 0.0]]])
    # class 0: (3-1)+(3-2)=3 and (0)+(1-0)=1; class 1: 0+0=0 and 1+2=3; class 2: 1+0=1 and 0+0=0
    expected = torch.tensor([[[3.0, 1.0]], [[0.0, 3.0]], [[1.0, 0.0]]])
    torch.testing.assert_close(subtract_others(m), expected, rtol=0, atol=0)


# ----------------------------------------------------------------------------- Eq. 3
@pytest.mark.parametrize("subtract", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_paper_fusion_against_loops(k, subtract):
    scales, layers, alpha = 3, 2, 3.0
    data = [[_maps(k, seed=100 * j + 10 * i + k) for i in range(layers)] for j in range(scales)]
    fusion = PaperFusion(layers, alpha, subtract, keep_layers=True)
    for j in range(scales):
        for i in range(layers):
            fusion.add(i, torch.from_numpy(data[j][i]))
    expected = eq3_loop(data, alpha, subtract)
    np.testing.assert_allclose(fusion.result().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert fusion.result().max() <= math.tanh(alpha) + 1e-12
    per_layer = fusion.layer_results()
    assert per_layer is not None and len(per_layer) == layers
    for i in range(layers):
        np.testing.assert_allclose(per_layer[i].numpy(),
                                   eq3_loop([[data[j][i]] for j in range(scales)], alpha,
                                            subtract), rtol=1e-12, atol=1e-12)


def test_paper_fusion_alpha_and_no_layers_kept():
    data = [[_maps(2, seed=5)]]
    fusion = PaperFusion(1, 1.5, True)
    fusion.add(0, torch.from_numpy(data[0][0]))
    np.testing.assert_allclose(fusion.result().numpy(), eq3_loop(data, 1.5, True), atol=1e-12)
    assert fusion.layer_results() is None


# ----------------------------------------------------------------------------- released code
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_pairwise_saturated_contrast_against_loops(k):
    m = _maps(k, seed=20 + k)
    if k >= 3:
        m[2] = m[0] + 0.5  # pair (0, 2): the difference is nowhere positive for class 0
    got = pairwise_saturated_contrast(torch.from_numpy(m), 3.0).numpy()
    np.testing.assert_allclose(got, released_pairwise_loop(m, 3.0), rtol=1e-12, atol=1e-12)
    if k == 1:
        assert (got == 0).all()


def test_pairwise_contrast_skips_pairs_without_positive_difference():
    m = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]], dtype=torch.float64)
    out = pairwise_saturated_contrast(m, 3.0)
    # class 0 is below class 1 everywhere: no evidence; class 1: d = 2 everywhere -> tanh(3)
    torch.testing.assert_close(out[0], torch.zeros(1, 2, dtype=torch.float64), rtol=0, atol=0)
    torch.testing.assert_close(out[1], torch.full((1, 2), math.tanh(3.0), dtype=torch.float64))


def test_pairwise_floor_pairs_that_differ_by_rounding_count_for_nothing():
    """Two maps equal but for float32 rounding: no evidence either way, in float32 as in
    float64; a pair just above the floor counts in full."""
    rng = np.random.default_rng(5)
    base = rng.uniform(0.5, 2.0, size=(H, W))
    noisy = base * (1 + rng.uniform(-1, 1, size=(H, W)) * 3e-7)  # about float32 rounding
    for dtype in (torch.float32, torch.float64):
        m = torch.from_numpy(np.stack([base, noisy])).to(dtype)
        out = pairwise_saturated_contrast(m, 3.0)
        assert (out == 0).all(), dtype
        # without the floor, the noise is normalised to full strength
        raw = pairwise_saturated_contrast(m, 3.0, floor=0.0)
        assert raw.amax() > 0.9
    apart = np.stack([base, base.copy()])
    apart[0, 1, 2] += 2e-4 * base.max()  # peaks at twice the floor, at one pixel
    out = pairwise_saturated_contrast(torch.from_numpy(apart), 3.0).numpy()
    assert out[0, 1, 2] == pytest.approx(math.tanh(3.0))
    assert (out[1] == 0).all()
    np.testing.assert_allclose(out, released_pairwise_loop(apart, 3.0), rtol=1e-12, atol=1e-12)
    # at half the floor it counts for nothing
    apart[0, 1, 2] = base[1, 2] + 5e-5 * base.max()
    assert (pairwise_saturated_contrast(torch.from_numpy(apart), 3.0) == 0).all()


def test_pairwise_floor_is_scale_free():
    """The floor is relative: scaling every map by a positive constant changes nothing."""
    m = _maps(3, seed=9)
    m[1] = m[0] * (1 - 5e-5)  # class 0 above class 1 by at most 1e-4 of its peak: below floor
    ref = pairwise_saturated_contrast(torch.from_numpy(m), 3.0)
    for factor in (1e-6, 1e-3, 7.0, 1e5):
        got = pairwise_saturated_contrast(torch.from_numpy(m * factor), 3.0)
        torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("subtract", [True, False])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_released_fusion_against_loops(k, subtract):
    scales, layers, alpha = 3, 2, 3.0
    rng = np.random.default_rng(40 + k)
    data = [[_maps(k, seed=1000 + 100 * j + 10 * i + k) for i in range(layers)]
            for j in range(scales)]
    active = rng.uniform(size=(scales, k)) > 0.35
    active[:, 0] = True
    if k > 1:
        active[1, 1] = False
    fusion = ReleasedFusion(layers, alpha, subtract, keep_layers=True)
    for j in range(scales):
        for i in range(layers):
            fusion.add(i, torch.from_numpy(data[j][i]), torch.from_numpy(active[j]))
    got = fusion.result().numpy()
    np.testing.assert_allclose(got, released_fusion_loop(data, active, alpha, subtract),
                               rtol=1e-12, atol=1e-12)
    assert got.max() <= 1.0 + 1e-12 and got.min() >= 0
    for c in range(k):  # normalised to 1 where active at some scale, else nothing
        assert got[c].max() == pytest.approx(1.0 if active[:, c].any() else 0.0, abs=1e-12)
    per_layer = fusion.layer_results()
    assert per_layer is not None
    for i in range(layers):
        ref = released_fusion_loop([[data[j][i]] for j in range(scales)], active, alpha, subtract)
        np.testing.assert_allclose(per_layer[i].numpy(), ref, rtol=1e-12, atol=1e-12)


def test_released_fusion_inactive_class_gets_nothing():
    m = torch.from_numpy(_maps(3, seed=77))
    fusion = ReleasedFusion(1, 3.0)
    fusion.add(0, m, torch.tensor([True, False, True]))
    fusion.add(0, m * 0.5, torch.tensor([True, False, True]))
    out = fusion.result()
    assert (out[1] == 0).all() and out[0].max() == 1 and out[2].max() == 1
    no_mask = ReleasedFusion(1, 3.0)
    no_mask.add(0, m)
    ref = released_fusion_loop([[m.numpy()]], np.ones((1, 3), bool), 3.0, True)
    np.testing.assert_allclose(no_mask.result().numpy(), ref, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------------------- tanh_normalize
def test_tanh_normalize_values_and_zero_maps():
    maps = torch.from_numpy(np.stack([
        _maps(1, seed=1)[0],
        np.zeros((H, W)),
        -_maps(1, seed=2)[0],  # maximum below zero
        np.where(_maps(1, seed=3)[0] > 1, 1.0, -1.0),
    ]))
    out = tanh_normalize(maps, 3.0)
    assert torch.isfinite(out).all()
    np.testing.assert_allclose(out[0].numpy(), normalise_loop(maps[0].numpy(), 3.0), atol=1e-15)
    assert (out[1] == 0).all() and (out[2] == 0).all()
    np.testing.assert_allclose(out[3].numpy(), np.tanh(3.0 * maps[3].numpy()), atol=1e-15)
    assert out[0].max() == pytest.approx(math.tanh(3.0), abs=1e-15)


def test_tanh_normalize_batched_shapes_and_float32():
    m = torch.from_numpy(_maps(6, seed=4).reshape(2, 3, H, W)).float()
    out = tanh_normalize(m, 2.0)
    assert out.dtype == torch.float32 and out.shape == m.shape
    ref = np.stack([[normalise_loop(m[a, b].double().numpy(), 2.0) for b in range(3)]
                    for a in range(2)])
    np.testing.assert_allclose(out.double().numpy(), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_subtract_strongest_against_pixel_loops(k):
    from dcsm.pipeline.contrast import subtract_strongest

    rng = np.random.default_rng(40 + k)
    maps = rng.random((k, 4, 5))
    maps[:, 0, 0] = 0.5  # a tie everywhere at one pixel
    expected = np.zeros_like(maps)
    for c in range(k):
        for y in range(4):
            for x in range(5):
                others = [maps[o, y, x] for o in range(k) if o != c]
                best_other = max(others) if others else 0.0
                expected[c, y, x] = (max(maps[c, y, x] - best_other, 0.0) if others
                                     else maps[c, y, x])
    got = subtract_strongest(torch.from_numpy(maps)).numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-15)
    # leading dimensions are independent images
    batch = torch.from_numpy(np.stack([maps, maps[::-1].copy(), 2 * maps]))
    out = subtract_strongest(batch)
    for i in range(3):
        assert torch.equal(out[i], subtract_strongest(batch[i]))


def test_paper_fusion_with_strongest_contrast():
    from dcsm.pipeline.contrast import subtract_strongest
    from dcsm.pipeline.fusion import PaperFusion, tanh_normalize

    rng = np.random.default_rng(7)
    layers = [torch.from_numpy(rng.random((3, 6, 7))) for _ in range(4)]
    fusion = PaperFusion(2, 3.0, contrast="strongest")
    for i, m in enumerate(layers):
        fusion.add(i % 2, m)
    expected = sum(tanh_normalize(subtract_strongest(m), 3.0) for m in layers) / 4
    np.testing.assert_allclose(fusion.result().numpy(), expected.numpy(), rtol=0, atol=1e-15)
