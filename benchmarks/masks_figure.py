"""The real-photo figure of docs/RESULTS.md: each (photo, class) with its true mask, dcsm's map,
Grad-CAM's map and dcsm's segmentation, with the scores in the titles.

Reads the maps and scores of ``dcsm bench masks --out DIR`` (which must have run ``dcsm-tuned``
and ``gradcam``) and segments the dcsm maps with the CRF's defaults:

    python benchmarks/masks_figure.py DIR --out docs/images/real_photos.png [--source ARCHIVES]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dcsm.bench.masks import iou
from dcsm.datasets.realphotos import load_real_photos
from dcsm.io.viz import overlay
from dcsm.segmentation import segment

COLUMNS = ("photo, true mask outlined", "dcsm (tuned)", "Grad-CAM", "dcsm + CRF")


def _outline(mask: np.ndarray) -> np.ndarray:
    """The one-pixel border of a boolean mask."""
    inner = mask.copy()
    inner[1:-1, 1:-1] = (mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1]
                         & mask[1:-1, :-2] & mask[1:-1, 2:])
    return mask & ~inner


def _with_outline(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = image.copy()
    edge = _outline(mask)
    for dy in (-1, 0, 1):  # three pixels wide, to show at the figure's size
        for dx in (-1, 0, 1):
            out[np.roll(np.roll(edge, dy, 0), dx, 1)] = (255, 40, 40)
    return out


def main(argv: list[str] | None = None) -> int:
    """Draw the figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, default=None)
    args = parser.parse_args(argv)
    report = json.loads((args.folder / "masks.json").read_text())
    photos = {p.name: p for p in load_real_photos(args.source)}
    scores = {m: {(s["photo"], s["class"]): s for s in report["methods"][m]["scores"]}
              for m in ("dcsm-tuned", "gradcam")}
    pairs = [(p["photo"], p["class"]) for p in report["pairs"]]
    fig = Figure(figsize=(4 * 2.6, len(pairs) * 2.05))
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(pairs), 4, squeeze=False)
    segs: dict[str, dict[str, np.ndarray]] = {}
    for row, (name, cls) in enumerate(pairs):
        photo = photos[name]
        truth = photo.mask(cls)
        maps = {}
        for method in ("dcsm-tuned", "gradcam"):
            with np.load(args.folder / "maps" / method / f"{name.replace(':', '_')}.npz") as d:
                maps[method] = {k: d[k] for k in d.files}
        if name not in segs:
            segs[name] = segment(maps["dcsm-tuned"], photo.image).masks
        mask = segs[name][cls]
        panels = [
            (_with_outline(photo.image, truth), f"{name.split(':')[1]}: {cls}"),
            (overlay(photo.image, maps["dcsm-tuned"][cls], 0.6, "viridis"),
             "energy {energy:.2f}, {hit}".format(
                 energy=scores["dcsm-tuned"][(name, cls)]["energy"],
                 hit="hit" if scores["dcsm-tuned"][(name, cls)]["hit"] else "miss")),
            (overlay(photo.image, maps["gradcam"][cls], 0.6, "viridis"),
             "energy {energy:.2f}, {hit}".format(
                 energy=scores["gradcam"][(name, cls)]["energy"],
                 hit="hit" if scores["gradcam"][(name, cls)]["hit"] else "miss")),
            (_with_outline(np.where(mask[..., None], photo.image, photo.image // 4), truth),
             f"IoU {iou(mask, truth, photo.void):.2f}"),
        ]
        for col, (picture, title) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=8)
            if row == 0:
                ax.set_xlabel(COLUMNS[col], fontsize=8)
                ax.xaxis.set_label_position("top")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
