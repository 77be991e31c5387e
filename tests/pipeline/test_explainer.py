"""The whole method on a hand-built tiny model, against an independent float64 re-computation:
multi-scale inputs, one-class-at-a-time autograd, own bilinear resampling, Eq. 2 and Eq. 3 (or
the released code's contrast), for both presets, both rules, with and without subtraction and in
both upsampling orders; plus candidate selection, per-layer maps and bad settings."""

from __future__ import annotations

import math
import warnings
import weakref

import numpy as np
import pytest
import torch
from PIL import Image

import dcsm
from dcsm.errors import DcsmError

IMAGE_SHAPE = (20, 24)
LAYERS = ["c1", "c2", "r2"]


# ----------------------------------------------------------------------------- reference
def _eq2(m: np.ndarray) -> np.ndarray:
    if m.shape[0] == 1:
        return m
    return np.stack([sum(np.maximum(m[c] - m[o], 0.0) for o in range(m.shape[0]) if o != c)
                     for c in range(m.shape[0])])


PAIR_FLOOR = 1e-4  # dcsm.pipeline.contrast.PAIR_FLOOR, restated


def _pairwise(m: np.ndarray, alpha: float) -> np.ndarray:
    """The released contrast; a pair whose difference peaks at or below 1e-4 of the larger of
    the two maps' peaks is no evidence."""
    out = np.zeros_like(m)
    for c in range(m.shape[0]):
        for o in range(m.shape[0]):
            d = m[c] - m[o]
            if o != c and d.max() > PAIR_FLOOR * max(np.abs(m[c]).max(), np.abs(m[o]).max()):
                out[c] += np.maximum(np.tanh(alpha * d / d.max()), 0.0)
    return out


def _layer_map(tiny, g: np.ndarray, size: tuple[int, int], order: str) -> np.ndarray:
    """(K, C, h, w) derivatives -> (K, H, W) maps."""
    if order == "max_first":
        return tiny.resize(np.abs(g).max(axis=1), size)
    return np.abs(tiny.resize(g, size)).max(axis=1)


def _probs(tiny, net, x: torch.Tensor, multilabel: bool, peak: bool = False) -> np.ndarray:
    """Class probabilities of the mean-pooled score map, or (``peak``, the released code's
    reading) each class's highest probability over the map's locations."""
    _, score = tiny.reference_forward(net, x, "plain")
    s = score.detach()[0]  # (C, h, w)
    if peak:
        p = torch.sigmoid(s) if multilabel else torch.softmax(s, dim=0)
        return p.amax(dim=(1, 2)).numpy()
    s = s.mean(dim=(1, 2))
    p = torch.sigmoid(s) if multilabel else torch.softmax(s, dim=0)
    return p.numpy()


