"""One forward pass, then the gradients of several class score maps through that one graph.

The forward runs with the model's parameters frozen and, unless the input gradient is wanted,
with an input that does not require gradients: the autograd graph then starts at the first
requested layer (its output is made a leaf in a forward hook), so the backward goes no lower than
that layer and no parameter gradient is ever computed. Hooks live only inside the context that
needs them and are always removed.

For ``K`` target classes the backward seeds are ``K`` one-hot score maps, ``S(:,:,c) = 1`` and 0
elsewhere (the paper's notation), back-propagated through the one forward graph:

* the classifier: where the score map comes from a 1x1 convolution (fully convolutional heads:
  SqueezeNet, EfficientNet-Lite0, VGG-16's fc8), the backward starts below it, at its input,
  with the weight row of each class (:class:`ClassHead`): a third of each class's backward
  FLOPs on the two small models; and in the forward of every scale after the first, that
  convolution computes only the rows of the classes the slots need (:class:`HeadRestriction`):
  a fifth of SqueezeNet's forward at 1000 classes;
* the class slots: one backward per slot (``batch="loop"``), or one for all of them
  (``batch="vmap"``: ``torch.func.vmap`` over ``torch.autograd.grad``, which folds the slots into
  the batch of every backward operation, so each weight is read once), or the one of the two
  a measured rule picks (``batch="auto"``, :func:`choose_batch_mode`). PyTorch's own
  ``torch.autograd.grad(..., is_grads_batched=True)`` uses the legacy vmap, which has no
  batching rule for the convolution backward and loops over the slots: it measured as slow as
  ``"loop"``, and is not offered;
* on the CPU in float32, the convolutions with a large weight (VGG-16's fc6 and fc7) run as
  matrix products (:class:`MatmulConv`), which read the weight as it is stored instead of
  re-laying it out at every call; and on the CPU max pooling runs through PyTorch's much faster
  channels-last kernel (:mod:`dcsm.pipeline.speedups.max_pool`), the same numbers.

``benchmarks/throughput.py`` times them against peer-style code; ``benchmarks/bench_batched.py``
against a naive per-class loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.rules import BackpropRule
from dcsm.pipeline.speedups.max_pool import FastMaxPool
from dcsm.pipeline.speedups.torch_calls import CONV2D_ARGS, call_arguments, pair
from dcsm.pipeline.state import inference_state

BatchMode = Literal["auto", "loop", "vmap"]


@contextlib.contextmanager
def capture_layers(layers: Mapping[str, nn.Module]) -> Iterator[dict[str, torch.Tensor]]:
    """Record each layer's output during a forward pass (forward hooks, removed on exit).

    The first recorded output that does not already require gradients becomes a leaf that does,
    which starts the autograd graph there. The module's output is replaced by a clone, so that a
    later in-place operation (an in-place ReLU after a convolution) cannot change the recorded
    tensor.
    """
    captured: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(name: str):  # noqa: ANN202
        def hook(module: nn.Module, inputs: object, output: object) -> torch.Tensor:
            if not isinstance(output, torch.Tensor):
                raise DcsmError(f"layer '{name}' returns {type(output).__name__}, not a tensor")
            if name in captured:
                raise DcsmError(f"layer '{name}' runs more than once per forward pass; "
                                "choose a layer that is used once")
            if torch.is_grad_enabled() and not output.requires_grad:
                output = output.detach().requires_grad_(True)
            captured[name] = output
            return output.clone()

        return hook

    try:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(make_hook(name)))
        yield captured
    finally:
        for handle in handles:
            handle.remove()


@dataclass
class ForwardPass:
    """The score map of one forward pass and the tensors gradients can be taken at.

    ``score_map`` is ``(N, C, h, w)``; a model returning ``(N, C)`` logits gives ``h = w = 1``.
    ``activations`` are the layers' outputs as the model returns them (see
    :mod:`dcsm.pipeline.layouts`).
    """

    input: torch.Tensor
    score_map: torch.Tensor
    activations: dict[str, torch.Tensor]


#: On the CPU, run max pooling through PyTorch's channels-last kernel
#: (:mod:`dcsm.pipeline.speedups.max_pool`).
FAST_MAX_POOL = True

#: On the CPU in float32, compute the convolutions with a large frozen weight (at least
#: :data:`LARGE_WEIGHT` elements; stride 1, no dilation, no groups) as matrix products (see
#: :class:`MatmulConv`). False: every convolution as the model calls it.
MATMUL_LARGE_CONVS = True
_MATMUL_MAX_COLUMNS = 32 << 20  # elements of the unfolded input (128 MiB in float32) at most


class MatmulConv(torch.autograd.Function):
    """``F.conv2d(x, weight, bias, padding=padding)`` as one matrix product of the unfolded
    input with the weight, and its input gradient as one product and a fold.

    PyTorch's CPU convolution (oneDNN) re-lays out the weight at every call, which for a large
    weight used at few positions costs far more than the arithmetic: VGG-16's fc6 (a 7x7
    convolution, 103 M weights) takes 0.29-0.38 s forward at 224 pixels (one position) against
    0.03 s as a product, its input gradient for three class slots 0.47 s against 0.09 s (one
    thread). The product reads the weight as it is stored, once for all rows (positions,
    images and, under ``torch.func.vmap``, class slots).
    """

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,  # type: ignore[override]
                padding: tuple[int, int]) -> torch.Tensor:
        n, c, h, w = x.shape
        o, _, kh, kw = weight.shape
        oh, ow = h + 2 * padding[0] - kh + 1, w + 2 * padding[1] - kw + 1
        if (kh, kw) == (1, 1) and padding == (0, 0):
            rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        else:
            rows = torch.nn.functional.unfold(x, (kh, kw), padding=padding)
            rows = rows.transpose(1, 2).reshape(n * oh * ow, -1)
        w2 = weight.reshape(o, -1).t()
        out = rows @ w2 if bias is None else torch.addmm(bias, rows, w2)
        # contiguous, as a convolution's output: the model may .view() it
        return out.view(n, oh, ow, o).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def setup_context(ctx: object, inputs: tuple, output: torch.Tensor) -> None:
        x, weight, _, padding = inputs
        ctx.save_for_backward(weight)  # type: ignore[attr-defined]
        ctx.geometry = (tuple(x.shape), padding)  # type: ignore[attr-defined]
        ctx.macs = output.numel() * weight[0].numel()  # type: ignore[attr-defined]

    @staticmethod
    def backward(ctx: object, grad: torch.Tensor) -> tuple:  # type: ignore[override]
        (weight,) = ctx.saved_tensors  # type: ignore[attr-defined]
        (n, c, h, w), padding = ctx.geometry  # type: ignore[attr-defined]
        o, _, kh, kw = weight.shape
        oh, ow = grad.shape[-2:]
        rows = grad.permute(0, 2, 3, 1).reshape(n * oh * ow, o) @ weight.reshape(o, -1)
        if (kh, kw) == (1, 1) and padding == (0, 0):
            return rows.view(n, h, w, c).permute(0, 3, 1, 2), None, None, None
        cols = rows.view(n, oh * ow, -1).transpose(1, 2)
        return (torch.nn.functional.fold(cols, (h, w), (kh, kw), padding=padding),
                None, None, None)


def _matmul_conv_call(args: tuple, kwargs: dict) -> tuple | None:
    """``(x, weight, bias, padding)`` of an ``F.conv2d`` call :class:`MatmulConv` should
    compute, or None."""
    call = call_arguments(CONV2D_ARGS, args, kwargs)
    x, weight, bias = call.get("input"), call.get("weight"), call.get("bias")
    padding = call.get("padding", 0)
    padding = (0, 0) if padding == "valid" else pair(padding)
    if not isinstance(x, torch.Tensor) or not isinstance(weight, torch.Tensor) \
            or padding is None or pair(call.get("stride", 1)) != (1, 1) \
            or pair(call.get("dilation", 1)) != (1, 1) or call.get("groups", 1) != 1:
        return None
    if x.ndim != 4 or weight.ndim != 4 or x.device.type != "cpu" \
            or x.dtype != torch.float32 or weight.dtype != torch.float32 \
            or weight.numel() < LARGE_WEIGHT or weight.requires_grad \
            or (bias is not None and (bias.requires_grad or bias.dtype != torch.float32)):
        return None
    kh, kw = weight.shape[2:]
    positions = (x.shape[2] + 2 * padding[0] - kh + 1) * (x.shape[3] + 2 * padding[1] - kw + 1)
    if positions < 1 or ((kh, kw) != (1, 1) or padding != (0, 0)) and \
            x.shape[0] * positions * weight[0].numel() > _MATMUL_MAX_COLUMNS:
        return None
    return x, weight, bias, padding


def _has_large_weight(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` has :data:`LARGE_WEIGHT` elements or more (else
    :class:`_MatmulLargeConvs` would only cost time)."""
    return any(p.numel() >= LARGE_WEIGHT for p in model.parameters())


