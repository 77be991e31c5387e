"""Back-propagation rules: exact guided gradients for every rectifier spelling, plain = autograd,
and nothing left behind (modes, hooks, flags) after a rule, a forward pass or a whole explain."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.gradients import class_gradients, forward_pass, inference_state
from dcsm.pipeline.rules import GuidedRule, PlainRule, get_rule


def _probe(upper: float | None) -> torch.Tensor:
    """Inputs covering negatives, exact 0, positives, and (for ReLU6) exact 6 and above 6."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, generator=gen, dtype=torch.float64) * (4.0 if upper else 1.0)
    x[:4] = torch.tensor([0.0, -0.0, 1e-12, -1e-12], dtype=torch.float64)
    if upper is not None:
        x[4:8] = torch.tensor([6.0, 6.0 + 1e-9, 6.0 - 1e-9, 7.5], dtype=torch.float64)
    return x


def _grad_out() -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    g = torch.randn(64, generator=gen, dtype=torch.float64)
    g[::3] = -g[::3].abs()  # plenty of negative incoming gradients
    return g


def _expected_guided(x: torch.Tensor, g: torch.Tensor, upper: float | None) -> torch.Tensor:
    mask = (x > 0) if upper is None else (x > 0) & (x < upper)
    return torch.tensor([max(float(gi), 0.0) * float(mi) for gi, mi in zip(g, mask, strict=True)],
                        dtype=torch.float64)


def _expected_plain(x: torch.Tensor, g: torch.Tensor, upper: float | None) -> torch.Tensor:
    mask = (x > 0) if upper is None else (x > 0) & (x < upper)
    return g * mask.to(g.dtype)


# Each entry: (label, upper clip, in place, function of a tensor that requires grad).
RECTIFIERS = [
    ("nn.ReLU", None, False, lambda t: nn.ReLU()(t)),
    ("nn.ReLU(inplace)", None, True, lambda t: nn.ReLU(inplace=True)(t)),
    ("nn.ReLU6", 6.0, False, lambda t: nn.ReLU6()(t)),
    ("nn.ReLU6(inplace)", 6.0, True, lambda t: nn.ReLU6(inplace=True)(t)),
    ("F.relu", None, False, lambda t: F.relu(t)),
    ("F.relu(inplace)", None, True, lambda t: F.relu(t, inplace=True)),
    ("F.relu_", None, True, lambda t: F.relu_(t)),
    ("F.relu6", 6.0, False, lambda t: F.relu6(t)),
    ("F.relu6(inplace)", 6.0, True, lambda t: F.relu6(t, inplace=True)),
    ("torch.relu", None, False, lambda t: torch.relu(t)),
    ("torch.relu_", None, True, lambda t: torch.relu_(t)),
    ("Tensor.relu", None, False, lambda t: t.relu()),
    ("Tensor.relu_", None, True, lambda t: t.relu_()),
    ("F.hardtanh(0,6)", 6.0, False, lambda t: F.hardtanh(t, 0.0, 6.0)),
    ("F.hardtanh(kw)", 6.0, False, lambda t: F.hardtanh(t, min_val=0.0, max_val=6.0)),
    ("F.hardtanh(0,6,inplace)", 6.0, True, lambda t: F.hardtanh(t, 0.0, 6.0, True)),
    ("F.hardtanh_(0,6)", 6.0, True, lambda t: F.hardtanh_(t, 0.0, 6.0)),
    ("F.hardtanh(0,1)", 1.0, False, lambda t: F.hardtanh(t, 0.0, 1.0)),
]


def _run(fn, x: torch.Tensor, g: torch.Tensor, inplace: bool, rule) -> tuple[torch.Tensor, ...]:
    leaf = x.clone().requires_grad_(True)
    with rule.active():
        inp = leaf * 1.0 if inplace else leaf  # in-place ops need a non-leaf
        out = fn(inp)
        if inplace:
            assert out.data_ptr() == inp.data_ptr(), "in-place call must write its input"
    (grad,) = torch.autograd.grad(out, leaf, g)  # the backward runs outside the context
    return out.detach(), grad


@pytest.mark.parametrize("label,upper,inplace,fn", RECTIFIERS, ids=[r[0] for r in RECTIFIERS])
def test_guided_rectifier_gradient_exact(label, upper, inplace, fn):
    x, g = _probe(upper), _grad_out()
    out, grad = _run(fn, x, g, inplace, GuidedRule())
    expected_out = x.clamp(min=0) if upper is None else x.clamp(0, upper)
    torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
    torch.testing.assert_close(grad, _expected_guided(x, g, upper), rtol=0, atol=0)
    # the guided gradient really differs from the plain one on this probe
    assert not torch.equal(grad, _expected_plain(x, g, upper))


