"""Throughput of the full method against peer-style code, the cost model, and tensor batches.

For each model (default: the two offline models and VGG-16 with random weights), at the paper's
settings (preset ``paper``: scales 1, 1.2, 1.4, 1.6; the model's default layers, VGG-16's nine
conv3_1..conv5_3; three candidate classes), on the bundled image resized to ``--size``:

* ``dcsm``: ``dcsm.DistinctSaliency(adapter, preset="paper").explain(image, classes=...)``:
  one forward per scale shared by the classes, parameters frozen, graph from the lowest layer,
  the 1x1 classifier's backward replaced by its weight rows, at the scales after the first only
  the classifier rows of the three classes computed, and the class slots back-propagated as
  ``batch="auto"`` chooses (:func:`dcsm.pipeline.speedups.batch_mode.choose_batch_mode`).
* ``dcsm batch=loop`` / ``dcsm batch=vmap``: the same with the choice forced: one backward per
  class slot, or one backward for all slots (``torch.func.vmap`` over ``torch.autograd.grad``).
* ``peer: one call per class``: what a pytorch-grad-cam or Captum user writes to get the same
  maps: one call per class and scale, each a forward of the model in its normal state
  (parameters requiring gradients, forward hooks keeping the layer outputs with
  ``retain_grad()``) and ``score_map[:, c].sum().backward()``.
* ``peer: repeated per target``: one call per scale with the image repeated once per class in
  the batch and each copy's own class back-propagated (pytorch-grad-cam's ``targets`` list),
  ``.backward()`` as above.
* ``peer: repeated + autograd.grad``: as the previous, but ``torch.autograd.grad`` to the layer
  outputs (Captum's layer methods), which skips parameter gradients and stops at the lowest
  layer: the strongest peer-style code.

Every variant gets the same precision and memory format: ``--precision`` (``fp32``; ``tf32``
sets PyTorch's TF32 flags for every variant; ``bf16`` is ``precision="bfloat16"`` for dcsm and
``torch.autocast`` around the peers' forward) and ``--memory-format`` (``channels_last``
converts the model's weights, and the peers' input, before any variant runs).

**Agreement.** All variants must give the same maps; the per-layer maps, Eq. 2 and Eq. 3 are
the library's in every case and guided back-propagation is the library's rule, so only the
gradient computation differs, and float32 maps may differ by rounding only. The bound
(:func:`agreement_bound`) follows that rounding through the method: a derivative at a layer is a
chain of dot products from the scores down; a dot product of ``n`` terms in float32 has a
relative error of about ``sqrt(n) * u`` (``u = 2^-24``; the probabilistic bound of Higham and
Mary, taken 4 times), added over the weighted layers between the scores and the lowest layer
(``eps``, printed). The largest absolute derivative (Eq. 1) moves by at most ``eps * Mmax``;
Eq. 2 sums ``K - 1`` differences of two such maps; dividing by the contrasted map's maximum
``D`` and ``tanh(alpha .)`` (slope at most ``alpha``) gives ``4 alpha (K - 1) eps Mmax / D`` per
layer and scale (``2 alpha eps`` for one class), at most ``tanh(alpha)`` where ``D`` lies within
the rounding noise; Eq. 3 averages these. ``Mmax`` and ``D`` come from the float32 reference's
own layer maps, so the bound is relative: wide where a class barely differs from another (a
fixed 1e-4 once failed at 1.24e-4 on SqueezeNet for tabby against tiger cat), tight elsewhere.
(A rectifier whose input lies within rounding of 0 may switch, a jump the bound does not
cover; on these images the largest differences stay near 1e-6, far inside it.) Lower
precisions are held to the fixed (mean, max) tolerances below.

**Batches.** ``--batch-sizes`` (default 1, 4, 16) times ``explain`` on a preprocessed tensor
``(N, 3, H, W)`` (N copies of the image, classes an ``(N, 3)`` tensor): images per second, and
each image's maps against the single-image maps (same bound).

Each model and precision runs in a fresh subprocess that times its variants in alternation: a
warm-up call of each, then rounds of one call per variant, the order rotated from round to round
(``--repeats`` rounds, fewer once ``--budget`` seconds are spent). On a shared machine the load
changes from minute to minute; variants timed one after the other in separate processes once
differed by 30 % between two runs of the same code, alternation keeps that out of the ratios.
"speed-up" is the ratio of median times, in brackets that of the fastest calls. With
``--memory``, "+MiB" is what one call of the variant adds to the resident set (Linux ``VmHWM``,
reset before the call), measured in a separate process in which freed blocks go back to the
system (``MALLOC_MMAP_THRESHOLD_``: slow, so not timed); on CUDA the peak allocated GPU memory.

The cost model counts the multiply-accumulates of every convolution and linear layer with
forward hooks at each scale's input size: the method needs ``2 * MACs`` per scale forward (less the
classifier's rows of the classes not asked for, at every scale but the first) and,
per candidate, ``2 * MACs`` of the layers above the lowest requested one less the classifier
(input gradients only; the lowest layer's own weights need no backward). A ``.backward()`` with
parameters requiring gradients costs about twice the forward (input and weight gradients).
FLOPs divided by the measured time, against the rate of a large float32 ``torch.matmul`` on the
same threads, say how close each variant gets to what the machine can do.

Usage::

    PYTHONPATH=src python benchmarks/throughput.py [--models a,b,...] [--variants v,...]
        [--size 224] [--repeats 3] [--budget 40] [--threads N] [--device cpu|cuda]
        [--precision fp32,tf32,bf16] [--memory-format contiguous|channels_last]
        [--batch-sizes 1,4,16] [--no-runner] [--json FILE]

For a GPU run of VGG-16 at the paper's settings in float32, TF32 and bfloat16 see
``benchmarks/gpu_benchmark.py``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _machine import cpu_model, status_kib
from PIL import Image
from torch import nn
from torch.overrides import TorchFunctionMode

import dcsm
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.contrast import subtract_others
from dcsm.pipeline.fusion import PaperFusion
from dcsm.pipeline.gradients import forward_pass, iter_class_gradients
from dcsm.pipeline.images import model_input, reference_scale
from dcsm.pipeline.layer_maps import layer_saliency
from dcsm.pipeline.presets import get_preset
from dcsm.pipeline.speedups import matmul_conv, max_pool
from dcsm.pipeline.speedups.batch_mode import choose_batch_mode
from dcsm.pipeline.speedups.head import class_head
from dcsm.pipeline.speedups.matmul_conv import MatmulLargeConvs
from dcsm.pipeline.speedups.max_pool import FastMaxPool

IMAGE = Path(dcsm.__file__).parent / "data" / "chelsea_coffee.png"
MODELS = ["efficientnet_lite0", "squeezenet1_1", "torchvision:vgg16"]
CLASSES = [281, 967, 282]  # tabby, espresso, tiger cat (ImageNet indices)
UNIT_ROUNDOFF = 2.0 ** -24  # float32
ROUNDING_LAMBDA = 4.0  # the constant of the probabilistic sqrt(n) u bound, taken generously
PRECISION_TOLERANCE = {"tf32": (0.02, 0.15), "bf16": (0.05, 0.35)}  # (mean, max) |diff|
DCSM_PRECISION = {"fp32": "float32", "tf32": "float32", "bf16": "bfloat16"}
MEMORY_FORMATS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass
class Case:
    """A model, an image and the paper's settings."""

    adapter: ModelAdapter
    image: np.ndarray
    targets: list[int]
    layers: list[str]
    scales: tuple[float, ...]
    alpha: float
    memory_format: torch.memory_format = torch.contiguous_format

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[0], self.image.shape[1])

    def model_input(self, scale: float) -> torch.Tensor:
        """The preprocessed input at ``scale`` in the case's memory format."""
        return model_input(self.adapter, self.image, scale).contiguous(
            memory_format=self.memory_format)