class _MatmulLargeConvs(torch.overrides.TorchFunctionMode):
    """Routes the ``F.conv2d`` calls :func:`_matmul_conv_call` accepts to :class:`MatmulConv`."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001,ANN204
        kwargs = kwargs or {}
        if func is torch.conv2d or func is torch.nn.functional.conv2d:
            call = _matmul_conv_call(args, kwargs)
            if call is not None:
                if torch.is_grad_enabled() and call[0].requires_grad:
                    return MatmulConv.apply(*call)
                return MatmulConv.forward(*call)
        return func(*args, **kwargs)


def require_finite(values: torch.Tensor | Sequence[torch.Tensor], what: str,
                   autocast: bool = False) -> None:
    """Raise a :class:`DcsmError` when ``values`` (a tensor or several) holds a NaN or an
    infinity.

    A model that returns NaN or infinite scores, or whose gradients are, has no saliency to
    show, and the maps would silently come out zero. ``what`` starts the message (``"model X
    returned scores that are"``); ``autocast``: the forward ran in half precision (the likely
    cause).

    Cheap: one sum per tensor already computed (a NaN or an infinity makes the sum non-finite;
    a sum of finite float32 values overflows only past 3.4e38), in float32 whatever the
    tensor's dtype (half-precision sums would overflow), and one device synchronisation in
    all; only a non-finite sum is confirmed element by element (``torch.isfinite``), so huge
    finite values are never taken for infinite ones.
    """
    tensors = [values] if isinstance(values, torch.Tensor) else list(values)
    if not tensors:
        return
    sums = torch.stack([t.sum(dtype=torch.float64 if t.dtype == torch.float64 else
                              torch.float32) for t in tensors])
    if bool(torch.isfinite(sums).all()) or all(bool(torch.isfinite(t).all()) for t in tensors):
        return
    hint = ("; half precision overflowed: use precision float32 (--precision float32)"
            if autocast else "; check the model and its weights")
    raise DcsmError(f"{what} NaN or infinite, so there are no maps to compute{hint}")


def forward_pass(
    adapter: ModelAdapter,
    x: torch.Tensor,
    layers: Sequence[LayerRef],
    rule: BackpropRule,
    input_grad: bool = False,
    autocast: torch.dtype | None = None,
    head: HeadRestriction | None = None,
) -> ForwardPass:
    """Run the fully convolutional model on ``x`` (N, 3, H, W), recording ``layers``.

    ``autocast`` runs the forward under :func:`torch.autocast` with that dtype (bfloat16 or
    float16); the backward follows the recorded graph. ``head`` computes only those rows of the
    classifier: the score map then has ``len(head.rows)`` channels, in the order of
    ``head.rows``, and :class:`HeadRestrictionFailed` is raised where the model did not let
    that happen cleanly (the caller runs the full forward instead).

    Raises:
        DcsmError: when the model returns something else than scores of the expected shape,
            or scores that are NaN or infinite (:func:`require_finite`), or a layer does not run.
    """
    modules = adapter.resolve_layers(layers) if layers else {}
    # Gradients are needed even if the caller is inside no_grad() or inference_mode().
    with torch.inference_mode(False), torch.enable_grad():
        x = x.to(adapter.device).clone()
        if input_grad:
            x = x.detach().requires_grad_(True)
        amp = (torch.autocast(x.device.type, dtype=autocast) if autocast is not None
               else contextlib.nullcontext())
        convs = (_MatmulLargeConvs() if MATMUL_LARGE_CONVS and autocast is None
                 and x.device.type == "cpu" and _has_large_weight(adapter.model)
                 else contextlib.nullcontext())
        pools = (FastMaxPool() if FAST_MAX_POOL and x.device.type == "cpu"
                 else contextlib.nullcontext())
        restrict = _RestrictHead(head) if head is not None else None
        with inference_state(adapter.model), rule.active(), capture_layers(modules) as acts, \
                amp, convs, pools:
            try:
                with restrict if restrict is not None else contextlib.nullcontext():
                    score_map = adapter.model(x)
            except RuntimeError as exc:  # e.g. a per-class tensor after the classifier
                if restrict is None:
                    raise
                raise HeadRestrictionFailed(str(exc)) from exc
    if restrict is not None and (restrict.calls != 1 or not isinstance(score_map, torch.Tensor)
                                 or score_map.ndim != 4
                                 or score_map.shape[1] != len(restrict.head.rows)):
        raise HeadRestrictionFailed(f"{restrict.calls} classifier-shaped convolutions ran")
    channels = adapter.score_channels if head is None else len(head.rows)
    if not isinstance(score_map, torch.Tensor) or score_map.ndim not in (2, 4) or \
            score_map.shape[1] != channels or score_map.shape[0] != x.shape[0]:
        got = tuple(score_map.shape) if isinstance(score_map, torch.Tensor) else \
            type(score_map).__name__
        raise DcsmError(f"model {adapter.name} returned {got}, expected "
                        f"({x.shape[0]}, {adapter.score_channels}) logits or a "
                        f"({x.shape[0]}, {adapter.score_channels}, h, w) score map")
    if score_map.ndim == 2:
        score_map = score_map[:, :, None, None]
    require_finite(score_map, f"model {adapter.name} returned scores that are",
                   autocast is not None)
    missing = [name for name in modules if name not in acts]
    if missing:
        raise DcsmError(f"layer(s) {', '.join(missing)} did not run in the forward pass of "
                        f"{adapter.name}")
    return ForwardPass(x, score_map, {name: acts[name] for name in modules})


Targets = Sequence[int] | torch.Tensor
"""Classes to back-propagate: K indices shared by every image, or an (N, K) index tensor."""


def target_matrix(targets: Targets, batch: int) -> torch.Tensor:
    """``targets`` as an (N, K) long tensor on the CPU."""
    t = torch.as_tensor(targets, dtype=torch.long).cpu()
    if t.ndim == 1:
        t = t.unsqueeze(0).expand(batch, -1)
    if t.ndim != 2 or t.shape[0] != batch:
        raise DcsmError(f"targets must be K indices or an ({batch}, K) tensor, got shape "
                        f"{tuple(t.shape)}")
    return t


def class_seeds(score_map: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(K, *score_map.shape) one-hot seeds: ``S(:,:,c) = 1`` for image n's k-th class c."""
    t = target_matrix(targets, score_map.shape[0])
    seeds = torch.zeros((t.shape[1], *score_map.shape), dtype=score_map.dtype,
                        device=score_map.device)
    rows = torch.arange(score_map.shape[0])
    for k in range(t.shape[1]):
        seeds[k, rows, t[:, k]] = 1.0
    return seeds


