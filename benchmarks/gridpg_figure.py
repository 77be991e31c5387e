"""One grid of the grid pointing game and several methods' maps of each of its classes.

Rows: the classes of the cells (row-major); columns: the grid, then each method's map of that
class over the whole grid, titled with its score (share of the map's positive mass in the
class's own cell). Maps are shown divided by their maximum. Writes the figure given by --out:

    python benchmarks/gridpg_figure.py --model efficientnet_lite0 --grid-index 0 \\
        --out docs/images/gridpg_example_efficientnet_lite0.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import dcsm
from dcsm.bench.gridpg import sample_grids, score_maps
from dcsm.bench.methods import get_methods
from dcsm.bench.photos import find_views, package_photos
from dcsm.io import save_figure
from dcsm.io.viz import overlay

METHODS = ("dcsm-tuned", "dcsm-paper", "gradcam", "captum-saliency", "pgc-finercam",
           "torchcam-layercam")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--grid-index", type=int, default=0, help="which seed-0 2x2 grid")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    adapter = dcsm.load_model(args.model)
    grid = sample_grids(find_views(adapter, package_photos()), 2, args.grid_index + 1, 0)[-1]
    specs = get_methods(list(METHODS))
    maps = {s.key: s.build(adapter, "oracle")(grid.image, grid.classes) for s in specs}
    scores = {k: score_maps(m, grid.classes, 2, grid.image.shape[:2]) for k, m in maps.items()}
    rows, cols = len(grid.classes), len(specs) + 1
    fig = Figure(figsize=(2.1 * cols, 2.3 * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, view in enumerate(grid.views):
        axes[r, 0].imshow(grid.image)
        axes[r, 0].set_title(f"{view.class_name} ({view.confidence:.2f})", fontsize=8)
        for c, spec in enumerate(specs, start=1):
            m = np.clip(maps[spec.key][view.class_index], 0, None)
            m = m / m.max() if m.max() > 0 else m
            axes[r, c].imshow(overlay(grid.image, m.astype(np.float32)))
            title = f"{spec.label}\n{scores[spec.key][r]:.2f}" if r == 0 else \
                f"{scores[spec.key][r]:.2f}"
            axes[r, c].set_title(title, fontsize=7)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{args.model}: each row the map of one cell's class over the whole grid "
                 "(score = share in its own cell)", fontsize=9)
    fig.tight_layout()
    save_figure(args.out, fig, dpi=90)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
