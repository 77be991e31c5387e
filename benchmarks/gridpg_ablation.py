"""Which of dcsm's settings matter on the grid pointing game: the path from the ``paper`` preset
to the ``tuned`` one, and each of the tuned preset's choices undone in turn.

Every variant runs with the cells' own classes as candidates (oracle) on the same grids as
``dcsm bench gridpg`` (2x2, 224 px cells, tau 0.5, the packaged photos), for the grids of seed 0
(the ones reported in docs/RESULTS.md, on which the tuned preset was chosen) and of seed 1
(held out). Prints a markdown table of mean scores (and writes it as JSON with ``--out``):

    python benchmarks/gridpg_ablation.py [--grids 24] [--out ablation.json]

With ``--target`` it prints instead how the tuned preset does when only the cell's class is
named (the bench's ``target`` mode) and it picks the classes to contrast it with itself: by the
score map's ranking (the preset's rule) or the pooled scores', with ``min_contrast`` k, 2k and
4k (k = 4 cells), on the seed-0 grids.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

import dcsm
from dcsm.bench.gridpg import sample_grids, score_maps
from dcsm.bench.photos import find_views, package_photos

MODELS = ("efficientnet_lite0", "squeezenet1_1")
SEEDS = (0, 1)
PAPER_SCALES = (1.0, 1.2, 1.4, 1.6)

# Layer variants: (label, {model: layers}).
LAYERS: list[tuple[str, dict[str, list[str]]]] = [
    ("the model's default layers (blocks 7-15 / fire3-9)",
     {"efficientnet_lite0": [f"block{i}" for i in range(7, 16)],
      "squeezenet1_1": [f"fire{i}" for i in range(3, 10)]}),
    ("deepest stride only (blocks 11-15, stride 32 / fire6-9, stride 16)",
     {"efficientnet_lite0": [f"block{i}" for i in range(11, 16)],
      "squeezenet1_1": [f"fire{i}" for i in range(6, 10)]}),
    ("wider (blocks 3-10, strides 8-16 / fire2-6, strides 4-16)",
     {"efficientnet_lite0": [f"block{i}" for i in range(3, 11)],
      "squeezenet1_1": [f"fire{i}" for i in range(2, 7)]}),
    ("lower (blocks 1-4, strides 4-8 / fire4-5, stride 8)",
     {"efficientnet_lite0": [f"block{i}" for i in range(1, 5)],
      "squeezenet1_1": ["fire4", "fire5"]}),
]


def variants(model: str) -> list[tuple[str, dict[str, object]]]:
    """(label, settings) of every variant; settings override the tuned preset."""
    tuned = dcsm.PRESETS["tuned"]
    default = LAYERS[0][1][model]
    rows: list[tuple[str, dict[str, object]]] = [
        ("paper preset", {"preset": "paper"}),
        ("paper + strongest-other contrast",
         {"contrast": "strongest", "alpha": 3.0, "scales": PAPER_SCALES, "layers": default}),
        ("... + scale 1 only", {"contrast": "strongest", "alpha": 3.0, "layers": default}),
        ("... + the model's tuned layers", {"contrast": "strongest", "alpha": 3.0}),
        ("... + alpha 1 = **tuned preset**", {}),
        ("tuned, Eq. 2 sum contrast", {"contrast": "sum"}),
        ("tuned, alpha 3", {"alpha": 3.0}),
        ("tuned, alpha 10", {"alpha": 10.0}),
        ("tuned, alpha 0.1 (about M / max M)", {"alpha": 0.1}),
        ("tuned, plain backprop", {"backprop": "plain"}),
        ("tuned, scales 1-1.6 (paper)", {"scales": PAPER_SCALES}),
        ("tuned, scales 0.8-1.2 (released)", {"scales": (0.8, 1.0, 1.2)}),
    ]
    rows += [(f"tuned, layers: {name}", {"layers": layers[model]}) for name, layers in LAYERS]
    assert tuned.layers_for(model) is not None
    return rows


def explainer(adapter: dcsm.ModelAdapter, settings: dict[str, object]) -> dcsm.DistinctSaliency:
    """The tuned preset with ``settings`` applied (or a named preset)."""
    settings = dict(settings)
    if "preset" in settings:
        return dcsm.DistinctSaliency(adapter, preset=str(settings["preset"]))
    preset = dcsm.PRESETS["tuned"]
    fields = {k: settings.pop(k) for k in ("contrast", "alpha", "scales") if k in settings}
    preset = dataclasses.replace(preset, **fields)
    return dcsm.DistinctSaliency(adapter, preset=preset, **settings)  # type: ignore[arg-type]


def target_table(grids_count: int) -> int:
    """The tuned preset with one class named, per ranking and contrast-set size."""
    photos = package_photos()
    print("| contrast set of the named class (tuned preset, 2x2 grids, seed 0) | "
          + " | ".join(MODELS) + " |")
    print("|---|" + "---|" * len(MODELS))
    rows: dict[str, list[str]] = {}
    for model in MODELS:
        adapter = dcsm.load_model(model)
        grids = sample_grids(find_views(adapter, photos), 2, grids_count, 0)
        for rule, ranking in (("score_map", "score map"), ("reference_scale", "pooled scores")):
            preset = dataclasses.replace(dcsm.PRESETS["tuned"], candidate_rule=rule)
            for mult in (1, 2, 4):
                ex = dcsm.DistinctSaliency(adapter, preset=preset, min_contrast=4 * mult)
                scores = []
                for grid in grids:
                    maps = {}
                    for c in grid.classes:
                        result = ex.explain(grid.image, classes=[c])
                        maps[c] = result.maps[result.candidates[0].name]
                    scores += score_maps(maps, grid.classes, 2, grid.image.shape[:2])
                label = f"{4 * mult} classes in all, topped up by the {ranking}"
                rows.setdefault(label, []).append(f"{np.mean(scores):.3f}")
                print(f"{model}: {label}: {np.mean(scores):.3f}", file=sys.stderr, flush=True)
    for label, cells in rows.items():
        print(f"| {label} | " + " | ".join(cells) + " |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, default=24)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--target", action="store_true",
                        help="the one-class-named table instead of the ablation")
    args = parser.parse_args(argv)
    if args.target:
        return target_table(args.grids)
    photos = package_photos()
    table: dict[str, dict[str, float]] = {}
    for model in MODELS:
        adapter = dcsm.load_model(model)
        views = find_views(adapter, photos)
        rows = variants(model)
        reference = dcsm.make_explainer(adapter, "gradcam")
        for seed in SEEDS:
            grids = sample_grids(views, 2, args.grids, seed)
            column = f"{model}, seed {seed}"
            for label, settings in [("Grad-CAM (reference)", {}), *rows]:
                ex = reference if label.startswith("Grad-CAM") else explainer(adapter, settings)
                scores = []
                for grid in grids:
                    result = ex.explain(grid.image, classes=grid.classes)
                    maps = {c.index: result.maps[c.name] for c in result.candidates}
                    scores += score_maps(maps, grid.classes, 2, grid.image.shape[:2])
                table.setdefault(label, {})[column] = float(np.mean(scores))
                print(f"{column}: {label}: {np.mean(scores):.3f}", file=sys.stderr, flush=True)
    columns = [f"{m}, seed {s}" for m in MODELS for s in SEEDS]
    print("| variant (oracle candidates, 2x2 grids) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, values in table.items():
        cells = [f"{values[c]:.3f}" if c in values else "" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + " |")
    if args.out is not None:
        args.out.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
