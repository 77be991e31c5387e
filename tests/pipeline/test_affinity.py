"""The feature-affinity random walk and the gradient-times-activation channel reduction,
against float64 loops written from their definitions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError
from dcsm.pipeline.affinity import Propagation, random_walk, transition_matrix
from dcsm.pipeline.layer_maps import grad_times_activation, reduce_channels


def _transition_loop(f: np.ndarray, beta: float, radius: int) -> np.ndarray:
    """(C, h, w) features -> (hw, hw) column-stochastic transitions, one entry at a time."""
    c, h, w = f.shape
    vec = f.reshape(c, -1).T
    vec = vec / np.linalg.norm(vec, axis=1, keepdims=True)
    a = np.zeros((h * w, h * w))
    for i in range(h * w):
        for j in range(h * w):
            yi, xi, yj, xj = i // w, i % w, j // w, j % w
            if max(abs(yi - yj), abs(xi - xj)) <= radius:
                a[i, j] = max(float(vec[i] @ vec[j]), 0.0) ** beta
    return a / a.sum(axis=0, keepdims=True)


@pytest.mark.parametrize("beta,radius", [(1.0, 1), (8.0, 2), (3.0, 10)])
def test_transition_matrix_matches_loop(beta, radius):
    f = np.random.default_rng(0).normal(size=(2, 5, 3, 4))
    got = transition_matrix(torch.from_numpy(f), beta, radius).double().numpy()
    for n in range(2):
        want = _transition_loop(f[n], beta, radius)
        np.testing.assert_allclose(got[n], want, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(got[n].sum(axis=0), 1.0, rtol=1e-6)


def test_random_walk_matches_float64_reference():
    rng = np.random.default_rng(1)
    f = rng.normal(size=(1, 6, 4, 5))
    maps = rng.uniform(size=(1, 2, 8, 10))
    s = Propagation(steps=3, beta=2.0, radius=2)
    got = random_walk(torch.from_numpy(maps).float(), torch.from_numpy(f).float(), s).numpy()
    # the reference: area average to 4x5 (2x2 blocks), three steps, bilinear back, rescaled
    small = maps.reshape(1, 2, 4, 2, 5, 2).mean(axis=(3, 5)).reshape(2, -1)
    p = _transition_loop(f[0], 2.0, 2)
    for _ in range(3):
        small = small @ p
    up = F.interpolate(torch.from_numpy(small.reshape(1, 2, 4, 5)), size=(8, 10),
                       mode="bilinear", align_corners=False).numpy().clip(0)
    up = up * maps.max(axis=(2, 3), keepdims=True) / up.max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(got, up, rtol=1e-4, atol=1e-6)


def test_random_walk_spreads_within_a_region_and_not_across():
    """Two halves with orthogonal features: mass put on one cell of the left half spreads over
    the left half and never reaches the right one."""
    f = torch.zeros(1, 2, 4, 8)
    f[0, 0, :, :4] = 1.0
    f[0, 1, :, 4:] = 1.0
    maps = torch.zeros(1, 1, 4, 8)
    maps[0, 0, 1, 1] = 1.0
    out = random_walk(maps, f, Propagation(steps=30, beta=4.0, radius=8))[0, 0]
    assert out[:, 4:].abs().max() == 0
    left = out[:, :4]
    assert float(left.min()) > 0.5 * float(left.max())  # nearly uniform over its region
    assert float(out.max()) == pytest.approx(1.0)


def test_zero_steps_and_zero_maps():
    f = torch.randn(1, 3, 4, 4)
    maps = torch.rand(1, 2, 8, 8)
    assert random_walk(maps, f, Propagation(steps=0)) is maps
    zero = torch.zeros(1, 1, 8, 8)
    assert random_walk(zero, f, Propagation(steps=4)).abs().max() == 0


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"steps": 1.5}, {"beta": 0},
                                    {"beta": float("nan")}, {"radius": 0}, {"radius": True}])
def test_bad_settings_raise(kwargs):
    with pytest.raises(DcsmError):
        Propagation(**kwargs)


def test_grad_times_activation_matches_loop():
    rng = np.random.default_rng(2)
    g, a = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(2, 5, 3, 4))
    want = np.zeros((2, 3, 4))
    for n in range(2):
        for y in range(3):
            for x in range(4):
                want[n, y, x] = sum(max(g[n, k, y, x], 0) * max(a[n, k, y, x], 0)
                                    for k in range(5))
    got = grad_times_activation(torch.from_numpy(g), torch.from_numpy(a)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(reduce_channels(torch.from_numpy(g), torch.from_numpy(a),
                                               "grad_act").numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(reduce_channels(torch.from_numpy(g), None, "max_abs").numpy(),
                               np.abs(g).max(axis=1), rtol=1e-12)
    with pytest.raises(DcsmError):
        reduce_channels(torch.from_numpy(g), None, "median")  # type: ignore[arg-type]


def test_flip_averages_the_mirror_images_maps(tiny):
    """``flip=True``: the mean of the image's maps and the mirrored maps of its mirror image,
    each explained for the same classes and contrast set."""
    import dcsm

    adapter = tiny.adapter(tiny.TinyNet(classes=5, seed=3), layers=("c1", "c2"))
    image = tiny.image(20, 28, seed=4)
    plain = dcsm.DistinctSaliency(adapter, preset="paper")
    both = dcsm.DistinctSaliency(adapter, preset="paper", flip=True)
    got = both.explain(image, classes=[0, 2], per_layer=True)
    a = plain.explain(image, classes=[0, 2], per_layer=True)
    b = plain.explain(np.ascontiguousarray(image[:, ::-1]), classes=[0, 2], per_layer=True)
    for name in got.maps:
        want = (a.maps[name] + b.maps[name][:, ::-1]) / 2
        np.testing.assert_allclose(got.maps[name], want, atol=1e-5)
        for layer in ("c1", "c2"):
            want = (a.layer_maps[name][layer] + b.layer_maps[name][layer][:, ::-1]) / 2
            np.testing.assert_allclose(got.layer_maps[name][layer], want, atol=1e-5)
    assert got.parameters["flip"] is True


def test_explainer_propagates_its_fused_maps(tiny):
    """``propagate=``: the fused maps of the same explainer without it, walked through the
    named layer's features of the image (captured here with a plain forward hook)."""
    import dcsm
    from dcsm.pipeline.images import image_input

    adapter = tiny.adapter(tiny.TinyNet(classes=5, seed=5), layers=("c1", "c2"))
    image = tiny.image(24, 20, seed=6)
    settings = Propagation(steps=3, beta=2.0, radius=2, layer="c1")
    got = dcsm.DistinctSaliency(adapter, preset="paper", propagate=settings).explain(
        image, classes=[1, 3])
    plain = dcsm.DistinctSaliency(adapter, preset="paper", scales=[1.0]).explain(
        image, classes=[1, 3])
    assert got.parameters["propagate"] == settings.as_dict()
    # the paper preset's four scales: rebuild its fused maps from a one-scale-at-a-time mean
    per_scale = [dcsm.DistinctSaliency(adapter, preset="paper", scales=[s]).explain(
        image, classes=[1, 3]) for s in dcsm.PRESETS["paper"].scales]
    names = list(plain.maps)
    fused = torch.stack([torch.from_numpy(np.mean([r.maps[n] for r in per_scale], axis=0))
                         for n in names])[None]
    captured = {}
    module = adapter.resolve_layers(["c1"])["c1"]
    handle = module.register_forward_hook(lambda m, i, o: captured.setdefault("f", o.detach()))
    try:
        with torch.no_grad():
            adapter.model(image_input(adapter, image, image.shape[:2]))
    finally:
        handle.remove()
    want = random_walk(fused, captured["f"], settings)[0].numpy()
    for k, n in enumerate(names):
        np.testing.assert_allclose(got.maps[n], np.clip(want[k], 0, 1), atol=1e-5)