def reference(tiny, net, image: np.ndarray, *, selected: list[int] | None, scales: list[float],
              layers: list[str], rule: str, alpha: float, subtract: bool, order: str,
              fusion: str, min_contrast: int, multilabel: bool = False,
              candidate_rule: str = "reference_scale", min_input: int = 8,
              threshold: float | None = None, top_k: int | None = None,
              ) -> tuple[list[int], list[int], np.ndarray, list[np.ndarray]]:
    """(selected, contrast, fused maps of the selected, per-layer maps) in float64."""
    size = image.shape[:2]
    inputs = [tiny.reference_input(image, s, min_input) for s in scales]
    probs = np.stack([_probs(tiny, net, x, multilabel, peak=candidate_rule == "any_scale")
                      for x in inputs])
    ref_row = min(range(len(scales)), key=lambda i: (abs(scales[i] - 1.0), scales[i]))
    n_classes = probs.shape[1]
    thr = (0.5 if multilabel else 0.0) if threshold is None else threshold
    if selected is None:  # automatic candidates
        level = probs.max(axis=0) if candidate_rule == "any_scale" else probs[ref_row]
        order_ = sorted(range(n_classes), key=lambda i: -level[i])
        chosen = [i for i in order_ if level[i] >= thr and level[i] > 0]
        k = (None if multilabel else 2) if top_k is None else top_k
        chosen = (chosen[:k] if k else chosen) or order_[:1]
        if candidate_rule == "any_scale" and multilabel:
            active = probs[:, chosen] >= thr
        else:
            active = np.ones((len(scales), len(chosen)), bool)
    else:
        chosen = list(selected)
        active = np.ones((len(scales), len(chosen)), bool)
    contrast = list(chosen)
    summed = probs.sum(axis=0)
    for i in sorted(range(n_classes), key=lambda i: -summed[i]):
        if len(contrast) >= min(min_contrast, n_classes):
            break
        if i not in contrast:
            contrast.append(i)
    active = np.concatenate([active, np.zeros((len(scales), len(contrast) - len(chosen)), bool)],
                            axis=1)
    k_ = len(contrast)
    per_layer = [np.zeros((k_, *size)) for _ in layers]
    for j, x in enumerate(inputs):
        grads = tiny.reference_class_grads(net, x, contrast, layers, rule)
        for i, name in enumerate(layers):
            m = _layer_map(tiny, grads[name].numpy(), size, order)
            if fusion == "paper":
                part = tiny.tanh_norm(_eq2(m) if subtract else m, alpha)
            else:
                part = (_pairwise(m, alpha) if subtract and k_ > 1 else tiny.tanh_norm(m, alpha))
                part = part * active[j][:, None, None]
            per_layer[i] += part
    if fusion == "paper":
        fused = sum(per_layer) / (len(scales) * len(layers))
        layer_maps = [p / len(scales) for p in per_layer]
    else:
        def finish(s: np.ndarray) -> np.ndarray:
            t = tiny.tanh_norm(s, alpha)
            peak = t.max(axis=(1, 2), keepdims=True)
            return np.where(peak > 0, t / np.where(peak > 0, peak, 1.0), t)

        fused = finish(sum(per_layer))
        layer_maps = [finish(p) for p in per_layer]
    n = len(chosen)
    return chosen, contrast, np.clip(fused[:n], 0, 1), [np.clip(p[:n], 0, 1) for p in layer_maps]


def _net(tiny, classes: int = 6, act: str = "relu6", seed: int = 12, **kw):
    return tiny.TinyNet(classes=classes, act=act, seed=seed, **kw)


def _check(result, names: list[str], fused: np.ndarray, shape=IMAGE_SHAPE, tol: float = 1e-5,
           floor: float = 0.5):
    assert list(result.maps) == names
    for k, name in enumerate(names):
        m = result.maps[name]
        assert m.dtype == np.float32 and m.shape == shape
        assert m.min() >= 0 and m.max() <= 1
        diff = np.abs(m.astype(np.float64) - fused[k]).max()
        assert diff < tol, f"{name}: max abs diff {diff}"
    assert fused.max() > floor  # real, non-trivial maps


