"""Guided back-propagation through smooth and leaky activations (dcsm's definition
``g_in = f'(x) * max(g_out, 0)``), checked against hand-written float64 derivatives; ReLU's rule
unchanged; in-place spellings; the intercept count and the once-per-model warning; nothing left
behind."""

from __future__ import annotations

import math
import uuid
import warnings

import pytest
import torch
import torch.nn.functional as F
from test_guided import _run  # the same in-place-aware runner
from torch import nn

from dcsm.errors import DcsmWarning
from dcsm.pipeline.rules import GuidedRule, PlainRule, guided_activation, warn_if_unguided

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
SQRT_2_PI = math.sqrt(2.0 / math.pi)


# --------------------------------------------------------------------------- hand-written f, f'
def _sig(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + torch.exp(-x))


def _phi_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def _phi_pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(torch.exp(-x.abs())) + x.clamp(min=0)


def _gelu_tanh_u(x: torch.Tensor) -> torch.Tensor:
    return SQRT_2_PI * (x + 0.044715 * x**3)


def _where_pos(x: torch.Tensor, pos: torch.Tensor | float, neg: torch.Tensor | float
               ) -> torch.Tensor:
    pos = torch.as_tensor(pos, dtype=x.dtype).expand_as(x)
    neg = torch.as_tensor(neg, dtype=x.dtype).expand_as(x)
    return torch.where(x > 0, pos, neg)


# name -> (f(x), f'(x)), written from the definitions, float64
REF = {
    "gelu": (lambda x: x * _phi_cdf(x), lambda x: _phi_cdf(x) + x * _phi_pdf(x)),
    "gelu_tanh": (
        lambda x: 0.5 * x * (1 + torch.tanh(_gelu_tanh_u(x))),
        lambda x: 0.5 * (1 + torch.tanh(_gelu_tanh_u(x)))
        + 0.5 * x * (1 - torch.tanh(_gelu_tanh_u(x)) ** 2) * SQRT_2_PI * (1 + 3 * 0.044715 * x**2),
    ),
    "silu": (lambda x: x * _sig(x), lambda x: _sig(x) * (1 + x * (1 - _sig(x)))),
    "hardswish": (
        lambda x: x * (x + 3).clamp(0, 6) / 6,
        lambda x: torch.where(x < -3, 0.0, torch.where(x > 3, 1.0, (2 * x + 3) / 6)),
    ),
    "mish": (
        lambda x: x * torch.tanh(_softplus(x)),
        lambda x: torch.tanh(_softplus(x)) + x * _sig(x) * (1 - torch.tanh(_softplus(x)) ** 2),
    ),
    "elu0.7": (lambda x: _where_pos(x, x, 0.7 * (torch.exp(x) - 1)),
               lambda x: _where_pos(x, 1.0, 0.7 * torch.exp(x))),
    "elu1": (lambda x: _where_pos(x, x, torch.exp(x) - 1),
             lambda x: _where_pos(x, 1.0, torch.exp(x))),
    # alpha = 2: torch's celu backward uses 1 / alpha rounded to float32, exact for 2
    "celu2": (lambda x: _where_pos(x, x, 2.0 * (torch.exp(x / 2.0) - 1)),
              lambda x: _where_pos(x, 1.0, torch.exp(x / 2.0))),
    "selu": (lambda x: SELU_SCALE * _where_pos(x, x, SELU_ALPHA * (torch.exp(x) - 1)),
             lambda x: SELU_SCALE * _where_pos(x, 1.0, SELU_ALPHA * torch.exp(x))),
    "leaky0.2": (lambda x: _where_pos(x, x, 0.2 * x), lambda x: _where_pos(x, 1.0, 0.2)),
    "leaky0.01": (lambda x: _where_pos(x, x, 0.01 * x), lambda x: _where_pos(x, 1.0, 0.01)),
    "relu": (lambda x: x.clamp(min=0), lambda x: (x > 0).to(x.dtype)),
}

