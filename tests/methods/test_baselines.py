"""Baselines: Simonyan et al. and guided back-propagation against Captum's ``Saliency`` and
``GuidedBackprop``; Grad-CAM against a direct float64 computation and Captum's LayerGradCam."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.gradients import class_gradients, forward_pass
from dcsm.pipeline.images import model_input
from dcsm.pipeline.rules import get_rule

CLASSES = 4


@pytest.fixture
def captum_attr():
    """Captum's attribution module; only the tests that compare with Captum need it, and only
    they are skipped without it (dcsm's own float64 and dispatch tests always run)."""
    return pytest.importorskip("captum.attr")


class LogitNet(nn.Module):
    """A small CNN with nn.ReLU modules returning logits (N, C), as Captum expects."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.relu3 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, CLASSES)
        with torch.no_grad():
            self.conv1.bias.uniform_(-0.1, 0.3)
            self.fc.weight.mul_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu2(self.conv2(self.relu1(self.conv1(x))))
        return self.fc(self.pool(self.relu3(self.conv3(h))).flatten(1))


class AsScoreMap(nn.Module):
    """Logits (N, C) as a (N, C, 1, 1) score map."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)[:, :, None, None]


def _logit_adapter(tiny, seed: int = 0, min_input: int = 8):
    net = LogitNet(seed).eval()
    adapter = tiny.adapter(AsScoreMap(net), classes=CLASSES, min_input=min_input,
                           layers=("c2",), gradcam_layer="r3")
    adapter.layer_aliases = {"c1": "net.conv1", "c2": "net.conv2", "r2": "net.relu2",
                             "r3": "net.relu3"}
    return adapter, net


def _captum(captum_attr, kind: str, net: nn.Module, x: torch.Tensor,
            target: int) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "simonyan":
            return captum_attr.Saliency(net).attribute(x.clone().requires_grad_(True),
                                                       target=target, abs=True).detach()
        return captum_attr.GuidedBackprop(net).attribute(x.clone().requires_grad_(True),
                                                         target=target).detach()


def _normalise(m: np.ndarray) -> np.ndarray:
    return m / m.max()


@pytest.mark.parametrize("kind,rule", [("simonyan", "plain"), ("guided", "guided")])
def test_input_gradients_equal_captum(tiny, captum_attr, kind, rule):
    adapter, net = _logit_adapter(tiny)
    image = tiny.image(18, 22, seed=3)
    x = model_input(adapter, image, 1.0)
    targets = [2, 0, 3]
    fp = forward_pass(adapter, x, [], get_rule(rule), input_grad=True)
    (g,) = class_gradients(fp, targets, [fp.input])
    for k, c in enumerate(targets):
        ref = _captum(captum_attr, kind, net, x, c)
        got = g[k].abs() if kind == "simonyan" else g[k]
        assert ref.abs().max() > 1e-5 and (ref != 0).float().mean() > 0.3
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))
    if kind == "guided":  # guided really differs from plain on this net
        plain = _captum(captum_attr, "simonyan", net, x, targets[0])
        assert not torch.allclose(g[0].abs(), plain, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("method", ["simonyan", "guided"])
def test_baseline_maps_equal_captum_maps(tiny, captum_attr, method):
    adapter, net = _logit_adapter(tiny, seed=1)
    image = tiny.image(18, 22, seed=4)
    result = dcsm.explain(adapter, image, method=method, classes=["delta", "alpha"])
    x = model_input(adapter, image, 1.0)
    assert result.method == method and list(result.maps) == ["delta", "alpha"]
    for name, c in (("delta", 3), ("alpha", 0)):
        ref = _captum(captum_attr, method, net, x, c).abs().amax(dim=1)[0].double().numpy()
        m = result.maps[name]
        assert m.dtype == np.float32 and m.shape == (18, 22) and m.max() == pytest.approx(1.0)
        np.testing.assert_allclose(m, _normalise(ref), rtol=0, atol=1e-5)
    assert result.parameters["backprop"] == ("plain" if method == "simonyan" else "guided")


def test_baseline_on_enlarged_small_image(tiny, captum_attr):
    """A small image is enlarged for the model and the map resized back (bilinear)."""
    adapter, net = _logit_adapter(tiny, seed=2, min_input=16)
    image = tiny.image(10, 12, seed=5)
    x = model_input(adapter, image, 1.0)
    assert tuple(x.shape[-2:]) == (16, 19)
    result = dcsm.explain(adapter, image, method="simonyan", classes=[1])
    ref = _captum(captum_attr, "simonyan", net, x, 1).amax(dim=1)[0].double().numpy()
    np.testing.assert_allclose(result.maps["Beta"], _normalise(tiny.resize(ref, (10, 12))),
                               rtol=0, atol=1e-5)


def test_baselines_auto_candidates_follow_softmax(tiny):
    adapter, net = _logit_adapter(tiny, seed=3)
    image = tiny.image(18, 22, seed=6)
    with torch.no_grad():
        probs = torch.softmax(net(model_input(adapter, image, 1.0))[0], dim=0)
    expected = probs.argsort(descending=True)[:2].tolist()
    for method in ("simonyan", "guided", "gradcam"):
        result = dcsm.explain(adapter, image, method=method)
        assert [c.index for c in result.candidates] == expected
        assert [c.score for c in result.candidates] == pytest.approx(probs[expected].tolist(),
                                                                     abs=1e-6)


# ----------------------------------------------------------------------------- Grad-CAM
@pytest.mark.parametrize("layer", ["r2", "c2", "r1"])
def test_gradcam_against_direct_float64(tiny, layer):
    net = tiny.TinyNet(classes=5, seed=12)
    adapter = tiny.adapter(net, gradcam_layer="r2")
    image = tiny.image(20, 24, seed=8)
    targets = [4, 1]
    kwargs = {} if layer == "r2" else {"layers": [layer]}
    result = dcsm.explain(adapter, image, method="gradcam", classes=targets, **kwargs)
    assert result.parameters == {"scales": [1.0], "layers": [layer], "backprop": "plain",
                                 "max_side": 512, "precision": "float32"}
    x = tiny.reference_input(image, 1.0)
    acts, score = tiny.reference_forward(net, x, "plain")
    for c in targets:
        (g,) = torch.autograd.grad(score[:, c].sum(), acts[layer], retain_graph=True)
        a = acts[layer].detach()[0].numpy()
        w = g[0].numpy().mean(axis=(1, 2))
        cam = np.zeros(a.shape[1:])
        for ch in range(a.shape[0]):
            cam += w[ch] * a[ch]
        cam = tiny.resize(np.maximum(cam, 0.0), (20, 24))
        assert cam.max() > 0
        np.testing.assert_allclose(result.maps[tiny.names[c]], cam / cam.max(), rtol=0,
                                   atol=1e-5)


def test_gradcam_equals_captum_layer_gradcam(tiny, captum_attr):
    adapter, net = _logit_adapter(tiny, seed=4)
    image = tiny.image(18, 22, seed=9)
    x = model_input(adapter, image, 1.0)
    result = dcsm.explain(adapter, image, method="gradcam", classes=[0, 2])
    for name, c in (("alpha", 0), ("gamma", 2)):
        cam = captum_attr.LayerGradCam(net, net.relu3).attribute(
            x, target=c, relu_attributions=True).detach()[0, 0].double().numpy()
        cam = tiny.resize(cam, (18, 22))
        np.testing.assert_allclose(result.maps[name], _normalise(cam), rtol=0, atol=1e-5)


def test_gradcam_negative_everywhere_gives_zero_map(tiny):
    """ReLU(sum_k g_k A_k) <= 0 everywhere: an all-zero map, not NaN."""
    net = tiny.TinyNet(classes=2, seed=3)
    with torch.no_grad():
        net.conv3.weight.copy_(-net.conv3.weight.abs())  # every channel lowers the score
    adapter = tiny.adapter(net, gradcam_layer="r2")
    result = dcsm.explain(adapter, tiny.image(16, 16), method="gradcam", classes=[0])
    assert np.isfinite(result.maps["alpha"]).all() and (result.maps["alpha"] == 0).all()


# ----------------------------------------------------------------------------- API
def test_explain_dispatch_and_errors(tiny):
    adapter = tiny.adapter(tiny.TinyNet(classes=3, seed=12))
    image = tiny.image(16, 20)
    direct = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.2]).explain(image, classes=[0, 1])
    via = dcsm.explain(adapter, image, classes=[0, 1], scales=[1.0, 1.2])
    for name in direct.maps:
        np.testing.assert_array_equal(direct.maps[name], via.maps[name])
    with pytest.raises(DcsmError, match="unknown method"):
        dcsm.explain(adapter, image, method="lime")
    with pytest.raises(DcsmError, match="exactly one layer"):
        dcsm.make_explainer(adapter, "gradcam", layers=["c1", "c2"])
    with pytest.raises(DcsmError, match="unknown layer"):
        dcsm.make_explainer(adapter, "gradcam", layers=["nope"])
    assert dcsm.METHODS == ("dcsm", "simonyan", "guided", "gradcam")