# ----------------------------------------------------------------------------- exact tests
# float32 against float64. The maps carry about 1e-6 relative rounding (mostly from resizing the
# input), and normalising them by their maximum keeps that below 1e-5. Both contrasts then divide
# a difference of two maps by the difference's own maximum (Eq. 2's map, or each pair's in the
# released contrast), which amplifies the rounding by max M / max(difference): up to a few
# thousand on these nets, at most 1 / PAIR_FLOOR = 1e4 for a counted pair of the released
# contrast. Measured over 50 seeds x 8 settings: 4.4e-5 (paper) and 1.2e-4 (released, one layer's
# map) at most; the tolerances leave a margin and still fail any real difference.
def _tolerance(preset: str, subtract: bool) -> float:
    if not subtract:
        return 1e-5
    return 1e-4 if preset == "paper" else 5e-4


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("order", ["max_first", "upsample_first"])
@pytest.mark.parametrize("subtract", [True, False])
@pytest.mark.parametrize("rule", ["guided", "plain"])
@pytest.mark.parametrize("preset", ["paper", "released"])
def test_explain_matches_float64_reference(tiny, preset, rule, subtract, order, seed):
    net = _net(tiny, seed=seed)
    adapter = tiny.adapter(net, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=seed)
    p = dcsm.PRESETS[preset]
    explainer = dcsm.DistinctSaliency(adapter, preset=preset, backprop=rule, subtract=subtract,
                                      upsample=order)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", dcsm.DcsmWarning)
        result = explainer.explain(image, classes=["gamma", "ALPHA"], per_layer=True)
    chosen, contrast, fused, layer_maps = reference(
        tiny, net, image, selected=[2, 0], scales=list(p.scales), layers=LAYERS, rule=rule,
        alpha=3.0, subtract=subtract, order=order, fusion=p.fusion, min_contrast=p.min_contrast,
        candidate_rule=p.candidate_rule)
    names = ["gamma", "alpha"]
    tol = _tolerance(preset, subtract)
    _check(result, names, fused, tol=tol)
    # dcsm warns of the classes whose contrasted map is zero everywhere, and of no other
    zero = [n for k, n in enumerate(names) if subtract and fused[k].max() == 0]
    assert sorted(str(w.message).split("'")[1] for w in caught) == sorted(zero)
    assert [c.index for c in result.candidates] == chosen
    assert [c.index for c in result.contrast] == contrast
    if preset == "released":
        assert len(contrast) == 4  # topped up by summed score
    assert result.layer_maps is not None
    for k, name in enumerate(names):
        assert list(result.layer_maps[name]) == LAYERS
        for i, layer in enumerate(LAYERS):
            got = result.layer_maps[name][layer]
            assert got.shape == IMAGE_SHAPE
            assert np.abs(got - layer_maps[i][k]).max() < tol
    assert result.parameters == {
        "preset": preset, "scales": list(p.scales), "layers": LAYERS, "backprop": rule,
        "alpha": 3.0, "subtract": subtract, "upsample": order, "reduce": "max_abs",
        "propagate": None, "flip": False, "gamma": 1.0, "gate": 0.0, "fusion": p.fusion,
        "contrast": p.contrast, "candidate_rule": p.candidate_rule, "min_contrast": p.min_contrast,
        "max_side": 512, "precision": "float32",
    }
    assert result.method == "dcsm" and result.model == "tiny"
    assert np.array_equal(result.image, image)


@pytest.mark.parametrize("preset", ["paper", "released"])
def test_custom_scales_alpha_layers_and_batch_loop(tiny, preset):
    net = _net(tiny, act="relu", seed=12)
    adapter = tiny.adapter(net)
    image = tiny.image(*IMAGE_SHAPE, seed=2)
    scales, layers = [1.3, 0.9], ["r1", "c2"]
    kwargs = dict(preset=preset, scales=scales, layers=layers, alpha=1.5)
    # Beta responds less than zeta or delta at every location: its distinct map is zero, and
    # dcsm says so.
    with pytest.warns(dcsm.DcsmWarning, match="'Beta' is zero everywhere"):
        vmap = dcsm.DistinctSaliency(adapter, batch="vmap", **kwargs).explain(
            image, classes=[5, 1, 3])
    with pytest.warns(dcsm.DcsmWarning, match="'Beta' is zero everywhere"):
        loop = dcsm.DistinctSaliency(adapter, batch="loop", **kwargs).explain(
            image, classes=[5, 1, 3])
    p = dcsm.PRESETS[preset]
    _, _, fused, _ = reference(tiny, net, image, selected=[5, 1, 3], scales=scales,
                               layers=layers, rule="guided", alpha=1.5, subtract=True,
                               order="max_first", fusion=p.fusion, min_contrast=p.min_contrast,
                               candidate_rule=p.candidate_rule)
    names = ["zeta", "Beta", "delta"]
    _check(vmap, names, fused)
    _check(loop, names, fused)
    for name in names:
        np.testing.assert_allclose(vmap.maps[name], loop.maps[name], rtol=0, atol=1e-6)
    assert vmap.layer_maps is None
    if preset == "paper":
        assert max(m.max() for m in vmap.maps.values()) <= math.tanh(1.5) + 1e-6