def load(model: str, device: str) -> ModelAdapter:
    torch.manual_seed(0)  # VGG-16's random weights: the same in every process
    weights = "random" if model.startswith("torchvision:") else None
    return dcsm.load_model(model, weights=weights, device=device)


def make_case(model: str, size: int, device: str, memory_format: str = "contiguous") -> Case:
    adapter = load(model, device)
    fmt = MEMORY_FORMATS[memory_format]
    if fmt is not torch.contiguous_format:
        adapter.model.to(memory_format=fmt)
    image = np.asarray(Image.open(IMAGE).convert("RGB").resize((size, size), Image.BILINEAR))
    preset = get_preset("paper")
    return Case(adapter, np.ascontiguousarray(image), list(CLASSES),
                list(adapter.default_layers), preset.scales, preset.alpha, fmt)


def autocast(precision: str, device: str):  # noqa: ANN201
    """The peers' autocast context for ``precision`` (their forward only, as users write it)."""
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def set_tf32(precision: str) -> None:
    """PyTorch's TF32 flags on for ``tf32``, off otherwise (every variant alike)."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32


# --------------------------------------------------------------------------- variants
def dcsm_variant(batch: str) -> Callable[[Case, str], np.ndarray]:
    def run(case: Case, precision: str) -> np.ndarray:
        explainer = dcsm.DistinctSaliency(case.adapter, preset="paper", batch=batch,
                                          precision=DCSM_PRECISION[precision])
        result = explainer.explain(case.image, classes=case.targets)
        return np.stack([result.maps[c.name] for c in result.candidates])

    return run


@contextmanager
def keep_layers(case: Case) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks storing each layer's output with ``retain_grad()`` (a peer's hooks)."""
    stored: dict[str, torch.Tensor] = {}

    def make_hook(name: str):  # noqa: ANN202
        def hook(module, inputs, output):
            if output.requires_grad:
                output.retain_grad()
            stored[name] = output
            return output.clone()  # a later in-place op cannot change the stored tensor

        return hook

    modules = case.adapter.resolve_layers(case.layers)
    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    try:
        yield stored
    finally:
        for h in handles:
            h.remove()