@dataclass
class ClassHead:
    """The classifier at the top of the graph: a 1x1 convolution ``z = W h + b`` (any tail of
    ops after it must keep the classes apart, which is checked on the gradients).

    The derivative of class c's score map at ``h`` is ``W[c]`` times the (one-channel) derivative
    at ``z[:, c]``, so the backward can start at ``h`` with that, instead of running a
    ``C -> C_in`` transposed convolution per class slot (SqueezeNet's and EfficientNet-Lite0's
    1000-class heads: about a third of the FLOPs of each class's backward).
    """

    node: object  # the convolution's backward node
    input: torch.Tensor  # h, as the convolution saw it (autocast: its cast copy)
    weight: torch.Tensor  # (C, C_in)
    tail: bool  # operations between z and the score map

    def seeds(self, fp: ForwardPass, t: torch.Tensor, k: int) -> torch.Tensor | None:
        """The derivative at ``h`` of slot k's score maps; None if the tail mixes classes."""
        n = t.shape[0]
        rows = torch.arange(n, device=self.weight.device)
        cls = t[:, k].to(self.weight.device)
        w = self.weight.detach()[cls][:, :, None, None]  # (N, C_in, 1, 1)
        out = torch.empty_like(self.input, requires_grad=False)
        if not self.tail:  # z is the score map: its seed is 1 at every location of class c
            with torch.no_grad():
                return out.copy_(w.expand_as(out))
        seed = torch.zeros_like(fp.score_map)
        seed[rows, cls] = 1.0
        (gz,) = torch.autograd.grad(fp.score_map, torch.autograd.graph.GradientEdge(
            self.node, 0), grad_outputs=seed, retain_graph=True)  # type: ignore[arg-type]
        if gz.shape[0] != n or gz.shape[1] != self.weight.shape[0]:
            return None
        with torch.no_grad():
            mass = gz.abs().sum(dim=tuple(range(2, gz.ndim)))  # (N, C)
            mass[rows, cls] = 0
            if bool(mass.any()):
                return None
            return torch.mul(w, gz[rows, cls].unsqueeze(1), out=out)


