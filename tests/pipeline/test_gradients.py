"""One forward, batched class gradients: vmap = loop = float64 autograd; the graph starts at the
lowest captured layer; in-place rectifiers cannot corrupt captured tensors; misuse raises."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.gradients import capture_layers, class_gradients, class_seeds, forward_pass
from dcsm.pipeline.rules import get_rule


def _input(height: int = 14, width: int = 18, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, height, width, generator=gen) * 1.5


def _leaves(root: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor the autograd graph of ``root`` would accumulate a gradient into."""
    seen, stack, found = set(), [root.grad_fn], []
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            found.append(node.variable)
        stack.extend(n for n, _ in node.next_functions)
    return found


@pytest.mark.parametrize("act", ["relu", "relu6"])
@pytest.mark.parametrize("rule", ["plain", "guided"])
def test_vmap_equals_loop_equals_float64_autograd(tiny, act, rule):
    net = tiny.TinyNet(classes=4, act=act, seed=3)
    adapter = tiny.adapter(net)
    x = _input()
    layers = ["c1", "r1", "c2", "r2"]
    targets = [2, 0, 3]
    ref = tiny.reference_class_grads(net, x, targets, layers, rule)
    results = {}
    for batch in ("vmap", "loop"):
        fp = forward_pass(adapter, x, layers, get_rule(rule))
        results[batch] = class_gradients(fp, targets, [fp.activations[n] for n in layers], batch)
    for i, name in enumerate(layers):
        v, lo = results["vmap"][i], results["loop"][i]
        assert v.shape == (3, 1, *ref[name].shape[1:])
        torch.testing.assert_close(v, lo, rtol=1e-6, atol=1e-7)
        got = v[:, 0].double()
        scale = ref[name].abs().max()
        assert scale > 0.1
        torch.testing.assert_close(got, ref[name], rtol=1e-5, atol=1e-6 * float(scale))
    if rule == "guided":
        # the two rules really give different gradients on this net
        plain = tiny.reference_class_grads(net, x, targets, ["c1"], "plain")["c1"]
        assert not torch.allclose(plain, ref["c1"])


@pytest.mark.parametrize("rule", ["plain", "guided"])
def test_input_gradient_matches_reference(tiny, rule):
    net = tiny.TinyNet(classes=3, act="relu6", seed=4)
    adapter = tiny.adapter(net)
    x = _input(seed=2)
    fp = forward_pass(adapter, x, [], get_rule(rule), input_grad=True)
    assert fp.activations == {} and fp.input.requires_grad and fp.input.is_leaf
    (g,) = class_gradients(fp, [1, 2], [fp.input])
    ref = tiny.reference_class_grads(net, x, [1, 2], ["input"], rule)["input"]
    torch.testing.assert_close(g[:, 0].double(), ref, rtol=1e-5, atol=1e-7)
    assert [t is fp.input for t in _leaves(fp.score_map)] == [True]


def test_single_target_and_empty_targets(tiny):
    net = tiny.TinyNet(classes=3)
    adapter = tiny.adapter(net)
    x = _input()
    fp = forward_pass(adapter, x, ["c2"], get_rule("plain"))
    (g,) = class_gradients(fp, [1], [fp.activations["c2"]], "vmap")
    ref = tiny.reference_class_grads(net, x, [1], ["c2"])["c2"]
    torch.testing.assert_close(g[:, 0].double(), ref, rtol=1e-5, atol=1e-7)
    (empty,) = class_gradients(fp, [], [fp.activations["c2"]])
    assert empty.shape == (0, *fp.activations["c2"].shape)


def test_vmap_and_loop_agree_and_free_the_graph(tiny):
    adapter = tiny.adapter(tiny.TinyNet(classes=3))
    fp = forward_pass(adapter, _input(), ["c2"], get_rule("guided"))
    first = class_gradients(fp, [0, 2], [fp.activations["c2"]], "vmap")[0]
    with pytest.raises(RuntimeError):
        class_gradients(fp, [0], [fp.activations["c2"]], "loop")  # graph freed by the call
    fp = forward_pass(adapter, _input(), ["c2"], get_rule("guided"))
    second = class_gradients(fp, [2, 0], [fp.activations["c2"]], "loop")[0]
    torch.testing.assert_close(first, second.flip(0), rtol=1e-6, atol=1e-7)


def test_class_seeds_are_one_hot_score_maps():
    score = torch.zeros(1, 4, 2, 3)
    seeds = class_seeds(score, [3, 1])
    assert seeds.shape == (2, 1, 4, 2, 3)
    expected = torch.zeros(2, 1, 4, 2, 3)
    expected[0, :, 3] = 1
    expected[1, :, 1] = 1
    assert torch.equal(seeds, expected)


# ----------------------------------------------------------------------------- graph extent
def test_lowest_captured_layer_is_a_leaf_and_backward_stops_there(tiny):
    net = tiny.TinyNet(classes=3)
    adapter = tiny.adapter(net)
    reached: dict[str, bool] = {}

    def pre_hook(module, inputs):
        reached["conv2 input requires grad"] = inputs[0].requires_grad

    def act1_hook(module, inputs, output):
        reached["act1 output requires grad"] = output.requires_grad

    handles = [net.conv2.register_forward_pre_hook(pre_hook),
               net.act1.register_forward_hook(act1_hook)]
    try:
        fp = forward_pass(adapter, _input(), ["c2", "r2"], get_rule("guided"))
        c2 = fp.activations["c2"]
        assert c2.is_leaf and c2.requires_grad and c2.grad_fn is None
        assert not fp.activations["r2"].is_leaf
        leaves = _leaves(fp.score_map)
        assert len(leaves) == 1 and leaves[0] is c2  # no parameter, no input, nothing lower
        class_gradients(fp, [0, 1], [c2, fp.activations["r2"]])
    finally:
        for h in handles:
            h.remove()
    assert reached == {"conv2 input requires grad": False, "act1 output requires grad": False}
    assert all(p.grad is None for p in net.parameters())
    assert all(p.requires_grad for p in net.parameters())  # restored after the forward