@pytest.mark.parametrize("label,upper,inplace,fn", RECTIFIERS, ids=[r[0] for r in RECTIFIERS])
def test_plain_rule_is_ordinary_autograd(label, upper, inplace, fn):
    x, g = _probe(upper), _grad_out()
    # away from the kinks (0 and 6), where autograd's subgradient choice is irrelevant
    x = torch.where((x.abs() < 1e-6) | ((x - 6).abs() < 1e-6), x + 0.5, x)
    _, grad_rule = _run(fn, x, g, inplace, PlainRule())
    leaf = x.clone().requires_grad_(True)
    inp = leaf * 1.0 if inplace else leaf
    (grad_ref,) = torch.autograd.grad(fn(inp), leaf, g)
    torch.testing.assert_close(grad_rule, grad_ref, rtol=0, atol=0)
    torch.testing.assert_close(grad_rule, _expected_plain(x, g, upper), rtol=0, atol=0)


def test_hardtanh_other_ranges_stay_plain():
    """hardtanh(x, -1, 1) is not a rectifier: the guided rule must leave it alone."""
    x, g = _probe(None), _grad_out()
    x = torch.where(x.abs() < 1e-6, x + 0.25, x)
    x = torch.where((x.abs() - 1).abs() < 1e-6, x * 1.1, x)
    _, grad = _run(lambda t: F.hardtanh(t, -1.0, 1.0), x, g, False, GuidedRule())
    torch.testing.assert_close(grad, g * ((x > -1) & (x < 1)).to(g.dtype), rtol=0, atol=0)


def test_guided_rule_under_no_grad_and_without_requires_grad():
    x = torch.randn(10)
    with GuidedRule().active():
        with torch.no_grad():
            a = F.relu(x.clone().requires_grad_(True))
        b = F.relu(x)
    assert torch.equal(a, x.clamp(min=0)) and not a.requires_grad
    assert torch.equal(b, x.clamp(min=0)) and not b.requires_grad