# (label, reference name, in place, the call)
ACTIVATIONS = [
    ("nn.GELU", "gelu", False, lambda t: nn.GELU()(t)),
    ("nn.GELU(tanh)", "gelu_tanh", False, lambda t: nn.GELU(approximate="tanh")(t)),
    ("F.gelu", "gelu", False, lambda t: F.gelu(t)),
    ("F.gelu(tanh)", "gelu_tanh", False, lambda t: F.gelu(t, approximate="tanh")),
    ("nn.SiLU", "silu", False, lambda t: nn.SiLU()(t)),
    ("nn.SiLU(inplace)", "silu", True, lambda t: nn.SiLU(inplace=True)(t)),
    ("F.silu", "silu", False, lambda t: F.silu(t)),
    ("F.silu(t, True)", "silu", True, lambda t: F.silu(t, True)),
    ("_nn.silu_", "silu", True, lambda t: torch._C._nn.silu_(t)),
    ("nn.Hardswish", "hardswish", False, lambda t: nn.Hardswish()(t)),
    ("nn.Hardswish(inplace)", "hardswish", True, lambda t: nn.Hardswish(inplace=True)(t)),
    ("F.hardswish", "hardswish", False, lambda t: F.hardswish(t)),
    ("nn.Mish", "mish", False, lambda t: nn.Mish()(t)),
    ("nn.Mish(inplace)", "mish", True, lambda t: nn.Mish(inplace=True)(t)),
    ("F.mish", "mish", False, lambda t: F.mish(t)),
    ("nn.ELU(0.7)", "elu0.7", False, lambda t: nn.ELU(alpha=0.7)(t)),
    ("nn.ELU(inplace)", "elu1", True, lambda t: nn.ELU(inplace=True)(t)),
    ("F.elu(t, 0.7, True)", "elu0.7", True, lambda t: F.elu(t, 0.7, True)),
    ("F.elu_(t, 0.7)", "elu0.7", True, lambda t: F.elu_(t, 0.7)),
    ("nn.CELU(2)", "celu2", False, lambda t: nn.CELU(alpha=2.0)(t)),
    ("nn.CELU(2, inplace)", "celu2", True, lambda t: nn.CELU(2.0, inplace=True)(t)),
    ("F.celu_", "celu2", True, lambda t: F.celu_(t, alpha=2.0)),
    ("torch.celu", "celu2", False, lambda t: torch.celu(t, 2.0)),
    ("nn.SELU", "selu", False, lambda t: nn.SELU()(t)),
    ("nn.SELU(inplace)", "selu", True, lambda t: nn.SELU(inplace=True)(t)),
    ("F.selu_", "selu", True, lambda t: F.selu_(t)),
    ("torch.selu", "selu", False, lambda t: torch.selu(t)),
    ("nn.LeakyReLU(0.2)", "leaky0.2", False, lambda t: nn.LeakyReLU(0.2)(t)),
    ("nn.LeakyReLU()", "leaky0.01", False, lambda t: nn.LeakyReLU()(t)),
    ("nn.LeakyReLU(0.2, inplace)", "leaky0.2", True, lambda t: nn.LeakyReLU(0.2, True)(t)),
    ("F.leaky_relu(kw)", "leaky0.2", False, lambda t: F.leaky_relu(t, negative_slope=0.2)),
    ("F.leaky_relu_", "leaky0.2", True, lambda t: F.leaky_relu_(t, 0.2)),
]
IDS = [a[0] for a in ACTIVATIONS]

# (label, reference name, module factory) for the hand-built model
MODULES = [
    ("GELU", "gelu", lambda: nn.GELU()),
    ("GELU(tanh)", "gelu_tanh", lambda: nn.GELU(approximate="tanh")),
    ("SiLU", "silu", lambda: nn.SiLU()),
    ("SiLU(inplace)", "silu", lambda: nn.SiLU(inplace=True)),
    ("Hardswish", "hardswish", lambda: nn.Hardswish()),
    ("Mish(inplace)", "mish", lambda: nn.Mish(inplace=True)),
    ("ELU(0.7)", "elu0.7", lambda: nn.ELU(0.7)),
    ("CELU(2)", "celu2", lambda: nn.CELU(2)),
    ("SELU", "selu", lambda: nn.SELU()),
    ("LeakyReLU(0.2, inplace)", "leaky0.2", lambda: nn.LeakyReLU(0.2, inplace=True)),
    ("ReLU", "relu", lambda: nn.ReLU()),
]