def class_head(fp: ForwardPass, wrt: Sequence[torch.Tensor]) -> ClassHead | None:
    """The 1x1 convolution that computes the score map (see :class:`ClassHead`), or None.

    Found by following the score map's autograd graph down (at most 16 operations) until
    every path has reached the same convolution (an in-place ReLU after it, as in SqueezeNet,
    makes two); None if no single one is reached, if it is strided, padded, grouped or
    transposed, if its weight or bias carry a graph, or if one of ``wrt`` lies above it.
    """
    tail: list[object] = []
    seen: dict[int, object] = {}  # keeps the node objects alive, so ids stay unique
    frontier = [fp.score_map.grad_fn]
    node = None
    while frontier:
        current = frontier.pop()
        if current is None or id(current) in seen:
            continue
        seen[id(current)] = current
        if type(current).__name__ == "ConvolutionBackward0":
            if node is not None:
                return None  # two convolutions: no single classifier
            node = current
            continue
        if type(current).__name__ == "AccumulateGrad" or len(tail) >= 16:
            return None  # a path that bypasses any convolution, or too far down
        tail.append(current)
        frontier.extend(n for n, _ in current.next_functions if n is not None)
    if node is None:
        return None
    try:
        weight, h = node._saved_weight, node._saved_input  # type: ignore[union-attr]
        simple = (not node._saved_transposed and node._saved_groups == 1  # type: ignore[union-attr]
                  and all(v == 1 for v in node._saved_stride)  # type: ignore[union-attr]
                  and all(v == 0 for v in node._saved_padding))  # type: ignore[union-attr]
    except (AttributeError, RuntimeError):
        return None
    if not simple or weight.ndim != 4 or tuple(weight.shape[2:]) != (1, 1) or h.ndim != 4 \
            or not h.requires_grad or weight.shape[0] != fp.score_map.shape[1] \
            or any(n is not None for n, _ in node.next_functions[1:]):  # type: ignore[union-attr]
        return None
    above = [node, *tail]
    if any(t is fp.score_map or any(t.grad_fn is a for a in above) for t in wrt):
        return None
    return ClassHead(node, h, weight[:, :, 0, 0], bool(tail))