class SharedAct(nn.Module):
    """One ReLU6 module used twice (as EfficientNet uses its swish/ReLU6)."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(5)
        self.w1 = nn.Parameter(torch.randn(6, 4, generator=gen, dtype=torch.float64) * 2)
        self.w2 = nn.Parameter(torch.randn(3, 6, generator=gen, dtype=torch.float64) * 2)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.act(x @ self.w1.T) @ self.w2.T)


@pytest.mark.parametrize("rule_name", ["guided", "plain"])
def test_shared_activation_module_used_twice(tiny, rule_name):
    model = SharedAct()
    x = torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(6)) * 3
    g = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    leaf = x.clone().requires_grad_(True)
    with get_rule(rule_name).active():
        out = model(leaf)
    (grad,) = torch.autograd.grad(out, leaf, g)
    w1, w2 = model.w1.detach(), model.w2.detach()
    ref_x = x.clone().requires_grad_(True)
    h = tiny.ref_rectifier(ref_x @ w1.T, 6.0, rule_name)
    ref_out = tiny.ref_rectifier(h @ w2.T, 6.0, rule_name)
    (ref,) = torch.autograd.grad(ref_out, ref_x, g)
    torch.testing.assert_close(out.detach(), ref_out.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-12)
    assert (grad != 0).any()


def test_guided_tinynet_matches_reference(tiny):
    """Guided backprop through a whole conv net (module ReLU6s) equals the reference."""
    net = tiny.TinyNet(act="relu6").double()
    x = torch.randn(1, 3, 10, 12, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(3)) * 2
    leaf = x.clone().requires_grad_(True)
    with GuidedRule().active():
        score = net(leaf)
    (grad,) = torch.autograd.grad(score[:, 1].sum(), leaf)
    acts, ref_score = tiny.reference_forward(net, x, "guided")
    (ref,) = torch.autograd.grad(ref_score[:, 1].sum(), acts["input"])
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


# --------------------------------------------------------------------------- nothing left behind
def _plain_still_plain() -> None:
    x = torch.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    g = torch.tensor([-3.0, -2.0, 4.0])
    (grad,) = torch.autograd.grad(nn.ReLU()(x), x, g)
    assert torch.equal(grad, torch.tensor([0.0, -2.0, 4.0])), "negative gradient must pass"
    y = x.clone().detach().requires_grad_(True)
    (grad6,) = torch.autograd.grad(F.relu6(y * 4), y, g)
    assert torch.equal(grad6, torch.tensor([0.0, -8.0, 0.0]))


def _assert_clean(tiny, model: nn.Module | None = None) -> None:
    """No function mode, global or module hook left behind, and rectifiers back-propagate plainly
    again. (The guided rule patches no function, so it checks behaviour rather than identities.)"""
    assert tiny.leftover_state(model) == []
    _plain_still_plain()


@pytest.mark.parametrize("rule", [GuidedRule(), PlainRule()], ids=["guided", "plain"])
def test_rule_context_cleans_up_normally(tiny, rule):
    net = tiny.TinyNet()
    _assert_clean(tiny, net)
    with rule.active():
        if isinstance(rule, GuidedRule):
            from torch.overrides import _get_current_function_mode_stack

            assert len(_get_current_function_mode_stack()) == 1  # the mode is really active
        net(torch.randn(1, 3, 8, 8))
    _assert_clean(tiny, net)


@pytest.mark.parametrize("rule", [GuidedRule(), PlainRule()], ids=["guided", "plain"])
def test_rule_context_cleans_up_after_exception(tiny, rule):
    net = tiny.TinyNet()
    with pytest.raises(ZeroDivisionError), rule.active():
        net(torch.randn(1, 3, 8, 8, requires_grad=True))
        _ = 1 / 0
    _assert_clean(tiny, net)


class Exploding(nn.Module):
    """A model that records its training flag and can raise half-way through its forward."""

    def __init__(self, tiny) -> None:
        super().__init__()
        self.inner = tiny.TinyNet()
        self.explode = False
        self.seen_training: list[bool] = []
        self.seen_requires_grad: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen_training.append(self.training)
        self.seen_requires_grad.append(any(p.requires_grad for p in self.parameters()))
        y = self.inner.act1(self.inner.conv1(x))
        if self.explode:
            raise RuntimeError("boom")
        return self.inner.conv3(self.inner.act2(self.inner.conv2(y)))


def _exploding_adapter(tiny):
    model = Exploding(tiny)
    aliases = {k: f"inner.{v}" for k, v in {"c1": "conv1", "c2": "conv2"}.items()}
    adapter = tiny.adapter(model, classes=3)
    adapter.layer_aliases = aliases
    # unusual flags that must come back exactly as they were
    model.train()
    model.inner.conv2.eval()
    model.inner.conv1.weight.requires_grad_(False)
    return adapter, model


def _flags(model: nn.Module) -> tuple[list[bool], list[bool]]:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])


def test_inference_state_restores_flags(tiny):
    adapter, model = _exploding_adapter(tiny)
    before = _flags(model)
    with inference_state(model):
        assert not any(m.training for m in model.modules())
        assert not any(p.requires_grad for p in model.parameters())
    assert _flags(model) == before
    with pytest.raises(KeyError), inference_state(model):
        raise KeyError("x")
    assert _flags(model) == before


@pytest.mark.parametrize("rule_name", ["guided", "plain"])
def test_forward_pass_and_explain_leave_nothing_behind(tiny, rule_name):
    adapter, model = _exploding_adapter(tiny)
    before = _flags(model)
    image = tiny.image()
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 64
    fp = forward_pass(adapter, x, ["c1", "c2"], get_rule(rule_name))
    assert model.seen_training == [False] and model.seen_requires_grad == [False]
    class_gradients(fp, [0, 2], list(fp.activations.values()))
    _assert_clean(tiny, model)
    assert _flags(model) == before
    result = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.3], backprop=rule_name).explain(
        image, classes=["alpha", "gamma"])
    assert set(result.maps) == {"alpha", "gamma"}
    _assert_clean(tiny, model)
    assert _flags(model) == before
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("rule_name", ["guided", "plain"])
def test_failing_explain_leaves_nothing_behind(tiny, rule_name):
    adapter, model = _exploding_adapter(tiny)
    before = _flags(model)
    explainer = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.2], backprop=rule_name)
    with pytest.raises(DcsmError, match="no-such-class"):
        explainer.explain(tiny.image(), classes=["alpha", "no-such-class"])
    _assert_clean(tiny, model)
    assert _flags(model) == before
    model.explode = True  # now the failure happens inside the forward, with hooks in place
    with pytest.raises(RuntimeError, match="boom"):
        explainer.explain(tiny.image(), classes=["alpha"])
    _assert_clean(tiny, model)
    assert _flags(model) == before
    assert all(p.grad is None for p in model.parameters())


def test_baseline_explains_leave_nothing_behind(tiny):
    adapter, model = _exploding_adapter(tiny)
    before = _flags(model)
    for method in ("simonyan", "guided", "gradcam"):
        dcsm.explain(adapter, tiny.image(), method=method, classes=["beta"],
                     layers=["c2"] if method == "gradcam" else None)
        _assert_clean(tiny, model)
        assert _flags(model) == before


def test_unknown_rule_name():
    with pytest.raises(DcsmError, match="unknown back-propagation rule"):
        get_rule("deconvnet")
    rule = GuidedRule()
    assert get_rule(rule) is rule and get_rule("plain").name == "plain"