def _normal_state(model: nn.Module) -> None:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def _fuse(case: Case, maps: dict[tuple[int, int], list[torch.Tensor]]) -> np.ndarray:
    """maps[(scale, layer)]: one (1, H, W) map per class, in class order."""
    fusion = PaperFusion(len(case.layers), case.alpha)
    with torch.no_grad():
        for (_, i), per_class in sorted(maps.items()):
            fusion.add(i, torch.cat(per_class).float())
    return fusion.result().clamp(0, 1).float().cpu().numpy()


def per_class_calls(case: Case, precision: str) -> np.ndarray:
    model = case.adapter.model
    _normal_state(model)
    rule = dcsm.GuidedRule()
    maps: dict[tuple[int, int], list[torch.Tensor]] = {}
    try:
        with keep_layers(case) as stored:
            for c in case.targets:  # one call per class ...
                for s, scale in enumerate(case.scales):  # ... and scale
                    model.zero_grad(set_to_none=True)
                    x = case.model_input(scale).requires_grad_(True)
                    with rule.active(), autocast(precision, str(x.device)):
                        score_map = model(x)
                    score_map[:, c].sum().backward()
                    with torch.no_grad():
                        for i, name in enumerate(case.layers):
                            maps.setdefault((s, i), []).append(
                                layer_saliency(stored[name].grad.float(), case.size))
                    stored.clear()
                    del score_map
    finally:
        model.zero_grad(set_to_none=True)
    return _fuse(case, maps)


def _repeated(case: Case, precision: str, use_backward: bool, freeze: bool = False
              ) -> np.ndarray:
    model = case.adapter.model
    if not freeze:
        _normal_state(model)
    rule = dcsm.GuidedRule()
    k = len(case.targets)
    maps: dict[tuple[int, int], list[torch.Tensor]] = {}
    try:
        with keep_layers(case) as stored:
            for s, scale in enumerate(case.scales):
                model.zero_grad(set_to_none=True)
                x = case.model_input(scale).repeat(k, 1, 1, 1)
                x = x.contiguous(memory_format=case.memory_format).requires_grad_(True)
                with rule.active(), autocast(precision, str(x.device)):
                    score_map = model(x)
                seeds = torch.zeros_like(score_map)
                seeds[torch.arange(k), torch.tensor(case.targets)] = 1.0
                if use_backward:
                    score_map.backward(seeds)
                    grads = [stored[n].grad for n in case.layers]
                else:
                    grads = torch.autograd.grad(score_map, [stored[n] for n in case.layers],
                                                grad_outputs=seeds)
                with torch.no_grad():
                    for i, g in enumerate(grads):
                        m = layer_saliency(g.float(), case.size)
                        maps[(s, i)] = [m[j:j + 1] for j in range(k)]
                stored.clear()
                del score_map, grads
    finally:
        model.zero_grad(set_to_none=True)
    return _fuse(case, maps)


def repeated_backward(case: Case, precision: str) -> np.ndarray:
    return _repeated(case, precision, use_backward=True)


def repeated_grad(case: Case, precision: str) -> np.ndarray:
    return _repeated(case, precision, use_backward=False)


def dcsm_pytorch_kernels(case: Case, precision: str) -> np.ndarray:
    """Diagnostic: dcsm with every convolution and pooling as PyTorch computes them (no
    :class:`MatmulConv`, no channels-last max pooling)."""
    matmul_conv.MATMUL_LARGE_CONVS = max_pool.FAST_MAX_POOL = False
    try:
        return dcsm_variant("auto")(case, precision)
    finally:
        matmul_conv.MATMUL_LARGE_CONVS = max_pool.FAST_MAX_POOL = True


