"""What the default preset's additions cost: time per photo of the ``tuned`` preset as it is
(the mirror image, the affinity walk, the sharpening) against the same preset without them (the
default before them), measured in one run, the two taking turns on each photo.

For each model, on the bundled image resized to ``--size`` pixels on its long side, with every
class the model names as most probable twice (the default's candidates), one thread: a warm-up
call of each, then ``--repeats`` turns; the median seconds of each and their ratio. Also the
cost of each addition alone.

Usage::

    PYTHONPATH=src python benchmarks/default_cost.py [--models a,b] [--size 512] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dcsm

IMAGE = Path(__file__).resolve().parents[1] / "src" / "dcsm" / "data" / "chelsea_coffee.png"
MODELS = ["efficientnet_lite0", "squeezenet1_1", "efficientnet_lite2"]
#: The settings compared: the preset's additions off, each alone, all (the default).
_OFF: dict[str, object] = {"flip": False, "propagate": False, "gate": 0.0, "gamma": 1.0}
VARIANTS: dict[str, dict[str, object]] = {
    "before (no flip, no walk, no gate, gamma 1)": _OFF,
    "+ mirror image": {**_OFF, "flip": True},
    "+ affinity walk": {**_OFF, "propagate": True},
    "+ score-map gate": {**_OFF, "gate": 1.0},
    "+ gamma 2": {**_OFF, "gamma": 2.0},
    "default (all four)": {},
}


def photo(size: int) -> np.ndarray:
    """The bundled image with its long side resized to ``size``."""
    img = Image.open(IMAGE).convert("RGB")
    scale = size / max(img.size)
    return np.asarray(img.resize((max(8, round(img.width * scale)),
                                  max(8, round(img.height * scale))), Image.BILINEAR))


def measure(model: str, size: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each variant on one model."""
    adapter = dcsm.load_model(model)
    image = photo(size)
    explainers = {k: dcsm.DistinctSaliency(adapter, **v) for k, v in VARIANTS.items()}
    classes = [c.index for c in explainers["default (all four)"].explain(image).candidates]
    times: dict[str, list[float]] = {k: [] for k in explainers}
    for e in explainers.values():  # warm-up
        e.explain(image, classes=classes)
    for _ in range(repeats):
        for k, e in explainers.items():
            start = time.perf_counter()
            e.explain(image, classes=classes)
            times[k].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    keys = list(VARIANTS)
    print("| model | " + " | ".join(keys) + " | default / before |")
    print("|---|" + "---|" * (len(keys) + 1))
    for model in args.models.split(","):
        t = measure(model, args.size, args.repeats)
        base = t[keys[0]]
        cells = [f"{t[k]:.3f} s ({t[k] / base:.2f}x)" for k in keys]
        print(f"| {model} | " + " | ".join(cells) + f" | **{t[keys[-1]] / base:.2f}x** |",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