def test_single_class_is_not_contrasted(tiny):
    net = _net(tiny, seed=12)
    adapter = tiny.adapter(net, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=3)
    result = dcsm.DistinctSaliency(adapter, preset="paper").explain(image, classes=["delta"])
    raw = dcsm.DistinctSaliency(adapter, preset="paper", subtract=False).explain(
        image, classes=["delta"])
    _, _, fused, _ = reference(tiny, net, image, selected=[3], scales=[1.0, 1.2, 1.4, 1.6],
                               layers=LAYERS, rule="guided", alpha=3.0, subtract=False,
                               order="max_first", fusion="paper", min_contrast=1)
    _check(result, ["delta"], fused)
    np.testing.assert_array_equal(result.maps["delta"], raw.maps["delta"])


def test_automatic_candidates_softmax(tiny):
    net = _net(tiny, seed=14)
    adapter = tiny.adapter(net, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=4)
    result = dcsm.DistinctSaliency(adapter, preset="paper").explain(image)
    chosen, _, fused, _ = reference(
        tiny, net, image, selected=None, scales=[1.0, 1.2, 1.4, 1.6], layers=LAYERS,
        rule="guided", alpha=3.0, subtract=True, order="max_first", fusion="paper",
        min_contrast=1)
    assert len(chosen) == 2 and [c.index for c in result.candidates] == chosen
    _check(result, [tiny.names[i] for i in chosen], fused)
    probs = _probs(tiny, net, tiny.reference_input(image, 1.0), False)
    assert [c.score for c in result.candidates] == pytest.approx(probs[chosen].tolist(), abs=1e-5)
    top3 = dcsm.DistinctSaliency(adapter, preset="paper").explain(image, top_k=3)
    assert len(top3.candidates) == 3


def test_released_multilabel_any_scale_with_active_mask(tiny):
    """Classes whose score map peaks over the threshold at only some scales contribute only at
    those scales."""
    net = _net(tiny, classes=6, seed=12, head_bias=[-0.7, -1.0, -3.0, -1.9, -1.2, -3.0])
    adapter = tiny.adapter(net, multilabel=True, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=5)
    scales = [0.8, 1.0, 1.2]
    inputs = [tiny.reference_input(image, s) for s in scales]
    probs = np.stack([_probs(tiny, net, x, True, peak=True) for x in inputs])
    chosen, contrast, fused, _ = reference(
        tiny, net, image, selected=None, scales=scales, layers=LAYERS, rule="guided", alpha=3.0,
        subtract=True, order="max_first", fusion="released", min_contrast=4, multilabel=True,
        candidate_rule="any_scale")
    passing = probs[:, chosen] >= 0.5
    assert len(chosen) >= 2 and not passing.all(), f"test needs a partial mask:\n{probs}"
    assert np.abs(probs[:, chosen] - 0.5).min() > 1e-3  # not decided by rounding
    # dcsm.m reads the score map by its spatial maximum: the mean-pooled scores pass no class
    pooled = np.stack([_probs(tiny, net, x, True) for x in inputs])
    assert (pooled < 0.5).all()
    result = dcsm.DistinctSaliency(adapter, preset="released").explain(image)
    assert [c.index for c in result.candidates] == chosen
    assert [c.index for c in result.contrast] == contrast
    assert [c.score for c in result.candidates] == pytest.approx(probs[1, chosen].tolist(),
                                                                 abs=1e-6)
    _check(result, [tiny.names[i] for i in chosen], fused, tol=_tolerance("released", True))


@pytest.mark.parametrize("preset,graphs,scores_only", [("paper", 4, 0), ("released", 3, 2),
                                                        ("tuned", 2, 0)])