def test_layer_order_given_does_not_matter_for_the_leaf(tiny):
    """Requesting the higher layer first still makes the lowest one the leaf."""
    net = tiny.TinyNet(classes=3)
    adapter = tiny.adapter(net)
    x = _input()
    fp = forward_pass(adapter, x, ["c2", "c1"], get_rule("plain"))
    assert list(fp.activations) == ["c2", "c1"]
    assert fp.activations["c1"].is_leaf and not fp.activations["c2"].is_leaf
    g2, g1 = class_gradients(fp, [0, 2], [fp.activations["c2"], fp.activations["c1"]])
    ref = tiny.reference_class_grads(net, x, [0, 2], ["c1", "c2"])
    torch.testing.assert_close(g1[:, 0].double(), ref["c1"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(g2[:, 0].double(), ref["c2"], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rule", ["plain", "guided"])
@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_inplace_rectifier_after_captured_conv(tiny, rule, act):
    x = _input(seed=5)
    out = {}
    for inplace in (False, True):
        net = tiny.TinyNet(classes=3, act=act, inplace=inplace, seed=8)
        fp = forward_pass(tiny.adapter(net), x, ["c1", "c2"], get_rule(rule))
        acts = {k: v.detach().clone() for k, v in fp.activations.items()}
        grads = class_gradients(fp, [0, 1, 2], list(fp.activations.values()))
        out[inplace] = (acts, grads, fp.score_map.detach())
    ref_acts, _ = tiny.reference_forward(tiny.TinyNet(classes=3, act=act, seed=8), x, rule)
    for inplace in (False, True):
        acts, grads, score = out[inplace]
        # captured values are the convolution outputs, not overwritten by the in-place rectifier
        assert (acts["c1"] < 0).any()
        torch.testing.assert_close(acts["c1"].double(), ref_acts["c1"].detach(), rtol=1e-5,
                                   atol=1e-5)
        torch.testing.assert_close(acts["c2"].double(), ref_acts["c2"].detach(), rtol=1e-5,
                                   atol=1e-5)
    for a, b in zip(out[False][1], out[True][1], strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(out[False][2], out[True][2], rtol=0, atol=0)
    ref = tiny.reference_class_grads(tiny.TinyNet(classes=3, act=act, seed=8), x, [0, 1, 2],
                                     ["c1"], rule)["c1"]
    torch.testing.assert_close(out[True][1][0][:, 0].double(), ref, rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------- misuse
def test_layer_running_twice_raises(tiny):
    net = tiny.TinyNet(classes=3, shared=True)
    adapter = tiny.adapter(net)
    with pytest.raises(DcsmError, match="more than once"):
        forward_pass(adapter, _input(), ["c1", "r1"], get_rule("guided"))
    assert tiny.leftover_state(net) == []


class _Unused(nn.Module):
    def __init__(self, tiny) -> None:
        super().__init__()
        self.body = tiny.TinyNet(classes=3)
        self.spare = nn.Conv2d(3, 3, 1)
        self.pair = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def test_layer_that_does_not_run_raises(tiny):
    model = _Unused(tiny)
    adapter = tiny.adapter(model, classes=3)
    adapter.layer_aliases = {"c1": "body.conv1"}
    with pytest.raises(DcsmError, match="did not run"):
        forward_pass(adapter, _input(), ["c1", "spare"], get_rule("plain"))
    assert tiny.leftover_state(model) == []


class _TupleLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


class _TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.split = _TupleLayer()
        self.head = nn.Conv2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.split(x)[0])


def test_non_tensor_layer_and_bad_score_map_raise(tiny):
    adapter = tiny.adapter(_TupleModel(), classes=2)
    with pytest.raises(DcsmError, match="not a tensor"):
        forward_pass(adapter, _input(), ["split"], get_rule("plain"))
    wrong = tiny.adapter(tiny.TinyNet(classes=3), classes=4)  # claims 4 classes, outputs 3
    with pytest.raises(DcsmError, match="expected"):
        forward_pass(wrong, _input(), ["c1"], get_rule("plain"))


def test_nothing_to_differentiate_raises(tiny):
    adapter = tiny.adapter(tiny.TinyNet(classes=3))
    fp = forward_pass(adapter, _input(), [], get_rule("plain"))
    assert not fp.score_map.requires_grad
    with pytest.raises(DcsmError, match="nothing to differentiate"):
        class_gradients(fp, [0], [fp.input])


def test_capture_layers_without_grad_keeps_plain_tensors(tiny):
    net = tiny.TinyNet(classes=3)
    with torch.no_grad(), capture_layers({"c2": net.conv2}) as acts:
        score = net(_input())
    assert not acts["c2"].requires_grad and not score.requires_grad
    assert net.conv2._forward_hooks == {}