def repeated_grad_kernels(case: Case, precision: str) -> np.ndarray:
    """Diagnostic, not what a user writes: the strongest peer code with dcsm's CPU kernels, for
    large convolutions (:class:`dcsm.pipeline.speedups.matmul_conv.MatmulConv`; it needs frozen
    parameters, which ``torch.autograd.grad`` to the layers does not use anyway) and for max pooling
    (:mod:`dcsm.pipeline.speedups.max_pool`)."""
    model = case.adapter.model
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    pools = FastMaxPool() if case.adapter.device.type == "cpu" else nullcontext()
    try:
        with MatmulLargeConvs(), pools:
            return _repeated(case, precision, use_backward=False, freeze=True)
    finally:
        for p in model.parameters():
            p.requires_grad_(True)


VARIANTS: dict[str, Callable[[Case, str], np.ndarray]] = {
    "dcsm": dcsm_variant("auto"),
    "dcsm batch=loop": dcsm_variant("loop"),
    "dcsm batch=vmap": dcsm_variant("vmap"),
    "peer: one call per class": per_class_calls,
    "peer: repeated per target": repeated_backward,
    "peer: repeated + autograd.grad": repeated_grad,
    # diagnostics, on request only
    "dcsm (PyTorch's kernels)": dcsm_pytorch_kernels,
    "peer: repeated + autograd.grad (dcsm's CPU kernels)": repeated_grad_kernels,
}
DEFAULT_VARIANTS = list(VARIANTS)[:6]