def test_one_scale_graph_alive_at_a_time(tiny, preset, graphs, scores_only):
    """Every preset holds one scale's autograd graph at a time: the released rule, which needs
    every scale's scores before choosing, gets them from forwards that keep no graph; the tuned
    preset's mirror image is one more graph, alive after the image's is gone."""

    class Watched(tiny.TinyNet):
        def __init__(self) -> None:
            super().__init__(classes=6, act="relu6", seed=12)
            self.graphs: list[weakref.ref] = []
            self.alive: list[int] = []  # graph outputs still alive when another graph starts
            self.plain = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = super().forward(x)
            if out.requires_grad:
                self.alive.append(sum(r() is not None for r in self.graphs))
                self.graphs.append(weakref.ref(out))
            else:
                self.plain += 1
            return out

    net = Watched()
    adapter = tiny.adapter(net, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=5)
    result = dcsm.DistinctSaliency(adapter, preset=preset).explain(image, classes=[2, 0])
    assert net.alive == [0] * graphs
    assert net.plain == scores_only
    assert all(r() is None for r in net.graphs)
    same = dcsm.DistinctSaliency(tiny.adapter(tiny.TinyNet(classes=6, act="relu6", seed=12),
                                              layers=tuple(LAYERS)), preset=preset)
    for name, m in same.explain(image, classes=[2, 0]).maps.items():
        np.testing.assert_array_equal(result.maps[name], m)


def test_small_image_is_enlarged_and_maps_keep_its_shape(tiny):
    net = _net(tiny, seed=15)
    adapter = tiny.adapter(net, min_input=16, layers=("c1", "c2"))
    image = tiny.image(10, 12, seed=6)
    result = dcsm.DistinctSaliency(adapter, preset="paper", scales=[1.0, 1.5]).explain(
        image, classes=[0, 1])
    _, _, fused, _ = reference(tiny, net, image, selected=[0, 1], scales=[1.0, 1.5],
                               layers=["c1", "c2"], rule="guided", alpha=3.0, subtract=True,
                               order="max_first", fusion="paper", min_contrast=1, min_input=16)
    _check(result, ["alpha", "Beta"], fused, shape=(10, 12))


def test_image_kinds_give_the_same_maps(tiny, tmp_path):
    adapter = tiny.adapter(_net(tiny, seed=16))
    image = tiny.image(*IMAGE_SHAPE, seed=7)
    explainer = dcsm.DistinctSaliency(adapter, scales=[1.0])
    ref = explainer.explain(image, classes=["alpha", "gamma"])
    path = tmp_path / "im.png"
    Image.fromarray(image).save(path)
    rgba = np.concatenate([image, np.full((*IMAGE_SHAPE, 1), 255, np.uint8)], axis=2)
    for other in (Image.fromarray(image), path, str(path), rgba):
        got = explainer.explain(other, classes=["alpha", "gamma"])
        for name in ref.maps:
            np.testing.assert_array_equal(got.maps[name], ref.maps[name])
    grey = explainer.explain(image[:, :, 0], classes=["alpha"])
    same = explainer.explain(np.repeat(image[:, :, :1], 3, axis=2), classes=["alpha"])
    np.testing.assert_array_equal(grey.maps["alpha"], same.maps["alpha"])


# ----------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize("kwargs,match", [
    ({"scales": []}, "at least one scale"),
    ({"scales": [1.0, -1.0]}, "scales must lie"),
    ({"scales": [0.0]}, "scales must lie"),
    ({"scales": [float("nan")]}, "scales must lie"),
    ({"scales": [float("inf")]}, "scales must lie"),
    ({"alpha": 0.0}, "alpha"),
    ({"alpha": -3.0}, "alpha"),
    ({"alpha": float("nan")}, "alpha"),
    ({"layers": ["c1", "nope"]}, "unknown layer 'nope'"),
    ({"layers": []}, "no layers"),
    ({"layers": ["c1", "c1"]}, "twice"),
    ({"preset": "nope"}, "unknown preset"),
    ({"backprop": "nope"}, "unknown back-propagation rule"),
    ({"upsample": "nearest"}, "unknown upsampling order"),
    ({"reduce": "median"}, "unknown channel reduction 'median'"),
    ({"propagate": 3}, "propagate must be a dcsm.pipeline.affinity.Propagation"),
    ({"flip": 1}, "flip must be True or False"),
    ({"propagate": dcsm.pipeline.affinity.Propagation(layer="nowhere")},
     "propagation layer 'nowhere'"),
    ({"batch": "parallel"}, "unknown batch mode"),
])
def test_bad_settings_raise(tiny, kwargs, match):
    adapter = tiny.adapter(_net(tiny))
    with pytest.raises(DcsmError, match=match):
        dcsm.DistinctSaliency(adapter, **kwargs)


