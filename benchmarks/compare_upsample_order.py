"""How much the paper's two orders of "max over channels" and "upsample" differ on a real photo.

The text takes the channel maximum then upsamples (``max_first``, dcsm's default); the formula
upsamples every channel then takes the maximum (``upsample_first``). Prints, for the default
model on the bundled image at the paper's settings (``--preset``), the time of each and the
differences of the final maps.

    python benchmarks/compare_upsample_order.py [--model NAME] [--classes tabby,espresso]
        [--preset paper]
"""

from __future__ import annotations

import argparse
import time
from importlib import resources

import numpy as np

import dcsm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=dcsm.DEFAULT_MODEL)
    parser.add_argument("--classes", default="tabby,espresso")
    parser.add_argument("--preset", default="paper", choices=sorted(dcsm.PRESETS))
    args = parser.parse_args()
    adapter = dcsm.load_model(args.model)
    image = dcsm.load_image(resources.files("dcsm") / "data" / "chelsea_coffee.png")
    classes = args.classes.split(",")
    maps, seconds = {}, {}
    for order in ("max_first", "upsample_first"):
        explainer = dcsm.DistinctSaliency(adapter, preset=args.preset, upsample=order)
        explainer.explain(image, classes=classes)  # warm-up
        start = time.perf_counter()
        maps[order] = explainer.explain(image, classes=classes).maps
        seconds[order] = time.perf_counter() - start
    print(f"model {args.model}, preset {args.preset}, image chelsea_coffee.png "
          f"{image.shape[1]}x{image.shape[0]}")
    for order, s in seconds.items():
        print(f"  {order:<15} {s:6.2f} s")
    ratio = seconds["upsample_first"] / seconds["max_first"]
    print(f"  upsample_first / max_first time: {ratio:.2f}x")
    for name in classes:
        a, b = maps["max_first"][name], maps["upsample_first"][name]
        diff = np.abs(a - b)
        corr = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
        left = (float(a[:, : a.shape[1] // 2].sum() / a.sum()),
                float(b[:, : b.shape[1] // 2].sum() / b.sum()))
        print(f"  {name:<10} max |diff| {diff.max():.4f}  mean |diff| {diff.mean():.4f}  "
              f"correlation {corr:.4f}  left-half share {left[0]:.3f} vs {left[1]:.3f}")


if __name__ == "__main__":
    main()