def test_automatic_features_take_the_deepest_layer_of_stride_16_or_finer():
    from dcsm.pipeline.affinity import affinity_features

    def grid(c: int, h: int, w: int) -> torch.Tensor:
        return torch.randn(1, c, h, w)

    s8, s16a, s16b, s32 = grid(2, 64, 48), grid(3, 32, 24), grid(4, 32, 24), grid(5, 16, 12)
    assert affinity_features([s8, s16a, s16b, s32], (512, 384)) is s16b
    pooled = affinity_features([s8, s32], (512, 384))  # stride 8 pooled to stride 16
    torch.testing.assert_close(pooled, F.avg_pool2d(s8, 2))
    assert affinity_features([grid(1, 16, 12), s32], (512, 384)) is s32  # none fine: the finest
    assert affinity_features([s32], (512, 384)) is s32  # a named layer: as it is
    assert affinity_features([grid(1, 31, 23), s32], (500, 375)) is not s32  # rounding down


def test_sharpen_matches_its_definition_and_keeps_the_order():
    from dcsm.pipeline.fusion import sharpen

    m = np.random.default_rng(7).uniform(0, 0.8, size=(2, 3, 5, 6))
    m[1, 2] = 0.0
    got = sharpen(torch.from_numpy(m), 2.0).numpy()
    peak = m.max(axis=(2, 3), keepdims=True)
    want = np.where(peak > 0, peak * (m / np.where(peak > 0, peak, 1)) ** 2, 0)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert np.array_equal(got.max(axis=(2, 3)), m.max(axis=(2, 3)))
    order = np.argsort(m[0, 0], axis=None)
    assert np.array_equal(np.argsort(got[0, 0], axis=None), order)
    same = torch.from_numpy(m)
    assert sharpen(same, 1.0) is same


