"""The restricted classifier: after the candidates' scale, only the slots' classifier rows run.

The scores it computes are rows of the full score map, its gradients those of the full model,
the explainer's maps unchanged; a model it cannot be applied to cleanly (a per-class tensor or
a softmax after the classifier, two classifier-shaped convolutions) gets the full forward.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import dcsm
import dcsm.pipeline.explainer as explainer_mod
from dcsm.pipeline.gradients import forward_pass, iter_class_gradients
from dcsm.pipeline.rules import get_rule
from dcsm.pipeline.speedups.head import HeadRestrictionFailed, head_restriction

LAYERS = ["c1", "r2"]


def _input(seed: int = 0, n: int = 2) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 14, 18, generator=gen) * 1.5


class _Tail(nn.Module):
    """TinyNet followed by an operation on its score map."""

    def __init__(self, tiny, tail: str, classes: int = 6) -> None:
        super().__init__()
        self.body = tiny.TinyNet(classes=classes, seed=5)
        self.tail = tail
        self.temperature = nn.Parameter(torch.linspace(0.5, 2.0, classes)[None, :, None, None],
                                        requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.body(x)
        if self.tail == "relu":
            return torch.relu(z)
        if self.tail == "per-class":
            return z * self.temperature
        if self.tail == "softmax":
            return torch.softmax(z, dim=1)
        return z


class _TwoHeads(nn.Module):
    """Two 1x1 convolutions of the classifier's shape, one after the other."""

    def __init__(self, tiny) -> None:
        super().__init__()
        self.body = tiny.TinyNet(classes=5, seed=2)
        self.mix = nn.Conv2d(5, 5, 1)
        gen = torch.Generator().manual_seed(7)  # not the global generator: the test order
        with torch.no_grad():                   # must not decide the weights
            for p in self.mix.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(torch.relu(self.body(x)))


def _adapter(tiny, model: nn.Module, classes: int):
    adapter = tiny.adapter(model, classes=classes)
    prefix = "body." if hasattr(model, "body") else ""
    adapter.layer_aliases = {"c1": f"{prefix}conv1", "r2": f"{prefix}act2"}
    return adapter


@pytest.mark.parametrize("tail", ["none", "relu"])
@pytest.mark.parametrize("rule", ["plain", "guided"])
def test_restricted_scores_and_gradients_are_the_full_models(tiny, tail, rule):
    model = _Tail(tiny, tail)
    adapter = _adapter(tiny, model, 6)
    x = _input()
    targets = torch.tensor([[4, 1], [2, 4]])
    full = forward_pass(adapter, x, LAYERS, get_rule(rule))
    head = head_restriction(full, list(full.activations.values()), targets)
    assert head is not None
    assert head.rows.tolist() == [1, 2, 4]
    assert head.targets.tolist() == [[2, 0], [1, 2]]
    part = forward_pass(adapter, x, LAYERS, get_rule(rule), head=head)
    assert part.score_map.shape == (2, 3, *full.score_map.shape[2:])
    torch.testing.assert_close(part.score_map, full.score_map[:, head.rows], rtol=1e-6,
                               atol=1e-6)
    want = list(iter_class_gradients(full, targets, list(full.activations.values()), "loop",
                                     head=False))
    got = list(iter_class_gradients(part, head.targets, list(part.activations.values()), "loop"))
    for w, g in zip(want, got, strict=True):
        for wi, gi in zip(w, g, strict=True):
            assert wi.abs().max() > 0
            torch.testing.assert_close(gi, wi, rtol=1e-5, atol=1e-6)
    assert tiny.leftover_state(model) == []


def test_every_class_or_a_mixing_tail_is_not_restricted(tiny):
    model = _Tail(tiny, "none", classes=3)
    adapter = _adapter(tiny, model, 3)
    fp = forward_pass(adapter, _input(), LAYERS, get_rule("guided"))
    assert head_restriction(fp, list(fp.activations.values()), [0, 1, 2]) is None
    soft = _adapter(tiny, _Tail(tiny, "softmax"), 6)
    fp = forward_pass(soft, _input(), LAYERS, get_rule("guided"))
    assert head_restriction(fp, list(fp.activations.values()), [0, 3]) is None


@pytest.mark.parametrize("case", ["per-class", "two heads"])
def test_a_model_that_resists_gets_the_full_forward(tiny, case):
    model = _Tail(tiny, "per-class") if case == "per-class" else _TwoHeads(tiny)
    classes = 6 if case == "per-class" else 5
    adapter = _adapter(tiny, model, classes)
    x = _input()
    full = forward_pass(adapter, x, LAYERS, get_rule("guided"))
    head = head_restriction(full, list(full.activations.values()), [0, 3])
    assert head is not None  # the reference scale cannot tell
    with pytest.raises(HeadRestrictionFailed):
        forward_pass(adapter, x, LAYERS, get_rule("guided"), head=head)
    assert tiny.leftover_state(model) == []

    # the explainer falls back and its maps are those of the full forward
    image = tiny.image(20, 24, seed=4)
    maps = {}
    for restrict in (True, False):
        ex = dcsm.DistinctSaliency(adapter, preset="paper", scales=(1.0, 1.5), layers=LAYERS,
                                   subtract=False)  # no class can be all zero
        ex._restrict_head = restrict
        maps[restrict] = ex.explain(image, classes=[0, 3]).maps
    for name in maps[False]:
        assert maps[False][name].max() > 0
        np.testing.assert_allclose(maps[True][name], maps[False][name], rtol=0, atol=1e-6)
    assert tiny.leftover_state(model) == []


def test_explainer_restricts_after_the_reference_scale_only(tiny, monkeypatch):
    model = _Tail(tiny, "relu")
    adapter = _adapter(tiny, model, 6)
    seen = []
    real = explainer_mod.forward_pass

    def spy(*args, **kwargs):  # noqa: ANN002,ANN003,ANN202
        fp = real(*args, **kwargs)
        seen.append((kwargs.get("head") is not None, fp.score_map.shape[1]))
        return fp

    x = _input(seed=1)  # a tensor is taken as preprocessed
    classes = torch.tensor([[5, 1], [1, 3]])
    out = {}
    for restrict in (True, False):
        monkeypatch.setattr(explainer_mod, "forward_pass", spy)
        seen.clear()
        ex = dcsm.DistinctSaliency(adapter, preset="paper", scales=(1.0, 1.2, 1.5),
                                   layers=LAYERS)
        ex._restrict_head = restrict
        out[restrict] = ex.explain(x, classes=classes).maps
        if restrict:
            # the reference scale sees all six classes, the two others the three in the slots
            assert seen == [(False, 6), (True, 3), (True, 3)]
        else:
            assert seen == [(False, 6)] * 3
    assert out[False].abs().amax() > 0
    torch.testing.assert_close(out[True], out[False], rtol=0, atol=1e-6)


def test_released_preset_needs_every_class_at_every_scale(tiny, monkeypatch):
    adapter = _adapter(tiny, _Tail(tiny, "relu"), 6)
    heads = []
    real = explainer_mod.forward_pass

    def spy(*args, **kwargs):  # noqa: ANN002,ANN003,ANN202
        heads.append(kwargs.get("head"))
        return real(*args, **kwargs)

    monkeypatch.setattr(explainer_mod, "forward_pass", spy)
    ex = dcsm.DistinctSaliency(adapter, preset="released", scales=(1.0, 1.5), layers=LAYERS)
    ex.explain(tiny.image(20, 24, seed=3), classes=[0, 2])
    assert heads and all(h is None for h in heads)
