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
  with the weight row of each class: a third of each class's backward FLOPs on the two small
  models; and in the forward of every scale after the first, that convolution computes only
  the rows of the classes the slots need: a fifth of SqueezeNet's forward at 1000 classes
  (:mod:`dcsm.pipeline.speedups.head`);
* the class slots: one backward per slot (``batch="loop"``), or one for all of them
  (``batch="vmap"``: ``torch.func.vmap`` over ``torch.autograd.grad``, which folds the slots into
  the batch of every backward operation, so each weight is read once), or the one of the two
  a measured rule picks (``batch="auto"``, :mod:`dcsm.pipeline.speedups.batch_mode`);
* on the CPU in float32, the convolutions with a large weight (VGG-16's fc6 and fc7) run as
  matrix products, which read the weight as it is stored instead of re-laying it out at every
  call (:mod:`dcsm.pipeline.speedups.matmul_conv`); and on the CPU max pooling runs through
  PyTorch's much faster channels-last kernel (:mod:`dcsm.pipeline.speedups.max_pool`), the same
  numbers.

``benchmarks/throughput.py`` times them against peer-style code; ``benchmarks/bench_batched.py``
against a naive per-class loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.passes import ForwardPass, Targets, target_matrix
from dcsm.pipeline.rules import BackpropRule
from dcsm.pipeline.speedups.batch_mode import choose_batch_mode
from dcsm.pipeline.speedups.head import (
    HeadRestriction,
    HeadRestrictionFailed,
    RestrictHead,
    class_head,
)
from dcsm.pipeline.speedups.matmul_conv import large_convs
from dcsm.pipeline.speedups.max_pool import fast_pooling
from dcsm.pipeline.state import inference_state

__all__ = [
    "BatchMode",
    "ForwardPass",
    "Targets",
    "capture_layers",
    "class_gradients",
    "class_seeds",
    "forward_pass",
    "iter_class_gradients",
    "require_finite",
    "target_matrix",
]

BatchMode = Literal["auto", "loop", "vmap"]
"""How the class slots are back-propagated: one backward each (``"loop"``), one for all
(``"vmap"``), or the one :func:`~dcsm.pipeline.speedups.batch_mode.choose_batch_mode` picks."""


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

    def make_hook(name: str) -> Callable[[nn.Module, object, object], torch.Tensor]:
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
    ``head.rows``, and :class:`~dcsm.pipeline.speedups.head.HeadRestrictionFailed` is raised
    where the model did not let that happen cleanly (the caller runs the full forward
    instead).

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
        convs = large_convs(adapter.model, x, autocast)
        pools = fast_pooling(x)
        restrict = RestrictHead(head) if head is not None else None
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



def class_seeds(score_map: torch.Tensor, targets: Targets) -> torch.Tensor:
    """(K, *score_map.shape) one-hot seeds: ``S(:,:,c) = 1`` for image n's k-th class c."""
    t = target_matrix(targets, score_map.shape[0])
    seeds = torch.zeros((t.shape[1], *score_map.shape), dtype=score_map.dtype,
                        device=score_map.device)
    rows = torch.arange(score_map.shape[0])
    for k in range(t.shape[1]):
        seeds[k, rows, t[:, k]] = 1.0
    return seeds



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
    every backward operation); ``batch="auto"`` chooses
    (:func:`~dcsm.pipeline.speedups.batch_mode.choose_batch_mode`). With ``head`` (default) a
    1x1 convolution classifier is skipped as :class:`~dcsm.pipeline.speedups.head.ClassHead`
    describes.
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
        per_slot = [s for k in range(k_slots) if (s := top.seeds(fp, t, k)) is not None]
        if len(per_slot) == k_slots:
            root, seeds = top.input, torch.stack(per_slot)
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

