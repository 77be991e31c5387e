"""Benchmark of dcsm's batched gradient computation against the obvious per-class loop.

What is timed (all on the same image, model, layers, scales and candidate classes, and all
giving the same maps; the per-layer max-abs / upsample / Eq. 2 / tanh / mean part is shared):

* ``dcsm (default)``: the library at the paper's settings, ``dcsm.DistinctSaliency(adapter,
  preset="paper").explain(image, classes=...)`` with its default ``batch="auto"`` (one backward
  per class on this model): one forward per scale (parameters frozen, graph starting at the
  lowest requested layer, the classifier restricted to the classes' rows after the first
  scale), then one backward per class through that shared, truncated graph.
* ``dcsm vmap``: the library with ``batch="vmap"``: the K class score maps back-propagated
  together, ``torch.func.vmap`` over ``torch.autograd.grad``.
* ``repeat input``: per scale the input repeated K times in the batch, one forward (frozen
  parameters, graph from the lowest layer, via the library's context managers), one backward
  with a one-hot seed per batch item.
* ``repeat @layer``: as ``repeat input``, but the trunk below the lowest requested layer runs
  once and its output is repeated K times there (only the part above that layer is batched).
* ``reference loop``: what a user without dcsm would write: for each scale and each class one
  forward of the model in its normal state (parameters requiring grad, input requiring grad,
  guided rule active, forward hooks storing the layer outputs with ``retain_grad()``), one
  ``score_map[:, c].sum().backward()`` (parameter gradients included, down to the input), the
  gradients zeroed between iterations.

Usage::

    PYTHONPATH=src python benchmarks/bench_batched.py [--model efficientnet_lite0]
        [--repeats 3] [--classes "tabby,espresso,tiger cat"] [--threads N] [--no-memory]

Peak memory is measured (unless ``--no-memory``) by running each variant once in a fresh
subprocess: the resident set size once the model is loaded, and the peak resident set size
during the run (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before the run).
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _machine import cpu_model, status_kib

import dcsm
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.fusion import PaperFusion
from dcsm.pipeline.gradients import capture_layers
from dcsm.pipeline.images import as_rgb_array, model_input, resize_image
from dcsm.pipeline.layer_maps import layer_saliency
from dcsm.pipeline.presets import get_preset
from dcsm.pipeline.state import inference_state

IMAGE = Path(dcsm.__file__).parent / "data" / "chelsea_coffee.png"
DEFAULT_CLASSES = "tabby,espresso,tiger cat"
TOLERANCE = 1e-5


@dataclass
class Case:
    """Everything a variant needs: the model, the image and the method's settings."""

    adapter: ModelAdapter
    image: np.ndarray
    class_names: list[str]
    targets: list[int]
    layers: list[str]
    scales: tuple[float, ...]
    alpha: float

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[0], self.image.shape[1])


# --------------------------------------------------------------------------- variants
def library(case: Case, batch: str = "auto") -> np.ndarray:
    """The library's full method (candidate handling, fusion, everything)."""
    result = dcsm.DistinctSaliency(case.adapter, preset="paper", layers=case.layers,
                                   batch=batch).explain(case.image, classes=case.class_names)
    return np.stack([result.maps[c.name] for c in result.candidates])


def library_vmap(case: Case) -> np.ndarray:
    return library(case, batch="vmap")


def _finish(fusion: PaperFusion) -> np.ndarray:
    return fusion.result().clamp(0, 1).float().cpu().numpy()


def reference_loop(case: Case) -> np.ndarray:
    """Per scale and per class: forward, full ``.backward()``, read ``.grad`` of the layers."""
    model = case.adapter.model
    assert all(p.requires_grad for p in model.parameters()), "model not in its normal state"
    modules = case.adapter.resolve_layers(case.layers)
    stored: dict[str, torch.Tensor] = {}

    def make_hook(name: str):  # noqa: ANN202
        def hook(module, inputs, output):
            output.retain_grad()
            stored[name] = output
            return output.clone()  # later in-place ops cannot touch the stored tensor

        return hook

    handles = [m.register_forward_hook(make_hook(n)) for n, m in modules.items()]
    rule = dcsm.GuidedRule()
    fusion = PaperFusion(len(case.layers), case.alpha)
    try:
        for s in case.scales:
            x = model_input(case.adapter, case.image, s)
            per_layer: list[list[torch.Tensor]] = [[] for _ in case.layers]
            for c in case.targets:
                model.zero_grad(set_to_none=True)
                xi = x.clone().requires_grad_(True)
                with rule.active():
                    score_map = model(xi)
                score_map[:, c].sum().backward()
                with torch.no_grad():
                    for i, name in enumerate(case.layers):
                        per_layer[i].append(layer_saliency(stored[name].grad, case.size))
                stored.clear()
                del score_map
            with torch.no_grad():
                for i, maps in enumerate(per_layer):
                    fusion.add(i, torch.cat(maps))
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return _finish(fusion)