@dataclass
class HeadRestriction:
    """Which output channels of the classifier (:class:`ClassHead`) a forward computes.

    The method needs every class's score only at the scale its candidates come from; at every
    other scale only the score maps of the classes in the slots are back-propagated, and the
    classifier's other rows (991 of SqueezeNet's 1000 for three classes) would be computed for
    nothing. With a restriction the classifier's convolution runs with ``weight[rows]`` and
    ``bias[rows]``: ``z_rows = W[rows] h + b[rows]``, the same numbers as rows of the full
    ``z`` (up to the order of float additions), and the backward sees a ``len(rows)``-class
    model, whose slots are ``targets``.
    """

    shape: tuple[int, ...]  # the classifier weight's (C, C_in, 1, 1)
    rows: torch.Tensor  # (U,) the classes the slots of any image need, ascending
    targets: torch.Tensor  # (N, K) each slot's class as a position in rows


class HeadRestrictionFailed(DcsmError):
    """The model did not run cleanly with a restricted classifier (see :func:`forward_pass`)."""


def head_restriction(fp: ForwardPass, wrt: Sequence[torch.Tensor],
                     targets: Targets) -> HeadRestriction | None:
    """A :class:`HeadRestriction` to the classes of ``targets`` for the model that gave ``fp``,
    or None where its score map does not come from one 1x1 convolution through operations
    that keep the classes apart (checked on ``fp`` as :class:`ClassHead` does), or where the
    slots need every class anyway."""
    top = class_head(fp, wrt)
    if top is None:
        return None
    t = target_matrix(targets, fp.score_map.shape[0])
    rows, positions = torch.unique(t, sorted=True, return_inverse=True)
    if t.shape[1] == 0 or len(rows) >= top.weight.shape[0]:
        return None
    if top.tail and top.seeds(fp, t, 0) is None:  # the operations after z mix the classes
        return None
    return HeadRestriction((*top.weight.shape, 1, 1), rows, positions.reshape(t.shape))


