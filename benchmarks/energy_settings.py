"""Could any setting of dcsm's maps reach Grad-CAM's energy pointing game on the real photos?

Runs the ``tuned`` preset with every combination of alpha (0.5, 1, 3), layer set (the stride-16
blocks, the stride-16 and stride-32 blocks, the stride-32 blocks, and those with the head),
contrast (strongest other class or Eq. 2's sum) and scales (1, or the paper's 1 to 1.6) on the
real photos of ``dcsm bench masks``, every class given, and prints the mean energy pointing
game and pointing game of each, best last, with ``paper``, ``tuned`` and Grad-CAM. The settings
are scored on the photos they would be chosen on, so the best row is an upper bound of what a
choice among them could give, not a result to report:

    python benchmarks/energy_settings.py [--model efficientnet_lite0] [--source ARCHIVES]
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools

import numpy as np
import torch

import dcsm
from dcsm.api import make_explainer
from dcsm.bench.masks import name_classes, score_pair
from dcsm.datasets.realphotos import load_real_photos

LAYER_SETS = {
    "efficientnet_lite0": {"s16": (5, 10), "s16+32": (5, 15), "s32": (11, 15)},
    "efficientnet_lite2": {"s16": (7, 14), "s16+32": (7, 20), "s32": (15, 20)},
}


def main(argv: list[str] | None = None) -> int:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="efficientnet_lite0", choices=list(LAYER_SETS))
    parser.add_argument("--source", default=None, help="folder with the photo archives")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = load_real_photos(args.source)
    adapters = {s: dcsm.load_model(args.model, labels=s) for s in ("voc", "coco")}
    tuned = dcsm.PRESETS["tuned"]
    settings: dict[str, object] = {"paper": "paper", "tuned": "tuned", "Grad-CAM": "gradcam"}
    layer_sets = {}
    for name, (first, last) in LAYER_SETS[args.model].items():
        blocks = tuple(f"block{i}" for i in range(first, last + 1))
        layer_sets[name] = blocks
        layer_sets[name + "+head"] = (*blocks, "head")
    for alpha, (lname, layers), contrast, scales in itertools.product(
            (0.5, 1.0, 3.0), layer_sets.items(), ("strongest", "sum"),
            ((1.0,), (1.0, 1.2, 1.4, 1.6))):
        span = "scales 1-1.6" if len(scales) > 1 else "scale 1"
        key = f"alpha {alpha:g}, {lname}, {contrast}, {span}"
        settings[key] = dataclasses.replace(tuned, name="variant", alpha=alpha, contrast=contrast,
                                            scales=scales, layers=((args.model, layers),))
    rows = []
    for key, setting in settings.items():
        energy, hits = [], []
        for photo in photos:
            adapter = adapters[photo.label_set]
            named = name_classes(adapter, photo)
            explainer = (make_explainer(adapter, "gradcam") if setting == "gradcam"
                         else dcsm.DistinctSaliency(adapter, preset=setting))
            result = explainer.explain(photo.image, classes=named.indices)
            for cls in named.named:
                s = score_pair(result.maps[cls], photo.mask(cls), photo.void, None)
                energy.append(s["energy"])
                hits.append(bool(s["hit"]))
        rows.append((float(np.mean(energy)), float(np.mean(hits)), key))
    print("| setting | energy pointing game | pointing game |\n|---|---|---|")
    for energy, hit, key in sorted(rows):
        print(f"| {key} | {energy:.3f} | {hit:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
