"""Throughput of the full method against peer-style code, and the cost model.

For each model (default: the two offline models and VGG-16 with random weights), at the paper's
settings (preset ``paper``: scales 1, 1.2, 1.4, 1.6; the model's default layers, VGG-16's nine
conv3_1..conv5_3; three candidate classes), on the bundled image resized to ``--size``:

* ``dcsm``: ``dcsm.DistinctSaliency(adapter).explain(image, classes=...)``: one forward per
  scale shared by the classes, parameters frozen, graph from the lowest layer, one truncated
  backward per class.
* ``peer: one call per class``: what a pytorch-grad-cam or Captum user writes to get the same
  maps: one call per class and scale, each a forward of the model in its normal state
  (parameters requiring gradients, forward hooks keeping the layer outputs with
  ``retain_grad()``) and ``score_map[:, c].sum().backward()``.
* ``peer: repeated per target``: one call per scale with the image repeated once per class in
  the batch and each copy's own class back-propagated (pytorch-grad-cam's ``targets`` list),
  ``.backward()`` as above.
* ``peer: repeated + autograd.grad``: as the previous, but ``torch.autograd.grad`` to the layer
  outputs (Captum's layer methods), which skips parameter gradients and stops at the lowest
  layer.

All four give the same maps (checked); the per-layer maps, Eq. 2 and Eq. 3 are the library's in
every case, and guided back-propagation is the library's rule, so only the gradient
computation differs. Every (model, variant) runs in a fresh subprocess: a warm-up call, then
timed calls (``--repeats``, or fewer once ``--budget`` seconds are spent), and the peak resident
memory over them (Linux ``VmHWM``, reset after the model is loaded; on CUDA the peak allocated
GPU memory).

The cost model counts the multiply-accumulates of every convolution and linear layer with
forward hooks at each scale's input size: the method needs ``2 * MACs`` per scale forward and,
per candidate, ``2 * MACs`` of the layers above the lowest requested one (input gradients only;
the lowest layer's own weights need no backward). A ``.backward()`` with parameters requiring
gradients costs about twice the forward (input and weight gradients). FLOPs divided by the
measured time, against the rate of a large float32 ``torch.matmul`` on the same threads, say
how close each variant gets to what the machine can do.

Usage::

    PYTHONPATH=src python benchmarks/throughput.py [--models a,b,...] [--size 224]
        [--repeats 3] [--budget 40] [--threads N] [--device cpu|cuda]
        [--precision fp32,tf32,bf16] [--no-runner] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
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
from _machine import cpu_model, status_kib
from PIL import Image
from torch import nn

import dcsm
from dcsm.adapters.base import ModelAdapter
from dcsm.fusion import PaperFusion
from dcsm.images import model_input
from dcsm.layer_maps import layer_saliency
from dcsm.presets import get_preset

IMAGE = Path(dcsm.__file__).parent / "data" / "chelsea_coffee.png"
MODELS = ["efficientnet_lite0", "squeezenet1_1", "torchvision:vgg16"]
CLASSES = [281, 967, 282]  # tabby, espresso, tiger cat (ImageNet indices)
TOLERANCE = 1e-4  # float32 maps of the same computation (values in [0, 1])
PRECISION_TOLERANCE = {"tf32": (0.02, 0.15), "bf16": (0.05, 0.35)}  # (mean, max) |diff|


@dataclass
class Case:
    """A model, an image and the paper's settings."""

    adapter: ModelAdapter
    image: np.ndarray
    targets: list[int]
    layers: list[str]
    scales: tuple[float, ...]
    alpha: float

    @property
    def size(self) -> tuple[int, int]:
        return (self.image.shape[0], self.image.shape[1])


def load(model: str, device: str) -> ModelAdapter:
    torch.manual_seed(0)  # VGG-16's random weights: the same in every process
    weights = "random" if model.startswith("torchvision:") else None
    return dcsm.load_model(model, weights=weights, device=device)


def make_case(model: str, size: int, device: str) -> Case:
    adapter = load(model, device)
    image = np.asarray(Image.open(IMAGE).convert("RGB").resize((size, size), Image.BILINEAR))
    preset = get_preset("paper")
    return Case(adapter, np.ascontiguousarray(image), list(CLASSES),
                list(adapter.default_layers), preset.scales, preset.alpha)