class _RestrictHead(torch.overrides.TorchFunctionMode):
    """Runs the one ``F.conv2d`` call with the classifier's weight shape on ``rows`` only."""

    def __init__(self, head: HeadRestriction) -> None:
        super().__init__()
        self.head = head
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001,ANN204
        kwargs = kwargs or {}
        if func is torch.conv2d or func is torch.nn.functional.conv2d:
            call = call_arguments(CONV2D_ARGS, args, kwargs)
            weight, bias = call.get("weight"), call.get("bias")
            if isinstance(weight, torch.Tensor) and tuple(weight.shape) == self.head.shape:
                self.calls += 1
                rows = self.head.rows.to(weight.device)
                call["weight"] = weight.index_select(0, rows)
                if isinstance(bias, torch.Tensor):
                    call["bias"] = bias.index_select(0, rows.to(bias.device))
                return func(**call)
        return func(*args, **kwargs)


@dataclass
class GraphCost:
    """Multiply-accumulates of the convolutions and matrix products in a backward graph, and
    the elements of their large weights (what :func:`choose_batch_mode` decides by): those
    PyTorch's convolutions read, and those read by matrix products (:class:`MatmulConv`,
    linear layers)."""

    macs: int = 0
    conv_large: int = 0  # weights of at least LARGE_WEIGHT elements in PyTorch convolutions
    product_large: int = 0  # the same in matrix products
    mixed_batch_norm: bool = False  # autocast: vmap's batch-norm backward rejects it (2.14)

    @property
    def weight_pressure(self) -> float:
        """Large-weight elements per multiply-accumulate, each kind relative to the level from
        which reading them for every class slot costs more than batching the slots does
        (:data:`CONV_LARGE_FROM`, :data:`PRODUCT_LARGE_FROM`); ``"vmap"`` from 1 up."""
        if not self.macs:
            return 0.0
        return (self.conv_large / CONV_LARGE_FROM
                + self.product_large / PRODUCT_LARGE_FROM) / self.macs


#: A weight this large (elements; 16 MiB in float32) no longer stays in a CPU's caches from one
#: use to the next: VGG-16's fc6 (103 M) and fc7 (17 M), AlexNet's; no convolution of
#: VGG-16 (2.4 M at most), ResNet-50, SqueezeNet or EfficientNet-Lite0.
LARGE_WEIGHT = 4 << 20
#: Large weights in PyTorch's convolutions per MAC from which ``"vmap"`` pays (measured, see
#: :func:`choose_batch_mode`).
CONV_LARGE_FROM = 1.5e-3
#: Large weights in matrix products per MAC from which ``"vmap"`` pays.
PRODUCT_LARGE_FROM = 4e-3