def _repeat_hook(k: int):  # noqa: ANN202
    def hook(module, inputs, output):
        return output.repeat(k, *([1] * (output.ndim - 1)))

    return hook


def repeat_batch(case: Case, at_layer: bool = False) -> np.ndarray:
    """Per scale: K copies in the batch, one forward, one backward with per-item seeds.

    ``at_layer``: repeat the lowest requested layer's output instead of the input, so the
    trunk below it runs once.
    """
    model = case.adapter.model
    modules = case.adapter.resolve_layers(case.layers)
    k = len(case.targets)
    rule = dcsm.GuidedRule()
    fusion = PaperFusion(len(case.layers), case.alpha)
    rows = torch.arange(k)
    cols = torch.tensor(case.targets)
    for s in case.scales:
        x = model_input(case.adapter, case.image, s)
        handle = None
        if at_layer:
            # Registered before capture_layers' hooks, so those see the repeated tensor.
            handle = next(iter(modules.values())).register_forward_hook(_repeat_hook(k))
        else:
            x = x.repeat(k, 1, 1, 1)
        try:
            with inference_state(model), rule.active(), capture_layers(modules) as acts, \
                    torch.enable_grad():
                score_map = model(x)
        finally:
            if handle is not None:
                handle.remove()
        seeds = torch.zeros_like(score_map)
        seeds[rows, cols] = 1.0
        grads = torch.autograd.grad(score_map, [acts[n] for n in case.layers],
                                    grad_outputs=seeds)
        with torch.no_grad():
            for i, g in enumerate(grads):
                fusion.add(i, layer_saliency(g, case.size))
        del grads, acts, score_map
    return _finish(fusion)


def repeat_at_layer(case: Case) -> np.ndarray:
    return repeat_batch(case, at_layer=True)


VARIANTS: dict[str, Callable[[Case], np.ndarray]] = {
    "dcsm (default)": library,
    "dcsm vmap": library_vmap,
    "repeat input": repeat_batch,
    "repeat @layer": repeat_at_layer,
    "reference loop": reference_loop,
}
REFERENCE = "reference loop"
LIBRARY = "dcsm (default)"


# --------------------------------------------------------------------------- harness
def make_case(model: str, classes: str, max_side: int = 0) -> Case:
    """The case; ``max_side`` > 0 shrinks the image to that longer side first."""
    adapter = dcsm.load_model(model)
    names = [c.strip() for c in classes.split(",") if c.strip()]
    preset = get_preset("paper")
    image = as_rgb_array(IMAGE)
    if max_side > 0:
        h, w = image.shape[:2]
        ratio = min(1.0, max_side / max(h, w))
        image = resize_image(image, (max(1, round(h * ratio)), max(1, round(w * ratio))))
    return Case(
        adapter=adapter,
        image=image,
        class_names=names,
        targets=[adapter.class_index(c) for c in names],
        layers=list(adapter.default_layers),
        scales=preset.scales,
        alpha=preset.alpha,
    )


def timed(fn: Callable[[Case], np.ndarray], case: Case) -> tuple[float, np.ndarray]:
    gc.collect()
    start = time.perf_counter()
    out = fn(case)
    return time.perf_counter() - start, out