@pytest.mark.parametrize("image,match", [
    (np.zeros((20, 24, 3), np.float32), "uint8"),
    (np.zeros((5, 24, 3), np.uint8), "at least 8x8"),
    (np.zeros((20, 24, 2), np.uint8), "got"),
])
def test_bad_images_raise(tiny, image, match):
    explainer = dcsm.DistinctSaliency(tiny.adapter(_net(tiny)), scales=[1.0])
    with pytest.raises(DcsmError, match=match):
        explainer.explain(image, classes=["alpha"])


def test_bad_classes_raise(tiny):
    explainer = dcsm.DistinctSaliency(tiny.adapter(_net(tiny)), scales=[1.0])
    image = tiny.image(*IMAGE_SHAPE)
    with pytest.raises(DcsmError, match="unknown class 'omega'"):
        explainer.explain(image, classes=["alpha", "omega"])
    with pytest.raises(DcsmError, match="out of range"):
        explainer.explain(image, classes=[6])
    with pytest.raises(DcsmError, match="top-k"):
        explainer.explain(image, top_k=0)


# ----------------------------------------------------------------------------- grad modes, pooling
def test_explain_under_no_grad_is_unchanged(tiny):
    adapter = tiny.adapter(_net(tiny), layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=8)
    explainer = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.2])
    ref = explainer.explain(image, classes=[0, 1])
    with torch.no_grad():
        got = explainer.explain(image, classes=[0, 1])
    for name in ref.maps:
        np.testing.assert_array_equal(got.maps[name], ref.maps[name])


def test_explain_under_inference_mode_is_unchanged(tiny):
    adapter = tiny.adapter(_net(tiny), layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=8)
    explainer = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.2])
    ref = explainer.explain(image, classes=[0, 1])
    with torch.inference_mode():
        got = explainer.explain(image, classes=[0, 1])
    for name in ref.maps:
        np.testing.assert_array_equal(got.maps[name], ref.maps[name])


def test_max_pooled_multilabel_candidates(tiny):
    """With global max pooling (Oquab et al.) the image-level score is the map's maximum."""
    net = _net(tiny, head_bias=[2.0, 0.7, -0.1, -0.275, -3.0, 0.24])
    adapter = tiny.adapter(net, multilabel=True, layers=tuple(LAYERS))
    adapter.pooling = "max"
    image = tiny.image(*IMAGE_SHAPE, seed=5)
    _, score = tiny.reference_forward(net, tiny.reference_input(image, 1.0), "plain")
    peak = torch.sigmoid(score.detach().amax(dim=(2, 3))[0]).numpy()
    mean = torch.sigmoid(score.detach().mean(dim=(2, 3))[0]).numpy()
    chosen = [int(i) for i in np.argsort(-peak) if peak[i] >= 0.5]
    assert chosen != [int(i) for i in np.argsort(-mean) if mean[i] >= 0.5]
    result = dcsm.DistinctSaliency(adapter, preset="paper", scales=[1.0, 1.4]).explain(image)
    assert [c.index for c in result.candidates] == chosen
    assert [c.score for c in result.candidates] == pytest.approx(peak[chosen].tolist(), abs=1e-5)
    _, _, fused, _ = reference(tiny, net, image, selected=chosen, scales=[1.0, 1.4],
                               layers=LAYERS, rule="guided", alpha=3.0, subtract=True,
                               order="max_first", fusion="paper", min_contrast=1)
    _check(result, [tiny.names[i] for i in chosen], fused)