# --------------------------------------------------------------------------- variants
def method(case: Case) -> np.ndarray:
    result = dcsm.DistinctSaliency(case.adapter).explain(case.image, classes=case.targets)
    return np.stack([result.maps[c.name] for c in result.candidates])


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
            fusion.add(i, torch.cat(per_class))
    return fusion.result().clamp(0, 1).float().cpu().numpy()


def per_class_calls(case: Case) -> np.ndarray:
    model = case.adapter.model
    _normal_state(model)
    rule = dcsm.GuidedRule()
    maps: dict[tuple[int, int], list[torch.Tensor]] = {}
    try:
        with keep_layers(case) as stored:
            for c in case.targets:  # one call per class ...
                for s, scale in enumerate(case.scales):  # ... and scale
                    model.zero_grad(set_to_none=True)
                    x = model_input(case.adapter, case.image, scale).requires_grad_(True)
                    with rule.active():
                        score_map = model(x)
                    score_map[:, c].sum().backward()
                    with torch.no_grad():
                        for i, name in enumerate(case.layers):
                            maps.setdefault((s, i), []).append(
                                layer_saliency(stored[name].grad, case.size))
                    stored.clear()
                    del score_map
    finally:
        model.zero_grad(set_to_none=True)
    return _fuse(case, maps)


def _repeated(case: Case, use_backward: bool) -> np.ndarray:
    model = case.adapter.model
    _normal_state(model)
    rule = dcsm.GuidedRule()
    k = len(case.targets)
    maps: dict[tuple[int, int], list[torch.Tensor]] = {}
    try:
        with keep_layers(case) as stored:
            for s, scale in enumerate(case.scales):
                model.zero_grad(set_to_none=True)
                x = model_input(case.adapter, case.image, scale).repeat(k, 1, 1, 1)
                x.requires_grad_(True)
                with rule.active():
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
                        m = layer_saliency(g, case.size)
                        maps[(s, i)] = [m[j:j + 1] for j in range(k)]
                stored.clear()
                del score_map, grads
    finally:
        model.zero_grad(set_to_none=True)
    return _fuse(case, maps)


def repeated_backward(case: Case) -> np.ndarray:
    return _repeated(case, use_backward=True)


def repeated_grad(case: Case) -> np.ndarray:
    return _repeated(case, use_backward=False)


VARIANTS: dict[str, Callable[[Case], np.ndarray]] = {
    "dcsm": method,
    "peer: one call per class": per_class_calls,
    "peer: repeated per target": repeated_backward,
    "peer: repeated + autograd.grad": repeated_grad,
}


