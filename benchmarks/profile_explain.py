"""Where the time of one ``explain`` call goes: PyTorch's profiler, operators grouped by stage.

For each model, at the paper's settings (preset ``paper``: 4 scales, the model's default
layers, three classes) on the bundled image resized to ``--size``, one thread: two warm-up
calls, then ``--calls`` calls under :mod:`torch.profiler`. Each operator's own CPU time (its
"self" time, so nothing is counted twice) goes to one stage of the method:

* forward and backward convolutions and matrix products (the FLOPs),
* max pooling and batch normalisation (forward and backward),
* the rectifiers and the guided rule's backward,
* the maps (Eq. 1's largest absolute derivative, upsampling, Eq. 2, the tanh and mean of Eq. 3),
* copies, fills and allocation (layout changes, zeroed gradient buffers, casts),
* everything else (element-wise arithmetic, autograd's own bookkeeping, Python).

Usage::

    PYTHONPATH=src python benchmarks/profile_explain.py [--models a,b] [--size 224]
        [--calls 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.profiler import ProfilerActivity, profile

import dcsm

IMAGE = Path(__file__).resolve().parents[1] / "src" / "dcsm" / "data" / "chelsea_coffee.png"
CLASSES = [281, 967, 282]  # tabby, espresso, tiger cat
MODELS = ["efficientnet_lite0", "squeezenet1_1"]

STAGES: dict[str, tuple[str, ...]] = {
    "convolutions and matrix products, forward": (
        "aten::mkldnn_convolution", "aten::_slow_conv2d_forward", "aten::thnn_conv2d",
        "aten::_convolution", "aten::convolution", "aten::conv2d", "aten::addmm", "aten::mm",
        "aten::bmm", "aten::matmul", "aten::linear"),
    "convolutions and matrix products, backward": (
        "aten::convolution_backward", "aten::_slow_conv2d_backward",
        "aten::mkldnn_convolution_backward"),
    "max pooling": (
        "aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward",
        "aten::max_pool2d"),
    "batch normalisation": (
        "aten::native_batch_norm", "aten::_batch_norm_impl_index", "aten::batch_norm",
        "aten::native_batch_norm_backward", "aten::_native_batch_norm_legit_no_training"),
    "rectifiers and the guided backward": (
        "aten::clamp", "aten::clamp_", "aten::clamp_min", "aten::clamp_min_", "aten::gt",
        "aten::lt", "aten::__and__", "aten::bitwise_and", "aten::hardtanh", "aten::relu",
        "aten::relu_", "aten::threshold_backward"),
    "the maps (Eq. 1 to 3)": (
        "aten::abs", "aten::amax", "aten::upsample_bilinear2d", "aten::_upsample_bilinear2d_aa",
        "aten::tanh", "aten::tanh_", "aten::masked_fill_", "aten::sub", "aten::where", "aten::div",
        "aten::maximum", "aten::stack"),
    "copies, fills and allocation": (
        "aten::copy_", "aten::fill_", "aten::empty", "aten::empty_strided", "aten::_to_copy",
        "aten::zero_", "aten::zeros_like", "aten::clone", "aten::contiguous", "aten::cat",
        "aten::index_select"),
}


def profile_model(name: str, size: int, calls: int) -> dict:
    adapter = dcsm.load_model(name, weights="random" if name.startswith("torchvision:")
                              else None)
    image = np.asarray(Image.open(IMAGE).convert("RGB").resize((size, size), Image.BILINEAR))
    explainer = dcsm.DistinctSaliency(adapter, preset="paper")
    for _ in range(2):
        explainer.explain(image, classes=CLASSES)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            explainer.explain(image, classes=CLASSES)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    owner = {op: stage for stage, ops in STAGES.items() for op in ops}
    stages = dict.fromkeys([*STAGES, "everything else"], 0.0)
    others: dict[str, float] = {}
    for e in events:
        stage = owner.get(e.key, "everything else")
        stages[stage] += e.self_cpu_time_total
        if stage == "everything else":
            others[e.key] = others.get(e.key, 0.0) + e.self_cpu_time_total
    top = sorted(others.items(), key=lambda kv: -kv[1])[:5]
    return {"model": name, "ms_per_call": total / calls / 1e3,
            "shares": {k: v / total for k, v in stages.items()},
            "largest_else": [(k, v / total) for k, v in top]}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = [profile_model(m, args.size, args.calls) for m in args.models.split(",")]
    names = [r["model"] for r in results]
    print(f"profiler self time of `explain` (paper preset, {args.size} px, 3 classes, one "
          f"thread, {args.calls} calls after 2 warm-up calls)\n")
    print("| stage | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for stage in results[0]["shares"]:
        print(f"| {stage} | " + " | ".join(f"{r['shares'][stage]:.1%}" for r in results) + " |")
    print("| **ms per call (profiled)** | "
          + " | ".join(f"{r['ms_per_call']:.0f}" for r in results) + " |")
    for r in results:
        print(f"\n{r['model']}, largest in 'everything else': "
              + ", ".join(f"{k} {v:.1%}" for k, v in r["largest_else"]))
    out = {"size": args.size, "calls": args.calls, "models": results}
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
