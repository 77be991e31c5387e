"""The score-map weighting (:mod:`dcsm.pipeline.gate`) against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.gate import check_power, class_scores, score_gate

IMAGE_SHAPE = (20, 24)


def test_score_gate_is_the_equation(tiny):
    rng = np.random.default_rng(0)
    maps = rng.random((2, 3, 8, 12))
    scores = rng.normal(size=(2, 3, 2, 3)) * 4
    scores[1, 2] = -7.0  # a score map the same everywhere weighs nothing
    for power in (0.5, 1.0, 2.0):
        got = score_gate(torch.from_numpy(maps).float(), torch.from_numpy(scores).float(),
                         power)
        low = scores.min(axis=(-2, -1), keepdims=True)
        span = scores.max(axis=(-2, -1), keepdims=True) - low
        weight = np.where(span > 0, (scores - low) / np.where(span > 0, span, 1.0), 1.0)
        want = maps * tiny.resize(weight ** power, (8, 12))
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[1, 2].numpy(), maps[1, 2].astype(np.float32))
    same = torch.from_numpy(maps)
    assert score_gate(same, torch.from_numpy(scores), 0.0) is same


def test_class_scores_picks_each_images_slots():
    scores = torch.arange(2 * 5 * 2 * 2, dtype=torch.float32).reshape(2, 5, 2, 2)
    targets = torch.tensor([[3, 0], [1, 4]])
    got = class_scores(scores, targets)
    assert torch.equal(got[0, 0], scores[0, 3]) and torch.equal(got[0, 1], scores[0, 0])
    assert torch.equal(got[1, 0], scores[1, 1]) and torch.equal(got[1, 1], scores[1, 4])


@pytest.mark.parametrize("bad", [-0.5, 4.5, float("nan"), float("inf"), True, "1"])
def test_bad_powers_are_one_line(bad):
    with pytest.raises(DcsmError, match="gate must be a number in"):
        check_power(bad)
    with pytest.raises(DcsmError, match="gate must be a number in"):
        dcsm.Preset(name="x", scales=(1.0,), fusion="paper", candidate_rule="score_map",
                    min_contrast=1, gate=bad)


def test_the_explainer_weights_its_maps_by_the_score_maps_probabilities(tiny):
    """The gated maps are the ungated ones times the float64 score map scaled to [0, 1]."""
    net = tiny.TinyNet(classes=6, act="relu", seed=4)
    adapter = tiny.adapter(net)
    image = tiny.image(*IMAGE_SHAPE, seed=3)
    kwargs = dict(preset="tuned", layers=["c1", "c2"], flip=False, propagate=False, gamma=1.0)
    classes = ["gamma", "alpha"]
    plain = dcsm.DistinctSaliency(adapter, gate=0.0, **kwargs).explain(image, classes=classes)
    gated = dcsm.DistinctSaliency(adapter, gate=0.5, **kwargs).explain(image, classes=classes)
    assert gated.parameters["gate"] == 0.5 and plain.parameters["gate"] == 0.0
    _, score = tiny.reference_forward(net, tiny.reference_input(image, 1.0), "plain")
    scores = score.detach()[0].numpy()  # (C, h, w)
    for c in gated.candidates:
        s = scores[c.index]
        weight = tiny.resize(((s - s.min()) / (s.max() - s.min())) ** 0.5, IMAGE_SHAPE)
        np.testing.assert_allclose(gated.maps[c.name], plain.maps[c.name] * weight,
                                   rtol=1e-4, atol=1e-6)
        assert not np.allclose(gated.maps[c.name], plain.maps[c.name])  # the gate did act