def graph_cost(root: torch.Tensor) -> GraphCost:
    """:class:`GraphCost` of everything below ``root`` in its autograd graph."""
    cost = GraphCost()
    seen: dict[int, object] = {}  # keeps the node objects alive, so ids stay unique
    stack = [root.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        stack.extend(n for n, _ in node.next_functions)
        kind = type(node).__name__
        product = True
        try:
            if kind == "ConvolutionBackward0" and not node._saved_transposed:
                w, x = node._saved_weight, node._saved_input
                out = x.shape[0] * w.shape[0]
                for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], node._saved_stride,
                                            node._saved_padding, node._saved_dilation,
                                            strict=True):
                    out *= (size + 2 * p - d * (k - 1) - 1) // s + 1
                weights, macs, product = w.numel(), out * w[0].numel(), False
            elif kind == "MatmulConvBackward":
                weights, macs = node.saved_tensors[0].numel(), node.macs
            elif kind in ("AddmmBackward0", "MmBackward0"):
                a, b = node._saved_mat1, node._saved_mat2
                if b.requires_grad:  # a product of two activations, not a weight
                    continue
                weights, macs = b.numel(), a.shape[0] * a.shape[1] * b.shape[1]
            elif kind == "NativeBatchNormBackward0":
                x, w = node._saved_input, node._saved_weight
                cost.mixed_batch_norm |= w is not None and x.dtype != w.dtype
                continue
            else:
                continue
        except (AttributeError, RuntimeError):
            continue
        cost.macs += macs
        if weights >= LARGE_WEIGHT:
            if product:
                cost.product_large += weights
            else:
                cost.conv_large += weights
    return cost


def choose_batch_mode(root: torch.Tensor, slots: int) -> BatchMode:
    """``batch="auto"``: ``"vmap"`` (one backward for all slots) where the backward is bound by
    reading large weights, ``"loop"`` otherwise and for one slot.

    A batched backward reads each weight once for all K slots, at some cost of its own
    (expanded saved tensors, zero fills, PyTorch's batching rules). It pays where weights too
    large for the caches (:data:`LARGE_WEIGHT`) are used at few positions, so that reading
    them costs more than computing with them: :attr:`GraphCost.weight_pressure` at least 1.
    Measured on a CPU (one thread, three slots, guided, one scale's backward; the time of
    ``"vmap"`` over that of ``"loop"``, and the large-weight elements per MAC):

    =====================  =====  =======  ===============  ===============
    model                  input  per MAC  PyTorch's convs  matrix products
    =====================  =====  =======  ===============  ===============
    AlexNet                224    0.18     0.35             0.92
    AlexNet, 4 images      224    0.045    0.52             0.64
    AlexNet                358    0.027    0.60             0.76
    VGG-16                 224    0.012    0.63             0.99, 1.06
    VGG-16                 269    0.0085                    0.93
    VGG-16                 314    0.0060                    0.95
    VGG-16                 358    0.0044   0.70             0.96, 1.00
    VGG-16, 4 images       224    0.0030   0.81             1.08
    VGG-16                 512    0.0019   0.92             1.02
    VGG-16, 4 images       358    0.0011   1.02
    VGG-16                 819    0.00091  1.08
    VGG-16, 16 images      224    0.00076  1.15
    ResNet-50              224    0        1.05 (358: 1.16)
    SqueezeNet 1.1         224    0        1.13 (358: 0.94)
    EfficientNet-Lite0     224    0        1.46 (358: 0.90)
    MobileNetV2            224    0        1.78
    =====================  =====  =======  ===============  ===============

    (Two values: two runs; on the shared machine of these measurements single ratios move by
    about 5 %. The whole method on VGG-16 at the paper's settings, one image, both modes
    timed in alternation: ``"vmap"`` 0.93-0.96x the time of ``"loop"``.)

    PyTorch's convolutions re-lay out a large weight at every call, so batching pays from
    :data:`CONV_LARGE_FROM` (1.5e-3) up; read as stored by a matrix product (the CPU's float32
    default, :data:`MATMUL_LARGE_CONVS`), only from :data:`PRODUCT_LARGE_FROM` (4e-3) up.
    MACs grow with the batch and the image, so large batches and images go back to
    ``"loop"``. Under autocast, a graph with batch norm stays with ``"loop"`` (PyTorch 2.14's
    vmap rejects its mixed-precision backward). On CUDA the same rule applies, unmeasured:
    ``benchmarks/gpu_benchmark.py`` times both modes.
    """
    if slots < 2:
        return "loop"
    cost = graph_cost(root)
    if cost.mixed_batch_norm:
        return "loop"
    return "vmap" if cost.weight_pressure >= 1.0 else "loop"


