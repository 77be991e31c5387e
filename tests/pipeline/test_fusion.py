"""Invariants of the method and of its image input, checked on many generated cases (hypothesis)
with the tiny models of ``conftest.py``:

* every map lies in [0, 1] (within [0, tanh alpha] for the per-layer normalisation), has the
  image's shape, and the released preset's maps peak at exactly 1 or are zero;
* the order in which the candidates are named changes no class's map;
* scaling the gradients by a positive constant changes no map: Eq. 2 and the strongest-class
  contrast scale linearly, ``tanh(alpha M / max M)`` and the released pairwise contrast not at
  all (exactly so for powers of two, which scale floats without rounding);
* any numpy array is either explained or refused with a one-line ``DcsmError``, never another
  exception, and exactly the (H, W), (H, W, 3), (H, W, 4) uint8 arrays of at least 8 x 8 are
  explained.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.contrast import pairwise_saturated_contrast, subtract_others, subtract_strongest
from dcsm.pipeline.fusion import PaperFusion, ReleasedFusion, tanh_normalize

# No example database: nothing is written into the checkout (.hypothesis/).
SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
CLASSES = 6
PRESETS = ["paper", "released", "tuned"]
LAYERS = ("c1", "c2", "r2")


def _adapter(tiny, seed: int, head_scale: float = 1.0):
    net = tiny.TinyNet(classes=CLASSES, act="relu6", seed=seed)
    if head_scale != 1.0:  # every class score, hence every gradient, times head_scale
        with torch.no_grad():
            net.conv3.weight.mul_(head_scale)
            net.conv3.bias.mul_(head_scale)
    return tiny.adapter(net, layers=LAYERS)


def _explain(explainer, image, classes):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dcsm.DcsmWarning)  # an empty map is a legal outcome
        return explainer.explain(image, classes=classes)


def _explainer(adapter, preset: str, classes: int) -> dcsm.DistinctSaliency:
    """The preset, contrasting exactly the named classes (no top-up by scores, which scaling
    the scores would reorder) unless ``classes`` asks for more."""
    return dcsm.DistinctSaliency(adapter, preset=preset, min_contrast=classes)


images = st.builds(lambda h, w, seed: (h, w, seed), st.integers(8, 40), st.integers(8, 40),
                   st.integers(0, 2**16))
class_lists = st.lists(st.integers(0, CLASSES - 1), min_size=1, max_size=4, unique=True)


# ----------------------------------------------------------------------------- range and shape
@SETTINGS
@given(image=images, classes=class_lists, preset=st.sampled_from(PRESETS),
       seed=st.integers(0, 50))
def test_maps_lie_in_the_unit_range_and_have_the_image_shape(tiny, image, classes, preset,
                                                             seed):
    h, w, image_seed = image
    img = tiny.image(h, w, seed=image_seed)
    explainer = dcsm.DistinctSaliency(_adapter(tiny, seed), preset=preset)
    result = _explain(explainer, img, classes)
    assert list(result.maps) == [tiny.names[c] for c in classes]
    ceiling = {"paper": math.tanh(3.0), "released": 1.0, "tuned": math.tanh(1.0)}[preset]
    for m in result.maps.values():
        assert m.shape == (h, w) and m.dtype == np.float32
        assert np.isfinite(m).all() and m.min() >= 0 and m.max() <= ceiling + 1e-6
        if preset == "released":  # tanh(3 s / max s) divided by its maximum
            assert m.max() == 0 or m.max() == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------- candidate order
@SETTINGS
@given(classes=st.permutations(range(CLASSES)).map(lambda p: p[:3]),
       order=st.permutations(range(3)), preset=st.sampled_from(PRESETS),
       seed=st.integers(0, 50), image_seed=st.integers(0, 2**16))
def test_candidate_order_changes_no_map(tiny, classes, order, preset, seed, image_seed):
    img = tiny.image(16, 20, seed=image_seed)
    explainer = dcsm.DistinctSaliency(_adapter(tiny, seed), preset=preset)
    first = _explain(explainer, img, list(classes))
    again = _explain(explainer, img, [classes[i] for i in order])
    assert {c.index for c in first.contrast} == {c.index for c in again.contrast}
    assert set(first.maps) == set(again.maps)
    for name, m in first.maps.items():
        np.testing.assert_allclose(again.maps[name], m, rtol=0, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- scaling
# Map values: zero, or normal floats far from underflow, so that a power of two scales them
# without rounding (a subnormal halved loses its last bit).
values = st.one_of(st.just(0.0), st.floats(1e-30, 10.0))
maps_strategy = st.integers(1, 4).flatmap(lambda k: hnp.arrays(np.float64, (k, 5, 6),
                                                                elements=values))
three_maps = hnp.arrays(np.float64, (3, 5, 6), elements=values)  # three classes' maps
powers_of_two = st.integers(-20, 20).map(lambda e: 2.0 ** e)
positive = st.floats(1e-3, 1e3, allow_nan=False, allow_infinity=False)


@SETTINGS
@given(maps=maps_strategy, factor=powers_of_two, alpha=st.floats(0.1, 10.0))
def test_contrasts_and_normalisation_under_exact_scaling(maps, factor, alpha):
    m = torch.from_numpy(maps)
    s = m * factor  # exact: a power of two
    torch.testing.assert_close(tanh_normalize(s, alpha), tanh_normalize(m, alpha), rtol=0,
                               atol=0)
    torch.testing.assert_close(subtract_others(s), subtract_others(m) * factor, rtol=0, atol=0)
    torch.testing.assert_close(subtract_strongest(s), subtract_strongest(m) * factor, rtol=0,
                               atol=0)
    torch.testing.assert_close(pairwise_saturated_contrast(s, alpha),
                               pairwise_saturated_contrast(m, alpha), rtol=0, atol=0)


@SETTINGS
@given(maps=maps_strategy, factor=positive, alpha=st.floats(0.1, 10.0))
def test_contrasts_and_normalisation_under_any_positive_scaling(maps, factor, alpha):
    m = torch.from_numpy(maps)
    s = m * factor
    torch.testing.assert_close(tanh_normalize(s, alpha), tanh_normalize(m, alpha), rtol=1e-9,
                               atol=1e-12)
    torch.testing.assert_close(subtract_others(s), subtract_others(m) * factor, rtol=1e-9,
                               atol=1e-12 * factor)
    torch.testing.assert_close(subtract_strongest(s), subtract_strongest(m) * factor, rtol=1e-9,
                               atol=1e-12 * factor)


@SETTINGS
@given(layers=st.lists(three_maps, min_size=1, max_size=4),
       factors=st.lists(powers_of_two, min_size=4, max_size=4))
def test_fusions_ignore_each_layers_gradient_scale(layers, factors):
    """Each layer's maps may come at their own scale (derivatives differ by orders between
    layers): Eq. 3 as dcsm reads it, and the released fusion, give the same maps."""
    for fusion_cls, contrast in ((PaperFusion, "sum"), (PaperFusion, "strongest"),
                                 (ReleasedFusion, "pairwise")):
        plain = fusion_cls(len(layers), 3.0, contrast=contrast)
        scaled = fusion_cls(len(layers), 3.0, contrast=contrast)
        for i, m in enumerate(layers):
            plain.add(i, torch.from_numpy(m))
            scaled.add(i, torch.from_numpy(m) * factors[i])
        torch.testing.assert_close(scaled.result(), plain.result(), rtol=0, atol=0)


@SETTINGS
@given(exponent=st.integers(-6, 6).filter(bool), preset=st.sampled_from(PRESETS),
       seed=st.integers(0, 50), image_seed=st.integers(0, 2**16))
def test_scaling_the_class_scores_changes_no_map(tiny, exponent, preset, seed, image_seed):
    """The class scores, hence every gradient, times 2**exponent: the same maps, bit for bit
    (the forward below the head, and so every rectifier's mask, is unchanged)."""
    img = tiny.image(16, 20, seed=image_seed)
    classes = [4, 0, 2]
    ref = _explain(_explainer(_adapter(tiny, seed), preset, 3), img, classes)
    got = _explain(_explainer(_adapter(tiny, seed, 2.0 ** exponent), preset, 3), img, classes)
    for name, m in ref.maps.items():
        np.testing.assert_array_equal(got.maps[name], m, err_msg=name)


@SETTINGS
@given(factor=st.floats(0.05, 20.0), seed=st.integers(0, 50),
       image_seed=st.integers(0, 2**16))
def test_scaling_the_class_scores_by_any_factor(tiny, factor, seed, image_seed):
    img = tiny.image(16, 20, seed=image_seed)
    ref = _explain(_explainer(_adapter(tiny, seed), "paper", 3), img, [1, 3, 5])
    got = _explain(_explainer(_adapter(tiny, seed, factor), "paper", 3), img, [1, 3, 5])
    for name, m in ref.maps.items():
        np.testing.assert_allclose(got.maps[name], m, rtol=0, atol=1e-5, err_msg=name)


# ----------------------------------------------------------------------------- image input
DTYPES = [np.uint8, np.uint16, np.int8, np.int32, np.float16, np.float32, np.float64, np.bool_]
SHAPES = st.builds(lambda h, w, c: (h, w) if c is None else (h, w, c),
                   st.integers(1, 64), st.integers(1, 64),
                   st.sampled_from([None, 1, 2, 3, 4, 5]))


@pytest.fixture(scope="module")
def input_explainer(tiny):
    return dcsm.DistinctSaliency(_adapter(tiny, 3), scales=[1.0])


@settings(SETTINGS, max_examples=40)
@given(data=st.data(), dtype=st.sampled_from(DTYPES), shape=SHAPES)
def test_any_array_is_explained_or_refused_with_dcsm_error(input_explainer, data, dtype, shape):
    image = data.draw(hnp.arrays(dtype, shape))  # any values: NaN, infinities, extremes
    accepted = (image.dtype == np.uint8 and (image.ndim == 2 or image.shape[2] in (3, 4))
                and min(image.shape[:2]) >= 8)
    try:
        result = _explain(input_explainer, image, [0, 1])
    except DcsmError as exc:
        assert not accepted, f"refused a valid image: {exc}"
        assert str(exc) and "\n" not in str(exc)
        return
    assert accepted, f"explained an array it should refuse: {image.dtype} {image.shape}"
    for m in result.maps.values():
        assert m.shape == image.shape[:2] and np.isfinite(m).all()
        assert m.min() >= 0 and m.max() <= 1