# ----------------------------------------------------------------------------- tuned preset
def _map_rank64(score: np.ndarray) -> list[int]:
    """Classes by the locations of a (C, h, w) score map where they are the most probable
    (softmax), then by their highest probability: a float64 re-statement of the rule."""
    p = np.exp(score - score.max(axis=0))
    p /= p.sum(axis=0)
    wins = np.bincount(p.argmax(axis=0).ravel(), minlength=p.shape[0])
    return sorted(range(p.shape[0]), key=lambda c: (-wins[c], -p[c].max(), c))


def _lookalike64(score: np.ndarray, a: int, b: int) -> bool:
    """Whether a and b contest the locations of a (C, h, w) score map: at half or more of the
    four or more locations either wins, the other is the second most probable class (softmax,
    float64)."""
    second, first = np.argsort(score, axis=0, kind="stable")[-2:]
    wins = int((first == a).sum() + (first == b).sum())
    both = int((((first == a) & (second == b)) | ((first == b) & (second == a))).sum())
    return wins >= 4 and both / wins >= 0.5


def _distinct64(score: np.ndarray, taken: list[int], ranking: list[int], size: int
                ) -> list[int]:
    """``taken`` extended along ``ranking`` to ``size`` classes, skipping look-alikes."""
    out = list(taken)
    for c in ranking:
        if len(out) >= size:
            break
        if c not in out and not any(_lookalike64(score, c, o) for o in out):
            out.append(c)
    return out


@pytest.mark.parametrize("named", [True, False])
def test_tuned_preset_matches_float64_reference(tiny, named):
    """Scale 1, the strongest other class subtracted, tanh(M / max M), mean over layers, and
    candidates (or the named class's contrast set, with min_contrast 3) from the score map,
    look-alikes skipped."""
    net = _net(tiny, seed=14)
    adapter = tiny.adapter(net, layers=tuple(LAYERS))
    image = tiny.image(*IMAGE_SHAPE, seed=5)
    explainer = dcsm.DistinctSaliency(adapter, preset="tuned", min_contrast=3, flip=False,
                                      propagate=False, gamma=1.0, gate=0.0)
    result = (explainer.explain(image, classes=["delta"]) if named
              else explainer.explain(image, top_k=2))
    x = tiny.reference_input(image, 1.0)
    _, score = tiny.reference_forward(net, x, "plain")
    score64 = score.detach()[0].numpy()
    ranking = _map_rank64(score64)
    chosen = [3] if named else _distinct64(score64, [], ranking, 2)
    contrast = _distinct64(score64, chosen, ranking, 3)
    assert [c.index for c in result.candidates] == chosen
    assert [c.index for c in result.contrast] == contrast
    grads = tiny.reference_class_grads(net, x, contrast, LAYERS, "guided")
    fused = np.zeros((len(contrast), *IMAGE_SHAPE))
    for name in LAYERS:
        m = _layer_map(tiny, grads[name].numpy(), IMAGE_SHAPE, "max_first")
        strongest = np.stack([np.maximum(m[c] - np.delete(m, c, axis=0).max(axis=0), 0.0)
                              for c in range(len(contrast))])
        fused += tiny.tanh_norm(strongest, 1.0) / len(LAYERS)
    # (tanh(1) = 0.76 at most, and the strongest other class takes much of each map)
    _check(result, [tiny.names[i] for i in chosen], fused[:len(chosen)], floor=0.2)
    assert result.parameters["candidate_rule"] == "score_map"
    assert result.parameters["min_contrast"] == 3


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_min_contrast_raises(tiny, bad):
    with pytest.raises(DcsmError, match="min_contrast"):
        dcsm.DistinctSaliency(tiny.adapter(_net(tiny)), min_contrast=bad)