def _probe(n: int = 96, seed: int = 1) -> torch.Tensor:
    """float64 inputs over [-6, 6] (every branch of every activation), away from the kinks."""
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2.5
    x[:8] = torch.tensor([-5.5, -3.5, -2.5, -1.2, -0.4, 0.3, 2.0, 4.5], dtype=torch.float64)
    kinks = torch.tensor([0.0, -3.0, 3.0], dtype=torch.float64)
    near = (x[:, None] - kinks).abs().min(dim=1).values < 1e-3
    return torch.where(near, x + 0.01, x)


def _grad_out(n: int = 96, seed: int = 2) -> torch.Tensor:
    g = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g[::3] = -g[::3].abs()  # plenty of negative incoming gradients
    return g




@pytest.mark.parametrize("name", sorted(REF))
def test_reference_derivatives_are_right(name):
    """The hand-written f and f' agree with torch's own activation and its autograd."""
    torch_fn = {
        "gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "silu": F.silu,
        "hardswish": F.hardswish, "mish": F.mish, "elu0.7": lambda t: F.elu(t, 0.7),
        "elu1": F.elu, "celu2": lambda t: F.celu(t, 2.0), "selu": F.selu,
        "leaky0.2": lambda t: F.leaky_relu(t, 0.2), "leaky0.01": F.leaky_relu, "relu": F.relu,
    }[name]
    f, df = REF[name]
    x = _probe(24)
    torch.testing.assert_close(f(x), torch_fn(x), rtol=1e-12, atol=1e-12)
    jac = torch.autograd.functional.jacobian(torch_fn, x)
    torch.testing.assert_close(df(x), jac.diagonal(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("label,ref,inplace,fn", ACTIVATIONS, ids=IDS)
def test_guided_gradient_is_derivative_times_rectified_gradient(label, ref, inplace, fn):
    x, g = _probe(), _grad_out()
    rule = GuidedRule()
    out, grad = _run(fn, x, g, inplace, rule)
    f, df = REF[ref]
    torch.testing.assert_close(out, f(x), rtol=1e-12, atol=1e-12)  # forward unchanged
    expected = df(x) * g.clamp(min=0)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(grad, df(x) * g), "guided must differ from plain on this probe"
    assert rule.last_intercepted == 1


@pytest.mark.parametrize("label,ref,inplace,fn", ACTIVATIONS, ids=IDS)
def test_plain_rule_and_outside_the_context_stay_plain(label, ref, inplace, fn):
    x, g = _probe(), _grad_out()
    _, df = REF[ref]
    _, grad_plain = _run(fn, x, g, inplace, PlainRule())
    torch.testing.assert_close(grad_plain, df(x) * g, rtol=1e-10, atol=1e-12)
    # after a guided block, the same call is plain again
    _run(fn, x, g, inplace, GuidedRule())
    leaf = x.clone().requires_grad_(True)
    (after,) = torch.autograd.grad(fn(leaf * 1.0), leaf, g)
    torch.testing.assert_close(after, grad_plain, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_is_bit_identical(dtype):
    """Guided changes the backward only: the values (and in-place writes) are torch's own."""
    x = _probe().to(dtype).requires_grad_(True)
    for label, _, _inplace, fn in ACTIVATIONS:
        plain = fn(x * 1.0).detach()
        with GuidedRule().active():
            guided = fn(x * 1.0).detach()
        assert torch.equal(guided, plain), label


class TwoLayer(nn.Module):
    """Linear(4 -> 6) -> act -> Linear(6 -> 3), float64, seeded."""

    def __init__(self, act: nn.Module, seed: int = 5) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.fc1 = nn.Linear(4, 6).double()
        self.fc2 = nn.Linear(6, 3).double()
        with torch.no_grad():
            for fc in (self.fc1, self.fc2):
                fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen, dtype=torch.float64))
                fc.bias.copy_(torch.randn(fc.bias.shape, generator=gen, dtype=torch.float64))
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def _inputs(seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2
    g = torch.randn(8, 3, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    return x, g


@pytest.mark.parametrize("label,ref,make", MODULES, ids=[m[0] for m in MODULES])
def test_hand_built_model_matches_explicit_chain_rule(label, ref, make):
    model = TwoLayer(make())
    x, g = _inputs()
    leaf = x.clone().requires_grad_(True)
    rule = GuidedRule()
    with rule.active():
        out = model(leaf)
    (grad,) = torch.autograd.grad(out, leaf, g)
    assert rule.last_intercepted == 1
    w1, b1 = model.fc1.weight.detach(), model.fc1.bias.detach()
    w2 = model.fc2.weight.detach()
    h = x @ w1.T + b1
    _, df = REF[ref]
    expected = (df(h) * (g @ w2).clamp(min=0)) @ w1
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    plain = (df(h) * (g @ w2)) @ w1
    assert not torch.allclose(grad, plain)


def test_relu_still_follows_the_original_rule_exactly(tiny):
    """The old rule, bit for bit: conftest's reference rectifier, through a model."""
    model = TwoLayer(nn.ReLU())
    x, g = _inputs()
    leaf = x.clone().requires_grad_(True)
    with GuidedRule().active():
        out = model(leaf)
    (grad,) = torch.autograd.grad(out, leaf, g)
    ref_x = x.clone().requires_grad_(True)
    ref_out = model.fc2(tiny.ref_rectifier(model.fc1(ref_x), None, "guided"))
    (ref,) = torch.autograd.grad(ref_out, ref_x, g)
    torch.testing.assert_close(out.detach(), ref_out.detach(), rtol=0, atol=0)
    torch.testing.assert_close(grad, ref, rtol=0, atol=0)


class Chain(nn.Module):
    """Linear -> GELU -> Linear -> SiLU(inplace) -> Linear -> GELU (module reused) -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.fcs = nn.ModuleList(nn.Linear(5, 5).double() for _ in range(3))
        self.head = nn.Linear(5, 2).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
        self.gelu = nn.GELU()
        self.silu = nn.SiLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.gelu(self.fcs[0](x))
        h = self.silu(self.fcs[1](h))
        return self.head(self.gelu(self.fcs[2](h)))


def test_chain_of_activations_and_batched_backward():
    """Three intercepted calls (one module used twice), by hand; vmap'd backward agrees."""
    model = Chain()
    x = torch.randn(4, 5, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    seeds = torch.randn(3, 4, 2, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    rule = GuidedRule()
    with rule.active():
        out = model(leaf)
    assert rule.last_intercepted == 3
    (batched,) = torch.autograd.grad(out, leaf, seeds, is_grads_batched=True, retain_graph=True)
    w = [fc.weight.detach() for fc in model.fcs]
    b = [fc.bias.detach() for fc in model.fcs]
    h1 = x @ w[0].T + b[0]
    a1 = REF["gelu"][0](h1)
    h2 = a1 @ w[1].T + b[1]
    a2 = REF["silu"][0](h2)
    h3 = a2 @ w[2].T + b[2]
    for k in range(seeds.shape[0]):
        (single,) = torch.autograd.grad(out, leaf, seeds[k], retain_graph=True)
        g3 = REF["gelu"][1](h3) * (seeds[k] @ model.head.weight.detach()).clamp(min=0)
        g2 = REF["silu"][1](h2) * (g3 @ w[2]).clamp(min=0)
        g1 = REF["gelu"][1](h1) * (g2 @ w[1]).clamp(min=0)
        torch.testing.assert_close(single, g1 @ w[0], rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(batched[k], single, rtol=1e-12, atol=1e-12)


def test_in_place_updates_after_a_smooth_activation():
    """Networks add to an activation's output in place (x += shortcut) or rectify it in place:
    the guided backward must survive that and still see the gradient at the activation."""
    x, g = _probe(), _grad_out()
    shortcut = torch.linspace(-2, 2, x.numel(), dtype=torch.float64)
    leaf = x.clone().requires_grad_(True)
    with GuidedRule().active():
        y = F.gelu(leaf)
        y += shortcut
        z = F.relu(y, inplace=True)
    (grad,) = torch.autograd.grad(z, leaf, g)
    f, df = REF["gelu"]
    relu_mask = (f(x) + shortcut > 0).to(x.dtype)
    expected = df(x) * (g.clamp(min=0) * relu_mask).clamp(min=0)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_guided_activation_helper():
    x, g = _probe(), _grad_out()
    leaf = x.clone().requires_grad_(True)
    out = guided_activation(F.elu, leaf, 0.7)
    (grad,) = torch.autograd.grad(out, leaf, g)
    f, df = REF["elu0.7"]
    torch.testing.assert_close(out.detach(), f(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, df(x) * g.clamp(min=0), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- counting
def test_count_of_intercepted_activations():
    rule = GuidedRule()
    assert rule.last_intercepted is None
    model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 2))
    x = torch.randn(2, 3)
    with rule.active():
        model(x)  # parameters require grad, so every GELU records a graph
    assert rule.last_intercepted == 2
    with rule.active():
        model[1](model[0](x))
    assert rule.last_intercepted == 1, "each block counts afresh"
    with rule.active(), torch.no_grad():
        model(x)
    assert rule.last_intercepted == 0, "no graph, nothing guided"
    model.requires_grad_(False)
    with rule.active():
        model(x)
    assert rule.last_intercepted == 0
    with rule.active():
        model(x.requires_grad_(True))
    assert rule.last_intercepted == 2
    tanh_only = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2), nn.Sigmoid())
    with rule.active():
        tanh_only(torch.randn(2, 3, requires_grad=True))
    assert rule.last_intercepted == 0, "tanh and sigmoid are not guided"


def test_count_counts_rectifiers_and_mixed_models(tiny):
    rule = GuidedRule()
    with rule.active():
        tiny.TinyNet()(torch.randn(1, 3, 8, 8))
    assert rule.last_intercepted == 2
    mixed = nn.Sequential(nn.Linear(3, 4), nn.ReLU(inplace=True), nn.Linear(4, 4),
                          nn.Hardswish(), nn.Linear(4, 4), nn.LeakyReLU(), nn.Linear(4, 1))
    with rule.active():
        mixed(torch.randn(2, 3))
    assert rule.last_intercepted == 3


# --------------------------------------------------------------------------- nothing left behind
def _gelu_plain_check() -> None:
    x = _probe().requires_grad_(True)
    g = _grad_out()
    (grad,) = torch.autograd.grad(nn.GELU()(x), x, g)
    torch.testing.assert_close(grad, REF["gelu"][1](x.detach()) * g, rtol=1e-10, atol=1e-12)


def test_exception_inside_the_block_restores_plain_and_sets_the_count(tiny):
    rule = GuidedRule()
    model = TwoLayer(nn.SiLU(inplace=True))
    with pytest.raises(ZeroDivisionError), rule.active():
        model(torch.randn(2, 4, dtype=torch.float64))
        _ = 1 / 0
    assert rule.last_intercepted == 1
    assert tiny.leftover_state(model) == []
    _gelu_plain_check()
    x, g = _inputs()
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(leaf), leaf, g)
    h = x @ model.fc1.weight.detach().T + model.fc1.bias.detach()
    expected = (REF["silu"][1](h) * (g @ model.fc2.weight.detach())) @ model.fc1.weight.detach()
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)


def test_normal_exit_leaves_nothing_behind(tiny):
    model = Chain()
    with GuidedRule().active():
        model(torch.randn(2, 5, dtype=torch.float64))
    assert tiny.leftover_state(model) == []
    _gelu_plain_check()


# --------------------------------------------------------------------------- warning
def _recorded(fn) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn()
    return [w for w in caught if issubclass(w.category, DcsmWarning)]


def test_warn_if_unguided_once_per_model_name():
    name = f"timm:test-{uuid.uuid4().hex}"
    other = f"timm:other-{uuid.uuid4().hex}"
    first = _recorded(lambda: warn_if_unguided(0, name))
    assert len(first) == 1
    message = str(first[0].message)
    assert name in message and "plain gradients" in message and "GELU" in message
    assert "\n" not in message
    assert _recorded(lambda: warn_if_unguided(0, name)) == [], "once per model name"
    assert len(_recorded(lambda: warn_if_unguided(0, other))) == 1, "another model warns"
    fresh = f"timm:fresh-{uuid.uuid4().hex}"
    assert _recorded(lambda: warn_if_unguided(3, fresh)) == [], "activations found: silent"
    assert len(_recorded(lambda: warn_if_unguided(0, fresh))) == 1


def test_warning_from_a_real_forward_pass():
    rule = GuidedRule()
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with rule.active():
        model(torch.randn(2, 3))
    name = f"tanh-net-{uuid.uuid4().hex}"
    with pytest.warns(DcsmWarning, match="no activation it knows"):
        warn_if_unguided(rule.last_intercepted, name)
