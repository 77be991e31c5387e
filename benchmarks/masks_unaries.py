"""How class maps should become the dense CRF's unaries on real photos: the background rules
compared, with the CRF and without, chosen by leave-one-photo-out.

Reads the maps that ``dcsm bench masks --out DIR`` kept (``DIR/maps/<method>/<photo>.npz``) and
the same photos' true masks, segments every photo with every rule below, and scores the IoU of
each (photo, class). The rules:

* ``power``: background :math:`(1 - \\max_c M_c)^\\beta`, :math:`\\beta` in 1..32 (dcsm's earlier
  rule is :math:`\\beta = 1` without normalisation; AffinityNet's 4-32 on normalised CAMs);
* ``constant``: background :math:`\\tau` (IRN's CAM threshold), :math:`\\tau` in 0.05..0.5;
* ``otsu``: background Otsu's threshold of the image's :math:`\\max_c M_c`;

each with and without dividing every class map by its own maximum, and either the unaries'
argmax or 10 mean-field steps with the unaries' sharpness 1, 4 or 10.

**The choice is never made on the photo it is scored on**: for each photo, the rule with the
best mean IoU on the *other* photos (of the ``--choose`` method's maps) segments it; the
held-out means are what the table reports. The rule chosen on all the photos is printed too:
that is the default dcsm ships. The per-pair oracle (the best threshold of each map, chosen on
its own mask) bounds what any threshold of these maps could reach.

With several folders (one per model) the photos' scores are pooled over the models: one rule
is chosen for all of them, each photo held out in every model at once.

    python benchmarks/masks_unaries.py DIR [DIR ...] [--source ARCHIVES] [--choose dcsm-tuned]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from dcsm.bench.masks import iou
from dcsm.datasets.realphotos import load_real_photos
from dcsm.segmentation import segment

POWERS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
THRESHOLDS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
SHARPNESS = (1.0, 4.0, 10.0)


def rules() -> list[dict[str, object]]:
    """Every rule compared, as keyword arguments of :func:`dcsm.segmentation.segment_crf`."""
    out: list[dict[str, object]] = []
    steps = ((0, 1.0), *((10, g) for g in SHARPNESS))  # the argmax does not depend on sharpness
    for normalize, (iterations, gamma) in itertools.product((False, True), steps):
        common = dict(normalize=normalize, iterations=iterations, sharpness=gamma)
        out += [dict(background="power", bg_power=b, **common) for b in POWERS]
        out += [dict(background="constant", bg_threshold=t, **common) for t in THRESHOLDS]
        out.append(dict(background="otsu", **common))
    return out


def label(rule: dict[str, object]) -> str:
    """A short name of a rule."""
    bg = {"power": f"power {rule.get('bg_power', 1):g}",
          "constant": f"constant {rule.get('bg_threshold', 0):g}",
          "otsu": "Otsu"}[str(rule["background"])]
    norm = "normalised" if rule["normalize"] else "as is"
    crf = f"CRF, sharpness {rule['sharpness']:g}" if rule["iterations"] else "argmax"
    return f"{bg}, {norm}, {crf}"


def oracle_iou(m: np.ndarray, truth: np.ndarray, void: np.ndarray) -> float:
    """The best IoU of ``m >= t max m`` over 45 thresholds t (chosen on the mask itself)."""
    peak = float(m.max())
    if peak <= 0:
        return 0.0
    return max(iou(m >= t * peak, truth, void) for t in np.linspace(0.02, 0.9, 45))


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; print the tables (and write JSON with --out)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+",
                        help="output folders of `dcsm bench masks` (one per model)")
    parser.add_argument("--source", type=Path, default=None,
                        help="folder with the photo archives (default: the cache)")
    parser.add_argument("--choose", default=None,
                        help="the method whose IoU chooses the rule (default: the first dcsm "
                             "method in the report)")
    parser.add_argument("--methods", default=None,
                        help="comma-separated methods whose maps to segment (default: every "
                             "method of the report segmented with the CRF)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    args = parser.parse_args(argv)
    reports = {f: json.loads((f / "masks.json").read_text()) for f in args.folders}
    first = next(iter(reports.values()))
    methods = [m for m in first["methods"] if first["methods"][m]["segmenter"] == "crf"]
    if args.methods:
        methods = [m for m in args.methods.split(",") if m in first["methods"]]
    choose = args.choose or next(m for m in methods if m.startswith("dcsm"))
    photos = [p for p in load_real_photos(args.source) if p.name in first["photos"]]
    all_rules = rules()
    # scores[method][rule index][photo] = IoUs of its classes, over every model
    scores: dict[str, list[dict[str, list[float]]]] = {m: [{} for _ in all_rules]
                                                       for m in methods}
    oracle: dict[str, list[float]] = {m: [] for m in methods}
    for folder in args.folders:
        for method in methods:
            for photo in photos:
                path = folder / "maps" / method / f"{photo.name.replace(':', '_')}.npz"
                with np.load(path) as data:
                    maps = {k: data[k] for k in data.files}
                if not maps:
                    continue
                oracle[method] += [oracle_iou(m, photo.mask(n), photo.void)
                                   for n, m in maps.items()]
                for i, rule in enumerate(all_rules):
                    seg = segment(maps, photo.image, segmenter="crf", **rule)
                    scores[method][i].setdefault(photo.name, []).extend(
                        iou(seg.masks[n], photo.mask(n), photo.void) for n in maps)
            print(f"{folder.name} {method}: done", file=sys.stderr, flush=True)

    def mean_over(method: str, i: int, names: list[str]) -> float:
        values = [v for n in names for v in scores[method][i].get(n, [])]
        return float(np.mean(values)) if values else float("nan")

    names = [p.name for p in photos]
    held_out: dict[str, list[float]] = {m: [] for m in methods}
    picks: list[str] = []
    for name in names:
        others = [n for n in names if n != name]
        best = max(range(len(all_rules)), key=lambda i: mean_over(choose, i, others))
        picks.append(f"{name}: {label(all_rules[best])}")
        for m in methods:
            held_out[m] += scores[m][best].get(name, [])
    chosen = max(range(len(all_rules)), key=lambda i: mean_over(choose, i, names))
    old = next(i for i, r in enumerate(all_rules) if r == dict(
        background="power", bg_power=1.0, normalize=False, iterations=10, sharpness=1.0))
    print(f"rule chosen on all photos by {choose}: {label(all_rules[chosen])}")
    print("rules chosen leaving each photo out:\n  " + "\n  ".join(picks))
    print("\n| maps | earlier rule (power 1, as is, CRF) | held-out choice | chosen rule, all "
          "photos | oracle threshold per map |")
    print("|---|---|---|---|---|")
    for m in methods:
        print(f"| {m} | {mean_over(m, old, names):.3f} | {np.mean(held_out[m]):.3f} | "
              f"{mean_over(m, chosen, names):.3f} | {np.mean(oracle[m]):.3f} |")
    print("\nmean IoU over all photos, every rule (rows) and maps (columns):")
    print("| rule | " + " | ".join(methods) + " |")
    print("|---|" + "---|" * len(methods))
    for i, rule in enumerate(all_rules):
        print(f"| {label(rule)} | " + " | ".join(f"{mean_over(m, i, names):.3f}"
                                              for m in methods) + " |")
    if args.out is not None:
        args.out.write_text(json.dumps({
            "choose": choose, "chosen": all_rules[chosen], "picks": picks,
            "held_out": {m: float(np.mean(v)) for m, v in held_out.items()},
            "oracle": {m: float(np.mean(v)) for m, v in oracle.items()},
            "rules": [{"rule": r, **{m: mean_over(m, i, names) for m in methods}}
                      for i, r in enumerate(all_rules)],
            "scores": scores}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