def test_explainer_gamma_sharpens_the_final_maps(tiny):
    import dcsm
    from dcsm.pipeline.fusion import sharpen

    adapter = tiny.adapter(tiny.TinyNet(classes=5, seed=8), layers=("c1", "c2"))
    image = tiny.image(16, 20, seed=9)
    plain = dcsm.DistinctSaliency(adapter, preset="paper").explain(image, classes=[0, 4])
    sharp = dcsm.DistinctSaliency(adapter, preset="paper", gamma=3.0).explain(image,
                                                                              classes=[0, 4])
    for name in plain.maps:
        want = sharpen(torch.from_numpy(plain.maps[name])[None], 3.0)[0].numpy()
        np.testing.assert_allclose(sharp.maps[name], want, atol=1e-6)
    assert sharp.parameters["gamma"] == 3.0
    for bad in (0, -1.0, float("inf"), True, 17):
        with pytest.raises(DcsmError, match="gamma"):
            dcsm.DistinctSaliency(adapter, gamma=bad)


def test_the_default_preset_flips_propagates_and_sharpens(tiny):
    """The tuned preset's additions, each checked above on its own, are its defaults, and
    the explainer's arguments turn each off."""
    import dcsm

    p = dcsm.PRESETS["tuned"]
    assert (p.flip, p.propagate, p.gamma) == (True, Propagation(), 2.0)
    assert dcsm.PRESETS["paper"].propagate is None and not dcsm.PRESETS["paper"].flip
    adapter = tiny.adapter(tiny.TinyNet(classes=5, seed=8), layers=("c1", "c2"))
    off = dcsm.DistinctSaliency(adapter, flip=False, propagate=False, gamma=1)
    assert off.parameters()["propagate"] is None
    assert (off.flip, off.gamma) == (False, 1.0)
    on = dcsm.DistinctSaliency(adapter, preset="paper", propagate=True)
    assert on.parameters()["propagate"] == Propagation().as_dict()


def test_a_large_grid_is_pooled_to_the_cell_budget(monkeypatch):
    """More than MAX_CELLS locations: the features are pooled to fit, and the walk equals the
    walk on the pooled features."""
    import dcsm.pipeline.affinity as affinity

    monkeypatch.setattr(affinity, "MAX_CELLS", 12)
    f = torch.randn(1, 3, 8, 6)  # 48 cells: pooled by sqrt(48 / 12) = 2 to 4 x 3
    maps = torch.rand(1, 2, 16, 12)
    s = Propagation(steps=2, beta=2.0, radius=3)
    got = affinity.random_walk(maps, f, s)
    want = affinity.random_walk(maps, F.adaptive_avg_pool2d(f, (4, 3)), s)
    torch.testing.assert_close(got, want)