def measure_memory(args: argparse.Namespace, variant: str) -> dict[str, float] | None:
    """Run one variant once in a fresh interpreter; its RSS before and at peak (MiB)."""
    cmd = [sys.executable, __file__, "--model", args.model, "--classes", args.classes,
           "--memory-child", variant, "--max-side", str(args.max_side)]
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  memory run of {variant!r} failed:\n{proc.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def memory_child(args: argparse.Namespace) -> None:
    """Peak RSS of one run: VmHWM reset through /proc/self/clear_refs (Linux), else maxrss.

    (``ru_maxrss`` alone is useless here: Linux keeps it across exec, so a child starts with
    its parent's peak.)
    """
    case = make_case(args.model, args.classes, args.max_side)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    before = status_kib("VmRSS") if reset else None
    if before is None:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    VARIANTS[args.memory_child](case)
    peak = status_kib("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before": before / 1024, "peak": peak / 1024}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=dcsm.DEFAULT_MODEL, help="dcsm.load_model name")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant")
    parser.add_argument("--classes", default=DEFAULT_CLASSES,
                        help=f"comma-separated candidate classes (default: {DEFAULT_CLASSES})")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated subset of: " + ", ".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-RSS runs")
    parser.add_argument("--max-side", type=int, default=0,
                        help="shrink the image to this longer side first (0: as it is, 448 px)")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    if args.memory_child is not None:
        memory_child(args)
        return
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; known: {list(VARIANTS)}")

    if args.max_side < 0:
        parser.error("--max-side must be 0 or more")
    case = make_case(args.model, args.classes, args.max_side)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"interop {torch.get_num_interop_threads()}; CPU: {cpu_model()}; "
          f"python {platform.python_version()}")
    in_sizes = [tuple(model_input(case.adapter, case.image, s).shape[-2:]) for s in case.scales]
    print(f"model {case.adapter.name}; image {IMAGE.name} {case.size[1]}x{case.size[0]}; "
          f"scales {list(case.scales)} (inputs h x w: {in_sizes})")
    print(f"layers ({len(case.layers)}): {', '.join(case.layers)}")
    print("classes: " + ", ".join(f"{n} ({i})" for n, i in zip(case.class_names, case.targets,
                                                                strict=True)))
    print(f"repeats: {args.repeats} (+1 warm-up), variants interleaved round-robin\n")

    times: dict[str, list[float]] = {v: [] for v in names}
    outputs: dict[str, np.ndarray] = {}
    for v in names:  # warm-up (also the output used for the equivalence check)
        _, outputs[v] = timed(VARIANTS[v], case)
    for _ in range(args.repeats):
        for v in names:
            t, _ = timed(VARIANTS[v], case)
            times[v].append(t)

    base = outputs.get(LIBRARY)
    ref_median = statistics.median(times[REFERENCE]) if REFERENCE in times else None
    ok = True
    header = (f"{'variant':<16} {'median s':>9} {'min s':>7} {'max s':>7} "
              f"{'ref/variant':>11} {'max|diff| vs dcsm':>18}")
    mem: dict[str, dict[str, float] | None] = {}
    if not args.no_memory:
        for v in names:
            mem[v] = measure_memory(args, v)
        header += f" {'peak RSS MiB':>12} {'+MiB':>6}"
    print(header)
    print("-" * len(header))
    for v in names:
        med = statistics.median(times[v])
        speed = f"{ref_median / med:10.2f}x" if ref_median is not None else f"{'-':>11}"
        if base is not None:
            diff = float(np.abs(outputs[v] - base).max())
            ok &= diff < TOLERANCE
            diff_s = f"{diff:18.2e}"
        else:
            diff_s = f"{'-':>18}"
        line = (f"{v:<16} {med:9.3f} {min(times[v]):7.3f} {max(times[v]):7.3f} "
                f"{speed} {diff_s}")
        if not args.no_memory:
            m = mem.get(v)
            line += (f" {m['peak']:12.0f} {m['peak'] - m['before']:6.0f}" if m
                     else f" {'?':>12} {'?':>6}")
        print(line)
    if ref_median is not None and LIBRARY in times:
        print(f"\nspeed-up of the library (default settings) over the reference loop: "
              f"{ref_median / statistics.median(times[LIBRARY]):.2f}x")
    noisy = [v for v in names if max(times[v]) > 1.5 * min(times[v])]
    if noisy:
        print(f"warning: noisy timings (max > 1.5 x min) for {', '.join(noisy)}: the CPU is "
              "probably shared; more --repeats or --threads 1 give steadier numbers")
    fastest = min(names, key=lambda v: statistics.median(times[v]))
    print(f"fastest variant: {fastest}")
    if base is not None:
        print(f"all maps agree with the library within {TOLERANCE:g}: {'yes' if ok else 'NO'}")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