def batch_input(case: Case, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` copies of the preprocessed image as one tensor, and the ``(n, K)`` classes."""
    x = case.adapter.preprocess(case.image).to(case.adapter.device)
    x = x.repeat(n, 1, 1, 1).contiguous(memory_format=case.memory_format)
    return x, torch.tensor([case.targets] * n)


def batched_variant(n: int) -> Callable[[Case, str], np.ndarray]:
    """``explain`` on a tensor batch of ``n`` images: maps ``(n, K, H, W)``."""

    def run(case: Case, precision: str) -> np.ndarray:
        x, classes = batch_input(case, n)
        explainer = dcsm.DistinctSaliency(case.adapter, preset="paper",
                                          precision=DCSM_PRECISION[precision])
        return explainer.explain(x, classes=classes).maps.float().cpu().numpy()

    return run


def get_variant(name: str) -> Callable[[Case, str], np.ndarray]:
    if name.startswith("dcsm batch of "):
        return batched_variant(int(name.split()[-1]))
    return VARIANTS[name]


# --------------------------------------------------------------------------- reference
@dataclass
class Reference:
    """What the parent computes once per model: the cost model and the agreement bound."""

    costs: dict[str, float]
    inputs: list[tuple[int, int]]
    eps: float
    bound: np.ndarray  # (K, 1, 1): largest float32 rounding difference of each class's map
    auto: list[str]  # the mode batch="auto" picks at each scale


class _CountMacs(TorchFunctionMode):
    """Records ``("op", MACs, fan-in)`` for every 2-d convolution and linear call, module or
    functional (EfficientNet-Lite0's classifier is a functional convolution)."""

    def __init__(self, events: list[tuple[str, int, int]]) -> None:
        super().__init__()
        self.events = events

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001,ANN204
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in (F.conv2d, F.linear):
            weight = args[1] if len(args) > 1 else kwargs["weight"]
            fan_in = math.prod(weight.shape[1:])  # (out, in / groups, kh, kw) or (out, in)
            self.events.append(("op", out.numel() * fan_in, fan_in))
        return out


def count_macs(case: Case) -> tuple[list[tuple[int, int]], list[int]]:
    """Per scale (MACs of the whole forward, MACs of the layers above the lowest one), and the
    fan-in of each convolution or linear layer above the lowest one."""
    model = case.adapter.model
    lowest = next(iter(case.adapter.resolve_layers(case.layers).values()))
    events: list[tuple[str, int, int]] = []

    def mark(module, inputs, output):
        events.append(("lowest", 0, 0))

    handle = lowest.register_forward_hook(mark)
    out, fan_ins = [], []
    try:
        for scale in case.scales:
            events.clear()
            with torch.no_grad(), _CountMacs(events):
                model(case.model_input(scale))
            total = sum(m for kind, m, _ in events if kind == "op")
            at = next(i for i, (kind, _, _) in enumerate(events) if kind == "lowest")
            out.append((total, sum(m for kind, m, _ in events[at:] if kind == "op")))
            fan_ins = [f for kind, _, f in events[at:] if kind == "op"]
    finally:
        handle.remove()
    return out, fan_ins


def raw_layer_maps(case: Case) -> tuple[dict[tuple[int, int], torch.Tensor], list[int], list[str]]:
    """The float32 reference's layer maps before Eq. 2 (``(K, H, W)`` per scale and layer),
    the classifier's MACs per scale (0 where it is not a 1x1 convolution), and the mode
    ``batch="auto"`` picks per scale. Plain autograd, one backward per class."""
    rule = dcsm.GuidedRule()
    maps, head_macs, auto = {}, [], []
    k = len(case.targets)
    for s, scale in enumerate(case.scales):
        fp = forward_pass(case.adapter, case.model_input(scale), case.layers, rule)
        acts = list(fp.activations.values())
        head = class_head(fp, acts)
        head_macs.append(0 if head is None else
                         head.input[0].numel() * head.weight.shape[0])
        auto.append(choose_batch_mode(fp.score_map if head is None else head.input, k))
        per_class = list(iter_class_gradients(fp, case.targets, acts, "loop", head=False))
        with torch.no_grad():
            for i in range(len(acts)):
                g = torch.cat([grads[i] for grads in per_class]).float()
                maps[(s, i)] = layer_saliency(g, case.size).cpu()
        del fp, acts, per_class
    return maps, head_macs, auto


def agreement_bound(maps: dict[tuple[int, int], torch.Tensor], alpha: float,
                    eps: float) -> np.ndarray:
    """Per class, the largest difference float32 rounding can make in the fused map (see the
    module docstring): ``(K, 1, 1)``."""
    cap = math.tanh(alpha)
    terms = []
    for m in maps.values():
        k = m.shape[0]
        mmax = float(m.max())
        if k == 1:
            terms.append(torch.full((1,), min(2 * alpha * eps, cap)))
            continue
        peak = subtract_others(m).amax(dim=(-2, -1))  # D per class
        noise = 2 * (k - 1) * eps * mmax  # how much D itself may move
        term = 4 * alpha * (k - 1) * eps * mmax / peak.clamp(min=1e-30)
        terms.append(torch.where(peak > 2 * noise, term.clamp(max=cap),
                                 torch.full_like(term, cap)))
    return torch.stack(terms).mean(dim=0).numpy()[:, None, None]


def reference(case: Case) -> Reference:
    macs, fan_ins = count_macs(case)
    maps, head_macs, auto = raw_layer_maps(case)
    k = len(case.targets)
    fwd = sum(2 * t for t, _ in macs)
    trunc = sum(2 * a for _, a in macs)
    head = sum(2 * h for h in head_macs)
    full = 3 * fwd  # forward + input and weight gradients
    # dcsm's forwards after the reference scale compute the classifier rows of the K classes
    # only (dcsm.pipeline.speedups.head.HeadRestriction).
    ref = reference_scale(case.scales)
    unused = sum(2 * h * (1 - k / case.adapter.score_channels)
                 for s, h in enumerate(head_macs) if s != ref)
    ours = fwd - unused + k * (trunc - head)
    costs = {
        "forward": fwd,
        "truncated backward per class": trunc,
        "classifier backward per class": head,
        "classifier rows not computed": unused,
        "dcsm": ours,
        "dcsm batch=loop": ours,
        "dcsm batch=vmap": ours,
        "peer: one call per class": k * full,
        "peer: repeated per target": k * full,
        "peer: repeated + autograd.grad": k * fwd + k * trunc,
    }
    costs["dcsm (PyTorch's kernels)"] = costs["dcsm"]
    costs["peer: repeated + autograd.grad (dcsm's CPU kernels)"] = \
        costs["peer: repeated + autograd.grad"]
    eps = ROUNDING_LAMBDA * UNIT_ROUNDOFF * sum(math.sqrt(f) for f in fan_ins)
    inputs = [tuple(case.model_input(s).shape[-2:]) for s in case.scales]
    return Reference(costs, inputs, eps, agreement_bound(maps, case.alpha, eps), auto)


def matmul_rate(device: str, n: int = 2048, repeats: int = 10) -> float:
    """Best float32 matmul rate (GFLOP/s) of an n x n product."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        torch.matmul(a, b)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


# --------------------------------------------------------------------------- child runs
def child(args: argparse.Namespace) -> None:
    """One model and precision, several variants timed in turn (``|``-separated): a warm-up
    call of each, then rounds of one timed call per variant, the order rotated each round,
    until ``--repeats`` rounds or ``--budget`` seconds; the peak memory of each call. Timing
    the variants in alternation in one process keeps a shared machine's changing load from
    favouring whichever ran in a quiet moment. JSON on stdout; maps to ``--maps-out/<i>.npy``.
    """
    model, precision, names = args.child
    variants = names.split("|")
    case = make_case(model, args.size, args.device, args.memory_format)
    cuda = args.device.startswith("cuda")
    set_tf32(precision)
    out = {v: {"times": [], "extra_mib": [], "gpu_peak_mib": None} for v in variants}

    def call(i: int) -> np.ndarray:
        v = variants[i]
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
            before = status_kib("VmRSS")
        except OSError:
            before = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        maps = get_variant(v)(case, precision)
        if cuda:
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - t
        peak = status_kib("VmHWM") if before is not None else None
        out[v]["times"].append(elapsed)
        out[v]["extra_mib"].append((peak - before) / 1024 if peak and before else None)
        out[v]["rss_peak_mib"] = max(out[v].get("rss_peak_mib") or 0, (peak or 0) / 1024)
        if cuda:
            out[v]["gpu_peak_mib"] = max(out[v]["gpu_peak_mib"] or 0,
                                         torch.cuda.max_memory_allocated() / 2**20)
        return maps

    start = time.perf_counter()
    for i in range(len(variants)):
        if i == 0 or args.warmup == "all":
            np.save(Path(args.maps_out) / f"{i}.npy", call(i))
            out[variants[i]]["warmup"] = out[variants[i]]["times"].pop()
    for r in range(args.repeats):
        if r and time.perf_counter() - start > args.budget:
            break
        for j in range(len(variants)):
            i = (j + r) % len(variants)
            maps = call(i)
            if args.warmup != "all" and r == 0:
                np.save(Path(args.maps_out) / f"{i}.npy", maps)
    print(json.dumps(out))


def run_child(args: argparse.Namespace, model: str, variants: list[str], precision: str,
              maps_dir: Path, warmup: str = "all", memory: bool = False) -> dict | None:
    """:func:`child` in a fresh process; its results, each variant's maps in ``"maps"``."""
    cmd = [sys.executable, __file__, "--child", model, precision, "|".join(variants),
           "--size", str(args.size), "--repeats", "0" if memory else str(args.repeats),
           "--budget", str(args.budget), "--device", args.device, "--memory-format",
           args.memory_format, "--maps-out", str(maps_dir), "--warmup", warmup]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if memory:  # large blocks straight from and back to the system: each call's peak its own
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    maps_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        print(f"  {model} / {precision} / {variants} failed:\n{proc.stderr[-3000:]}",
              file=sys.stderr)
        return None
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for i, v in enumerate(variants):
        out[v]["maps"] = np.load(maps_dir / f"{i}.npy")
    return out


def check(r: dict, maps: np.ndarray, ref_maps: np.ndarray, bound: np.ndarray,
          precision: str) -> bool:
    """Fill ``r`` with the differences from the float32 dcsm maps; True if they agree."""
    diff = np.abs(maps - ref_maps)
    r["max_diff"], r["mean_diff"] = float(diff.max()), float(diff.mean())
    if precision == "fp32":
        r["diff_over_bound"] = float((diff / bound).max())
        r["agrees"] = r["diff_over_bound"] <= 1.0
    else:
        mean_tol, max_tol = PRECISION_TOLERANCE[precision]
        r["agrees"] = r["mean_diff"] <= mean_tol and r["max_diff"] <= max_tol
    return r["agrees"]


# --------------------------------------------------------------------------- runner
def runner_throughput(args: argparse.Namespace, images: int = 16, pictures: bool = True,
                      writers: int = 0) -> dict:
    """``dcsm batch`` end to end (decode, maps, every output file, or with ``pictures`` False
    the data files only) on ``images`` copies, the files written in turn (``writers`` 0) or by
    that many writer processes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        src = Image.open(IMAGE).convert("RGB")
        for i in range(images):
            src.crop((i * 20, 0, i * 20 + 224, 224)).resize(
                (args.size, args.size)).save(folder / f"img{i:02d}.png")
        cmd = [str(folder), "--classes", ",".join(map(str, CLASSES)), "--no-progress",
               "--device", args.device, "--workers", "1", "--preset", "paper",
               "--writers", str(writers)]
        if not pictures:
            cmd.append("--no-pictures")
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        return timed_batch(cmd, Path(tmp) / "out")


def timed_batch(arguments: list[str], out: Path) -> dict:
    """``python -m dcsm batch ARGUMENTS --out OUT`` with this checkout's ``src`` first on the
    path: the images done, their rate from the manifest (first record to last ``done``, after
    the model is loaded), the median seconds per image and the wall time with start-up."""
    cmd = [sys.executable, "-m", "dcsm", "batch", *arguments, "--out", str(out)]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                         env.get("PYTHONPATH", "")])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise RuntimeError(f"dcsm batch failed: {proc.stderr.strip()[-2000:]}")
    recs = [json.loads(line) for line in
            (out / ".dcsm-batch" / "rank-0.jsonl").read_text().splitlines()]
    done = [r for r in recs if r["event"] == "done"]
    start = next(r for r in recs if r["event"] == "start")["time"]
    span = done[-1]["time"] - start
    return {"images": len(done), "wall_s": wall, "images_per_s": len(done) / span,
            "per_image_s": statistics.median(r["seconds"] for r in done)}


# --------------------------------------------------------------------------- report
def print_rows(rows: dict[str, dict], rate: float) -> None:
    base = rows.get("dcsm")
    head = (f"{'variant':<46} {'s/img':>7} {'img/s':>7} {'speed-up':>15} {'GFLOP':>7} "
            f"{'GFLOP/s':>8} {'of mm':>6} {'+MiB':>6} {'max|diff|':>10} {'diff/bound':>10}")
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        speed = (r["median_s"] / base["median_s"]) if base else float("nan")
        fastest = (r["min_s"] / base["min_s"]) if base else float("nan")
        mem = r["gpu_peak_mib"] if r["gpu_peak_mib"] is not None else r["extra_mib"]
        mem = float("nan") if mem is None else mem
        r["dcsm_speedup"], r["dcsm_speedup_fastest"] = speed, fastest
        ratio = r.get("diff_over_bound")
        print(f"{name:<46} {r['median_s']:7.3f} {1 / r['median_s']:7.3f} "
              f"{speed:6.2f}x ({fastest:4.2f}x) {r['flops'] / 1e9:7.1f} "
              f"{r['gflops_per_s']:8.1f} {r['gflops_per_s'] / rate:6.1%} {mem:6.0f} "
              f"{r['max_diff']:10.2e} {'' if ratio is None else f'{ratio:10.3f}'}"
              f"{'' if r['agrees'] else '  DISAGREES'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help="comma-separated, of: " + ", ".join(VARIANTS))
    parser.add_argument("--size", type=int, default=224, help="image side (square), pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="stop timing a variant once this many seconds are spent "
                             "(at least one timed call)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated: fp32, tf32 (CUDA), bf16 (autocast)")
    parser.add_argument("--memory-format", default="contiguous", choices=list(MEMORY_FORMATS))
    parser.add_argument("--batch-sizes", default="1,4,16",
                        help="tensor batches timed through explain ('' skips them)")
    parser.add_argument("--memory", action="store_true",
                        help="also measure each variant's memory, one call each in a process "
                             "returning freed memory to the system (slow; not timed)")
    parser.add_argument("--no-runner", action="store_true",
                        help="skip the `dcsm batch` end-to-end measurement")
    parser.add_argument("--matmul-repeats", type=int, default=10,
                        help="timed 2048^3 products for the machine's matmul rate (best of)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--maps-out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", default="all", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    precisions = [p for p in args.precision.split(",") if p]
    sizes = [int(n) for n in args.batch_sizes.split(",") if n]
    bad = [v for v in variants if v not in VARIANTS] + [
        p for p in precisions if p not in DCSM_PRECISION]
    if bad:
        parser.error(f"unknown variant or precision: {bad}")
    if args.matmul_repeats < 0:
        parser.error("--matmul-repeats must be 0 or more")
    if "dcsm" not in variants:
        variants.insert(0, "dcsm")
    rate = matmul_rate(args.device, repeats=args.matmul_repeats)
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {args.device}"
               + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda")
                  else ""))
    print(f"machine: {machine}\nfloat32 matmul (2048^3): {rate:.1f} GFLOP/s")
    scales = list(get_preset("paper").scales)
    print(f"image {args.size}x{args.size}; paper preset (scales {scales}); classes {CLASSES}; "
          f"{args.memory_format}; warm-up + up to {args.repeats} timed calls "
          f"(budget {args.budget:g} s)\n")
    results: dict = {"machine": machine, "matmul_gflops": rate, "size": args.size,
                     "memory_format": args.memory_format, "models": {}}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            case = make_case(model, args.size, args.device, args.memory_format)
            ref = reference(case)
            n_layers = len(case.layers)
            del case
            costs = ref.costs
            print(f"== {model}: {n_layers} layers; inputs {ref.inputs}; forward "
                  f"{costs['forward'] / 1e9:.2f} GFLOP (all scales), truncated backward "
                  f"{costs['truncated backward per class'] / 1e9:.2f} GFLOP per class, of which "
                  f"the classifier {costs['classifier backward per class'] / 1e9:.2f} (skipped "
                  f"by dcsm); classifier rows dcsm does not compute in the forward "
                  f"{costs['classifier rows not computed'] / 1e9:.2f} GFLOP; batch='auto' picks "
                  f"{', '.join(ref.auto)} (by scale)")
            print(f"   agreement bound: eps {ref.eps:.2e}; per class "
                  + ", ".join(f"{b:.2e}" for b in ref.bound.ravel()))
            rows: dict[str, dict] = {}
            ref_maps = None
            for precision in precisions:
                got = run_child(args, model, variants, precision, Path(tmp) / model / precision)
                if got is None:
                    ok = False
                    continue
                mem = (run_child(args, model, variants, precision, Path(tmp) / "memory",
                                 memory=True) if args.memory else None)
                for variant in variants:
                    r = got[variant]
                    maps = r.pop("maps")
                    r["extra_mib"] = (None if mem is None else mem[variant]["extra_mib"][0])
                    if ref_maps is None:
                        ref_maps = maps
                    ok &= check(r, maps, ref_maps, ref.bound, precision)
                    r["median_s"] = statistics.median(r["times"])
                    r["min_s"] = min(r["times"])
                    r["flops"] = costs[variant]
                    r["gflops_per_s"] = costs[variant] / r["median_s"] / 1e9
                    rows[f"{variant} [{precision}]" if precision != "fp32" else variant] = r
            print_rows(rows, rate)
            print("speed-up: the variant's median time / dcsm's (how much faster dcsm is; in "
                  "brackets the same from the fastest calls); predicted by FLOPs: " + ", ".join(
                      f"{v}: {costs[v] / costs['dcsm']:.2f}x" for v in variants
                      if v != "dcsm"))
            batch_rows: dict[str, dict] = {}
            names = [f"dcsm batch of {n}" for n in sizes]
            got = run_child(args, model, names, precisions[0], Path(tmp) / model / "batches",
                            warmup="first") if names and ref_maps is not None else None
            for name in names if got is not None else []:
                r = got[name]
                maps = r.pop("maps")  # (n, K, H, W)
                ok &= check(r, maps, ref_maps[None], ref.bound[None], precisions[0])
                r["median_s"] = statistics.median(r["times"])
                r["images_per_s"] = int(name.split()[-1]) / r["median_s"]
                batch_rows[name] = r
            if batch_rows:
                print(f"tensor batches through explain ({precisions[0]}; N copies of the image "
                      "in one call, each N timed in turn after a warm-up call at the first): "
                      + "; ".join(
                          f"N={name.split()[-1]}: {r['images_per_s']:.3f} img/s "
                          f"({r['median_s']:.2f} s a call, max|diff| {r['max_diff']:.1e}"
                          + (f", diff/bound {r['diff_over_bound']:.3f}"
                             if "diff_over_bound" in r else "")
                          + ("" if r["agrees"] else ", DISAGREES") + ")"
                          for name, r in batch_rows.items()))
            print()
            results["models"][model] = {
                "costs": costs, "inputs": ref.inputs, "eps": ref.eps, "auto": ref.auto,
                "bound": ref.bound.ravel().tolist(), "rows": rows, "batches": batch_rows}
    if not args.no_runner:
        runs = {"runner": (True, 0, "every output file, written in turn"),
                "runner_writer": (True, 1, "every output file, one writer process"),
                "runner_no_pictures": (False, 0, "--no-pictures: data files only, in turn")}
        for key, (pictures, writers, what) in runs.items():
            r = runner_throughput(args, pictures=pictures, writers=writers)
            results[key] = r
            print(f"`dcsm batch` end to end (efficientnet_lite0, paper preset, {r['images']} "
                  f"images {args.size}x{args.size}, decode + maps + {what}): "
                  f"{r['images_per_s']:.2f} img/s after the model is loaded, median "
                  f"{r['per_image_s']:.3f} s per image; {r['wall_s']:.1f} s wall with start-up")
    rate_after = matmul_rate(args.device, repeats=args.matmul_repeats)
    results["matmul_gflops_after"] = rate_after
    print(f"float32 matmul again after the runs: {rate_after:.1f} GFLOP/s (the 'of mm' columns "
          f"use the first, {rate:.1f}; a busy shared machine lowers both)")
    print("all maps agree (float32 within the rounding bound, lower precisions within "
          f"{PRECISION_TOLERANCE}): {'yes' if ok else 'NO'}")
    results["agree"] = bool(ok)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
