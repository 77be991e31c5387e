"""One forward pass, then the gradients of several class score maps in one batched backward.

The forward runs with the model's parameters frozen and, unless the input gradient is wanted,
with an input that does not require gradients: the autograd graph then starts at the first
requested layer (its output is made a leaf in a forward hook), so the backward goes no lower than
that layer and no parameter gradient is ever computed. Hooks live only inside the context that
needs them and are always removed.

For ``K`` target classes the backward seeds are ``K`` one-hot score maps, ``S(:,:,c) = 1`` and 0
elsewhere (the paper's notation), back-propagated through the one forward graph: one backward per
class (``batch="loop"``, the default) or all together with
``torch.autograd.grad(..., is_grads_batched=True)`` (``batch="vmap"``). The second has no real
batching for convolution backward in PyTorch (it falls back to a per-class loop) and measured
5-10% slower on CPU; ``benchmarks/bench_batched.py`` times both, and the image repeated in the
batch, against a naive per-class loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from dcsm.adapters.base import LayerRef, ModelAdapter
from dcsm.errors import DcsmError
from dcsm.rules import BackpropRule
from dcsm.state import inference_state

BatchMode = Literal["vmap", "loop"]


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
    ``activations`` are the layers' outputs as the model returns them (see :mod:`dcsm.layouts`).
    """

    input: torch.Tensor
    score_map: torch.Tensor
    activations: dict[str, torch.Tensor]


def forward_pass(
    adapter: ModelAdapter,
    x: torch.Tensor,
    layers: Sequence[LayerRef],
    rule: BackpropRule,
    input_grad: bool = False,
    autocast: torch.dtype | None = None,
) -> ForwardPass:
    """Run the fully convolutional model on ``x`` (N, 3, H, W), recording ``layers``.

    ``autocast`` runs the forward under :func:`torch.autocast` with that dtype (bfloat16 or
    float16); the backward follows the recorded graph.
    """
    modules = adapter.resolve_layers(layers) if layers else {}
    # Gradients are needed even if the caller is inside no_grad() or inference_mode().
    with torch.inference_mode(False), torch.enable_grad():
        x = x.to(adapter.device).clone()
        if input_grad:
            x = x.detach().requires_grad_(True)
        amp = (torch.autocast(x.device.type, dtype=autocast) if autocast is not None
               else contextlib.nullcontext())
        with inference_state(adapter.model), rule.active(), capture_layers(modules) as acts, \
                amp:
            score_map = adapter.model(x)
    if not isinstance(score_map, torch.Tensor) or score_map.ndim not in (2, 4) or \
            score_map.shape[1] != adapter.num_classes or score_map.shape[0] != x.shape[0]:
        got = tuple(score_map.shape) if isinstance(score_map, torch.Tensor) else \
            type(score_map).__name__
        raise DcsmError(f"model {adapter.name} returned {got}, expected "
                        f"({x.shape[0]}, {adapter.num_classes}) logits or a "
                        f"({x.shape[0]}, {adapter.num_classes}, h, w) score map")
    if score_map.ndim == 2:
        score_map = score_map[:, :, None, None]
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


def iter_class_gradients(
    fp: ForwardPass,
    targets: Targets,
    wrt: Sequence[torch.Tensor],
    batch: BatchMode = "loop",
) -> Iterator[tuple[torch.Tensor, ...]]:
    """For each class slot k, the gradients of the slot's score maps at each tensor of ``wrt``.

    One backward per slot serves every image of the batch: image n's seed only reaches image
    n's activations (the model runs in eval mode, so images do not interact). The graph is freed
    after the last slot. ``batch="vmap"`` computes every slot in one batched call first.
    """
    t = target_matrix(targets, fp.score_map.shape[0])
    if t.shape[1] == 0:
        return
    if not fp.score_map.requires_grad:
        raise DcsmError("nothing to differentiate: no requested layer lies before the scores")
    seeds = class_seeds(fp.score_map, t)
    if batch == "vmap" and t.shape[1] > 1:
        grads = torch.autograd.grad(fp.score_map, list(wrt), grad_outputs=seeds,
                                    is_grads_batched=True)
        for k in range(t.shape[1]):
            yield tuple(g[k] for g in grads)
        return
    for k in range(t.shape[1]):
        yield torch.autograd.grad(fp.score_map, list(wrt), grad_outputs=seeds[k],
                                  retain_graph=k < t.shape[1] - 1)


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
