"""The levers behind the default preset, measured on a development split of COCO photos.

Each variant is the ``tuned`` preset with some settings changed (``before``: the preset as it was
before the mirror image, the affinity walk, the score-map gate and the sharpening; ``default``:
the preset now); the
peers are their ``dcsm bench`` wrappers. Every nameable class of each photo is given (the
benchmark's oracle candidates), and each (photo, class) pair of at least 1 % of the photo is
scored as ``dcsm bench masks`` scores it (:func:`dcsm.bench.masks.score_photo`): relevance mass,
pointing game, relevance rank accuracy, AUC, the mass on the other annotated objects and, with
``--crf``, the dense CRF's IoU with every default.

Choose on a development split only (the project's: COCO_Tiny's ``train2017``), report on another.

Usage::

    PYTHONPATH=src python benchmarks/coco_levers.py --coco DIR [--split train2017] [--limit 30]
        [--model efficientnet_lite0] [--variants a,b] [--crf]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch

import dcsm
from dcsm.bench.masks import score_photo
from dcsm.bench.methods import MapFunction, get_methods
from dcsm.datasets.coco import load_coco
from dcsm.datasets.realphotos import name_classes
from dcsm.pipeline.affinity import Propagation

BEFORE: dict[str, object] = {"flip": False, "propagate": False, "gamma": 1.0, "gate": 0.0}
#: name -> the tuned preset's settings changed (or a ``dcsm bench`` method key, in brackets).
VARIANTS: dict[str, dict[str, object] | str] = {
    "before": BEFORE,
    "before: grad x act": {**BEFORE, "reduce": "grad_act"},
    "before: max_side 224": {**BEFORE, "max_side": 224},
    "before: max_side 320": {**BEFORE, "max_side": 320},
    "before: max_side 640": {**BEFORE, "max_side": 640},
    "before + mirror": {**BEFORE, "flip": True},
    "before + walk": {**BEFORE, "propagate": True},
    "before + walk: deepest layer": {**BEFORE, "propagate": Propagation(layer="block15")},
    "before + walk: 16 steps radius 3": {**BEFORE, "propagate": Propagation(16, 8.0, 3)},
    "before + mirror + walk": {**BEFORE, "flip": True, "propagate": True},
    "before + mirror + walk + gamma 2": {**BEFORE, "flip": True, "propagate": True,
                                         "gamma": 2.0},
    "before + mirror + walk + gamma 3": {**BEFORE, "flip": True, "propagate": True,
                                         "gamma": 3.0},
    "default (mirror + walk + gate + gamma 2)": {},
    "default: gamma 1": {"gamma": 1.0},
    "default: gamma 1.5": {"gamma": 1.5},
    "default: gate 2 gamma 1": {"gate": 2.0, "gamma": 1.0},
    "default: gate 0.5": {"gate": 0.5},
    "paper preset": {"preset": "paper"},
    "Grad-CAM (dcsm)": "gradcam",
    "pytorch-grad-cam GradCAM": "pgc-gradcam",
}
METRICS = ("energy", "hit", "rank", "auc", "other", "iou")


def build(adapter: dcsm.pipeline.adapters.base.ModelAdapter, spec: dict[str, object] | str
          ) -> tuple[MapFunction, float]:
    """The map function of one variant, and the power its maps were raised to (undone before
    the CRF, as :func:`dcsm.segment` does for a result)."""
    if isinstance(spec, str):
        method = next(m for m in get_methods([spec]))
        return method.build(adapter, "oracle"), method.map_gamma
    settings = dict(spec)
    preset = str(settings.pop("preset", "tuned"))
    explainer = dcsm.DistinctSaliency(adapter, preset=preset, **settings)  # type: ignore[arg-type]

    def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
        result = explainer.explain(image, classes=list(classes))
        by_index = {c.index: result.maps[c.name] for c in result.candidates}
        return {c: by_index[c] for c in classes if c in by_index}

    return run, explainer.gamma


def evaluate(folder: str, split: str, limit: int, model: str, names: Sequence[str], crf: bool,
             progress: Callable[[str], None] = lambda line: None) -> dict[str, dict[str, float]]:
    """Mean scores per variant over the pairs of at least 1 % of their photo."""
    from dcsm.segmentation import segment

    adapter = dcsm.load_model(model, labels="coco")
    functions = {n: build(adapter, VARIANTS[n]) for n in names}
    rows: dict[str, list[dict[str, object]]] = {n: [] for n in names}
    seconds = dict.fromkeys(names, 0.0)
    photos = 0
    for photo in load_coco(folder, split, limit=limit):
        named = name_classes(adapter, photo)
        if not named.named:
            continue
        photos += 1
        for n in names:
            start = time.perf_counter()
            by_index = functions[n][0](photo.image, named.indices)
            seconds[n] += time.perf_counter() - start
            maps = {c: np.asarray(by_index[i], np.float32)
                    for c, i in zip(named.named, named.indices, strict=True) if i in by_index}
            masks = segment(dict(maps), photo.image, segmenter="crf",
                            map_gamma=functions[n][1]).masks if crf and maps \
                else ({} if crf else None)
            rows[n] += [r for r in score_photo(maps, photo, masks, classes=named.named)
                        if not r["small"]]
        progress(f"{photo.name}: {len(named.named)} classes")
    out = {}
    for n in names:
        means = {}
        for k in METRICS:
            values = [float(r[k]) for r in rows[n] if r.get(k) is not None]  # type: ignore[arg-type]
            if values:
                means[k] = float(np.mean(values))
        means["pairs"] = len(rows[n])
        means["seconds"] = seconds[n] / max(photos, 1)
        out[n] = means
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--coco", required=True, help="COCO folder (annotations/, <split>/)")
    parser.add_argument("--split", default="train2017")
    parser.add_argument("--limit", type=int, default=30)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma-separated; default all: " + ", ".join(VARIANTS))
    parser.add_argument("--crf", action="store_true", help="also the CRF's IoU")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        print(f"coco_levers: unknown variant '{unknown[0]}'", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    table = evaluate(args.coco, args.split, args.limit, args.model, names, args.crf,
                     progress=lambda line: print(line, file=sys.stderr, flush=True))
    shown = [k for k in METRICS if any(k in v for v in table.values())]
    print(f"{args.model}, {args.split}, first {args.limit} photos; pairs of at least 1 %")
    print("| variant | " + " | ".join(shown) + " | pairs | s/photo |")
    print("|---|" + "---|" * (len(shown) + 2))
    for n, v in table.items():
        cells = [f"{v[k]:.3f}" if k in v else "-" for k in shown]
        print(f"| {n} | " + " | ".join(cells) + f" | {v['pairs']} | {v['seconds']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