# --------------------------------------------------------------------------- cost model
def count_macs(case: Case) -> list[tuple[int, int]]:
    """Per scale: (MACs of the whole forward, MACs of the layers above the lowest one)."""
    model = case.adapter.model
    lowest = next(iter(case.adapter.resolve_layers(case.layers).values()))
    events: list[tuple[str, int]] = []

    def conv_hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            macs = output.numel() * (module.in_channels // module.groups) * k
        else:
            macs = output.numel() * module.in_features
        events.append(("op", macs))

    def mark(module, inputs, output):
        events.append(("lowest", 0))

    handles = [m.register_forward_hook(conv_hook) for m in model.modules()
               if isinstance(m, nn.Conv2d | nn.Linear)]
    handles.append(lowest.register_forward_hook(mark))
    out = []
    try:
        for scale in case.scales:
            events.clear()
            with torch.no_grad():
                model(model_input(case.adapter, case.image, scale))
            total = sum(m for kind, m in events if kind == "op")
            at = next(i for i, (kind, _) in enumerate(events) if kind == "lowest")
            above = sum(m for kind, m in events[at:] if kind == "op")
            out.append((total, above))
    finally:
        for h in handles:
            h.remove()
    return out


def cost_model(case: Case) -> dict[str, float]:
    """FLOPs of one image for each variant (see the module docstring)."""
    macs = count_macs(case)
    k = len(case.targets)
    fwd = sum(2 * t for t, _ in macs)
    trunc = sum(2 * a for _, a in macs)
    full = 3 * fwd  # forward + input and weight gradients
    return {
        "forward": fwd,
        "truncated backward per class": trunc,
        "dcsm": fwd + k * trunc,
        "peer: one call per class": k * full,
        "peer: repeated per target": k * full,
        "peer: repeated + autograd.grad": k * fwd + k * trunc,
    }


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
def precision_context(precision: str, device: str):  # noqa: ANN201
    """Set TF32 flags and return the autocast context for ``precision``."""
    tf32 = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def child(args: argparse.Namespace) -> None:
    """One (model, variant, precision): warm-up, timed calls, peak memory; JSON on stdout."""
    model, variant, precision = args.child
    case = make_case(model, args.size, args.device)
    cuda = args.device.startswith("cuda")
    fn = VARIANTS[variant]

    def call() -> tuple[float, np.ndarray]:
        with precision_context(precision, args.device):
            if cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn(case)
            if cuda:
                torch.cuda.synchronize()
        return time.perf_counter() - t, out

    try:
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := current RSS
        before = status_kib("VmRSS")
    except OSError:
        before = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    warm, maps = call()
    times: list[float] = []
    spent = warm
    while len(times) < args.repeats and (not times or spent < args.budget):
        t, _ = call()
        times.append(t)
        spent += t
    peak = status_kib("VmHWM") if before is not None else None
    np.save(args.maps_out, maps)
    print(json.dumps({
        "warmup": warm, "times": times,
        "rss_before_mib": before / 1024 if before else None,
        "rss_peak_mib": peak / 1024 if peak else None,
        "gpu_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }))


def run_child(args: argparse.Namespace, model: str, variant: str, precision: str,
              maps_out: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--child", model, variant, precision, "--size",
           str(args.size), "--repeats", str(args.repeats), "--budget", str(args.budget),
           "--device", args.device, "--maps-out", str(maps_out)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(f"  {model} / {variant} / {precision} failed:\n{proc.stderr[-3000:]}",
              file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- runner
def runner_throughput(args: argparse.Namespace, images: int = 8) -> dict:
    """``dcsm batch`` end to end (decode, maps, every output file) on ``images`` copies."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "imgs"
        folder.mkdir()
        src = Image.open(IMAGE).convert("RGB")
        for i in range(images):
            src.crop((i * 20, 0, i * 20 + 224, 224)).resize(
                (args.size, args.size)).save(folder / f"img{i:02d}.png")
        cmd = [sys.executable, "-m", "dcsm", "batch", str(folder), "--out",
               str(Path(tmp) / "out"), "--classes", ",".join(map(str, CLASSES)),
               "--no-progress", "--device", args.device, "--workers", "1"]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                             env.get("PYTHONPATH", "")])
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        recs = [json.loads(line) for line in
                (Path(tmp) / "out" / ".dcsm-batch" / "rank-0.jsonl").read_text().splitlines()]
        done = [r for r in recs if r["event"] == "done"]
        start = next(r for r in recs if r["event"] == "start")["time"]
        span = done[-1]["time"] - start
    return {"images": images, "wall_s": wall, "images_per_s": len(done) / span,
            "per_image_s": statistics.median(r["seconds"] for r in done)}


# --------------------------------------------------------------------------- report
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--size", type=int, default=224, help="image side (square), pixels")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls after a warm-up")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="stop timing a variant once this many seconds are spent "
                             "(at least one timed call)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32",
                        help="comma-separated: fp32, tf32 (CUDA), bf16 (autocast)")
    parser.add_argument("--no-runner", action="store_true",
                        help="skip the `dcsm batch` end-to-end measurement")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--child", nargs=3, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--maps-out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        child(args)
        return
    models = [m for m in args.models.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    precisions = [p for p in args.precision.split(",") if p]
    bad = [v for v in variants if v not in VARIANTS] + [
        p for p in precisions if p not in ("fp32", "tf32", "bf16")]
    if bad:
        parser.error(f"unknown variant or precision: {bad}")
    if "dcsm" not in variants:
        variants.insert(0, "dcsm")
    rate = matmul_rate(args.device)
    machine = (f"{cpu_model()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, device {args.device}"
               + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda")
                  else ""))
    print(f"machine: {machine}\nfloat32 matmul (2048^3): {rate:.1f} GFLOP/s")
    scales = list(get_preset("paper").scales)
    print(f"image {args.size}x{args.size}; paper preset (scales {scales}); classes {CLASSES}; "
          f"warm-up + up to {args.repeats} timed calls (budget {args.budget:g} s)\n")
    results: dict = {"machine": machine, "matmul_gflops": rate, "size": args.size,
                     "models": {}}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        for model in models:
            case = make_case(model, args.size, args.device)
            costs = cost_model(case)
            inputs = [tuple(model_input(case.adapter, case.image, s).shape[-2:])
                      for s in case.scales]
            n_layers = len(case.layers)
            del case
            print(f"== {model}: {n_layers} layers; inputs "
                  f"{inputs}; forward {costs['forward'] / 1e9:.2f} GFLOP (all scales), "
                  f"truncated backward {costs['truncated backward per class'] / 1e9:.2f} "
                  f"GFLOP per class")
            rows = {}
            ref_maps = None
            for precision in precisions:
                for variant in variants if precision == "fp32" else ["dcsm"]:
                    maps_path = Path(tmp) / f"maps_{len(rows)}.npy"
                    r = run_child(args, model, variant, precision, maps_path)
                    if r is None:
                        ok = False
                        continue
                    maps = np.load(maps_path)
                    if ref_maps is None:
                        ref_maps = maps
                    diff = np.abs(maps - ref_maps)
                    r["max_diff"], r["mean_diff"] = float(diff.max()), float(diff.mean())
                    if precision == "fp32":
                        ok &= r["max_diff"] < TOLERANCE
                    else:
                        mean_tol, max_tol = PRECISION_TOLERANCE[precision]
                        r["agrees"] = r["mean_diff"] <= mean_tol and r["max_diff"] <= max_tol
                        ok &= r["agrees"]
                    r["median_s"] = statistics.median(r["times"])
                    r["flops"] = costs[variant]
                    r["gflops_per_s"] = costs[variant] / r["median_s"] / 1e9
                    rows[f"{variant} [{precision}]" if precision != "fp32" else variant] = r
            base = rows.get("dcsm")
            head = (f"{'variant':<32} {'s/img':>7} {'img/s':>7} {'speed-up':>8} {'GFLOP':>7} "
                    f"{'GFLOP/s':>8} {'of mm':>6} {'peak MiB':>9} {'+MiB':>6} {'max|diff|':>10}")
            print(head)
            print("-" * len(head))
            for name, r in rows.items():
                speed = (r["median_s"] / base["median_s"]) if base else float("nan")
                mem = r["gpu_peak_mib"] if r["gpu_peak_mib"] is not None else r["rss_peak_mib"]
                extra = (r["rss_peak_mib"] - r["rss_before_mib"]
                         if r["gpu_peak_mib"] is None and r["rss_before_mib"] else float("nan"))
                r["dcsm_speedup"] = speed
                print(f"{name:<32} {r['median_s']:7.3f} {1 / r['median_s']:7.3f} {speed:7.2f}x "
                      f"{r['flops'] / 1e9:7.1f} {r['gflops_per_s']:8.1f} "
                      f"{r['gflops_per_s'] / rate:6.1%} {mem or float('nan'):9.0f} {extra:6.0f} "
                      f"{r['max_diff']:10.2e}")
            print("speed-up: the variant's time / dcsm's (how much faster dcsm is); predicted "
                  "by FLOPs: " + ", ".join(
                      f"{v}: {costs[v] / costs['dcsm']:.2f}x" for v in variants if v != "dcsm")
                  + "\n")
            results["models"][model] = {"costs": costs, "inputs": inputs, "rows": rows}
    if not args.no_runner:
        r = runner_throughput(args)
        results["runner"] = r
        print(f"`dcsm batch` end to end (efficientnet_lite0, paper preset, {r['images']} images "
              f"{args.size}x{args.size}, decode + maps + every output file): "
              f"{r['images_per_s']:.2f} img/s after the model is loaded, median "
              f"{r['per_image_s']:.3f} s per image; {r['wall_s']:.1f} s wall with start-up")
    rate_after = matmul_rate(args.device)
    results["matmul_gflops_after"] = rate_after
    print(f"float32 matmul again after the runs: {rate_after:.1f} GFLOP/s (the 'of mm' columns "
          f"use the first, {rate:.1f}; a busy shared machine lowers both)")
    print(f"all fp32 maps agree within {TOLERANCE:g} (and lower precisions within their "
          f"tolerances): {'yes' if ok else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