def iter_class_gradients(
    fp: ForwardPass,
    targets: Targets,
    wrt: Sequence[torch.Tensor],
    batch: BatchMode = "loop",
    head: bool = True,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """For each class slot k, the gradients of the slot's score maps at each tensor of ``wrt``.

    One backward per slot serves every image of the batch: image n's seed only reaches image
    n's activations (the model runs in eval mode, so images do not interact). The graph is freed
    after the last slot. ``batch="vmap"`` computes every slot in one backward first
    (``torch.func.vmap`` over ``torch.autograd.grad``: the slots become one batch dimension of
    every backward operation); ``batch="auto"`` chooses (:func:`choose_batch_mode`). With
    ``head`` (default) a 1x1 convolution classifier is skipped as :class:`ClassHead` describes.
    """
    t = target_matrix(targets, fp.score_map.shape[0])
    k_slots = t.shape[1]
    if k_slots == 0:
        return
    if not fp.score_map.requires_grad:
        raise DcsmError("nothing to differentiate: no requested layer lies before the scores")
    top = class_head(fp, wrt) if head else None
    root, seeds = fp.score_map, None
    if top is not None:
        per_slot = [top.seeds(fp, t, k) for k in range(k_slots)]
        if all(s is not None for s in per_slot):
            root, seeds = top.input, torch.stack(per_slot)  # type: ignore[arg-type]
    if seeds is None:
        seeds = class_seeds(fp.score_map, t)
    mode = choose_batch_mode(root, k_slots) if batch == "auto" else batch
    wrt = list(wrt)
    if mode == "vmap" and k_slots > 1:
        # "auto" keeps the graph, so that the loop can still run if PyTorch's vmap fails on
        # some backward operation of the model; an explicit "vmap" frees it and reports.
        retain = batch == "auto"

        def slot(seed: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return torch.autograd.grad(root, wrt, grad_outputs=seed, retain_graph=retain)

        try:
            grads = torch.func.vmap(slot)(seeds)
        except RuntimeError as exc:
            if not retain:
                raise DcsmError(f"batch='vmap' failed in this model's backward ({exc}); use "
                                "batch='loop' or 'auto'") from exc
        else:
            for k in range(k_slots):
                yield tuple(g[k] for g in grads)
            return
    for k in range(k_slots):
        yield torch.autograd.grad(root, wrt, grad_outputs=seeds[k],
                                  retain_graph=k < k_slots - 1)


def class_gradients(
    fp: ForwardPass,
    targets: Targets,
    wrt: Sequence[torch.Tensor],
    batch: BatchMode = "loop",
) -> list[torch.Tensor]:
    """Gradients of each target's score map with respect to each tensor of ``wrt``.

    Returns one tensor per ``wrt`` entry, shaped ``(K, *t.shape)``.
    """
    if len(target_matrix(targets, fp.score_map.shape[0])[0]) == 0:
        return [t.new_zeros((0, *t.shape)) for t in wrt]
    per_class = list(iter_class_gradients(fp, targets, wrt, batch))
    return [torch.stack([g[i] for g in per_class]) for i in range(len(wrt))]
