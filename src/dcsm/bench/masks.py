"""The real-photo benchmark: maps and masks against real per-object masks.

For each photo of :func:`dcsm.datasets.realphotos.load_real_photos` and each method, the method
is given **every** class of the photo that the model can name (VOC's or COCO's classes as
groups of ImageNet classes, :mod:`dcsm.adapters.groups`; ``person`` has no ImageNet group) and
returns one map per class. Each (photo, class) pair is scored by

* the **energy pointing game** (Wang et al. 2020, Score-CAM): the share of the map's positive
  mass inside the class's true mask, void pixels left out (a uniform map scores the mask's share
  of the photo);
* the **pointing game** (Zhang et al. 2016): whether the map's maximum lies within 15 pixels of
  the mask;
* the **segmentation IoU**: the maps of all the photo's classes are segmented together (the dense
  CRF, :mod:`dcsm.segmentation.crf`, or GrabCut for Simonyan et al.'s baseline, as in the paper)
  and the class's mask compared with the true one, void pixels left out.

The maps are kept (``maps/<method>/<photo>.npz``) so that the segmentation rules can be studied
without recomputing them (``benchmarks/unaries.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dcsm.adapters.base import ModelAdapter
from dcsm.bench.methods import MethodSpec
from dcsm.datasets.realphotos import MaskedPhoto
from dcsm.errors import DcsmError
from dcsm.io import write_atomic
from dcsm.metrics import energy_pointing_game, pointing_game_hit, summarize

__all__ = ["DEFAULT_MASK_METHODS", "PhotoClasses", "iou", "masks_benchmark", "name_classes",
           "score_pair", "segmenter_for"]

#: The methods ``dcsm bench masks`` runs by default (those whose library is installed).
DEFAULT_MASK_METHODS: tuple[str, ...] = (
    "dcsm-tuned", "dcsm-paper", "dcsm-released", "dcsm-tuned-no-subtract", "gradcam",
    "simonyan", "pgc-gradcam", "pgc-finercam",
)
#: Pointing game tolerance in pixels (Zhang et al. 2016).
POINTING_TOLERANCE = 15.0


def segmenter_for(method: str) -> str:
    """The segmenter a method's maps go to: GrabCut for Simonyan et al.'s gradients (their
    paper's choice, the paper's baseline), the dense CRF for every other map."""
    return "grabcut" if method in ("simonyan", "captum-saliency") else "crf"


def iou(prediction: np.ndarray, truth: np.ndarray, void: np.ndarray | None = None) -> float:
    """Intersection over union of two boolean masks, ``void`` pixels left out (1.0 when both
    are empty)."""
    keep = np.ones(truth.shape, bool) if void is None else ~void
    p, t = prediction & keep, truth & keep
    union = int((p | t).sum())
    return 1.0 if union == 0 else float((p & t).sum() / union)


def score_pair(saliency: np.ndarray, truth: np.ndarray, void: np.ndarray,
               predicted: np.ndarray | None) -> dict[str, float | bool | None]:
    """Energy pointing game, pointing game hit and (if a mask is given) IoU of one class."""
    kept = np.where(void, 0.0, np.asarray(saliency, dtype=np.float64))
    return {
        "energy": energy_pointing_game(kept, truth),
        "hit": pointing_game_hit(kept, truth, POINTING_TOLERANCE),
        "iou": None if predicted is None else iou(predicted, truth, void),
    }


@dataclass
class PhotoClasses:
    """A photo's classes as the model names them: ``indices`` into the (grouped) adapter's
    classes for ``named`` (the photo's class names), and the classes it cannot name."""

    named: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)


def name_classes(adapter: ModelAdapter, photo: MaskedPhoto) -> PhotoClasses:
    """Which of the photo's classes ``adapter`` (grouped by the photo's label set) can name."""
    out = PhotoClasses()
    for name in photo.classes:
        if name in adapter.class_names:
            out.named.append(name)
            out.indices.append(adapter.class_names.index(name))
        else:
            out.unnamed.append(name)
    return out


def _segment(method: str, maps: Mapping[str, np.ndarray], image: np.ndarray,
             crf: Mapping[str, Any], grabcut: Mapping[str, Any]) -> dict[str, np.ndarray]:
    from dcsm.segmentation import segment

    kind = segmenter_for(method)
    seg = segment(dict(maps), image, method=kind, **(crf if kind == "crf" else grabcut))
    return seg.masks


def masks_benchmark(
    adapters: Callable[[str], ModelAdapter],
    photos: Sequence[MaskedPhoto],
    methods: Sequence[MethodSpec],
    crf: Mapping[str, Any] | None = None,
    grabcut: Mapping[str, Any] | None = None,
    maps_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every method on every photo and score every nameable (photo, class) pair.

    Args:
        adapters: the model for a label set (``"voc"``, ``"coco"``), grouped.
        photos: the photos with their masks.
        methods: the methods (:func:`dcsm.bench.methods.get_methods`), run with every class of
            the photo given (the ``oracle`` candidates of the grid pointing game).
        crf, grabcut: segmenter settings (their defaults if None).
        maps_dir: where to keep each method's maps, ``<method>/<photo>.npz``; None: not kept.
        progress: called with one line per photo and method.

    Returns:
        The report: photos, pairs, unnameable classes and, per method, its scores per pair and
        their summaries (``energy``, ``pointing`` and ``iou`` means, with quartiles).
    """
    if not photos:
        raise DcsmError("no photos to run")
    crf, grabcut = dict(crf or {}), dict(grabcut or {})
    models: dict[str, ModelAdapter] = {}
    pairs: list[dict[str, Any]] = []
    unnamed: list[dict[str, str]] = []
    named: dict[str, PhotoClasses] = {}
    for photo in photos:
        if photo.label_set not in models:
            models[photo.label_set] = adapters(photo.label_set)
        classes = name_classes(models[photo.label_set], photo)
        named[photo.name] = classes
        unnamed += [{"photo": photo.name, "class": c} for c in classes.unnamed]
        pairs += [{"photo": photo.name, "class": c, "pixels": int(photo.mask(c).sum())}
                  for c in classes.named]
    results: dict[str, Any] = {}
    functions = {(spec.key, s): spec.build(models[s], "oracle")
                 for spec in methods for s in models}
    for spec in methods:
        results[spec.key] = {"label": spec.label, "source": spec.source,
                             "segmenter": segmenter_for(spec.key), "scores": [], "seconds": []}
    for photo in photos:
        classes = named[photo.name]
        if not classes.named:
            continue
        for spec in methods:  # the methods take turns on each photo
            start = time.perf_counter()
            maps_by_index = functions[(spec.key, photo.label_set)](photo.image, classes.indices)
            seconds = time.perf_counter() - start
            maps = {name: np.asarray(maps_by_index[i], dtype=np.float32)
                    for name, i in zip(classes.named, classes.indices, strict=True)
                    if i in maps_by_index}
            if maps_dir is not None:
                folder = maps_dir / spec.key
                folder.mkdir(parents=True, exist_ok=True)
                write_atomic(folder / f"{photo.name.replace(':', '_')}.npz",
                             lambda tmp, maps=maps: np.savez_compressed(tmp, **maps))
            masks = _segment(spec.key, maps, photo.image, crf, grabcut) if maps else {}
            entry = results[spec.key]
            entry["seconds"].append(seconds)
            for name in classes.named:
                if name not in maps:
                    entry["scores"].append({"photo": photo.name, "class": name, "energy": 0.0,
                                            "hit": False, "iou": 0.0})
                    continue
                score = score_pair(maps[name], photo.mask(name), photo.void, masks.get(name))
                entry["scores"].append({"photo": photo.name, "class": name, **score})
            if progress is not None:
                mean_iou = np.mean([s["iou"] for s in entry["scores"][-len(classes.named):]])
                progress(f"{photo.name} {spec.key}: {seconds:.1f} s, IoU {mean_iou:.3f}")
    for entry in results.values():
        scores = entry["scores"]
        entry["summary"] = {
            "energy": summarize([s["energy"] for s in scores]),
            "pointing": float(np.mean([s["hit"] for s in scores])) if scores else float("nan"),
            "iou": summarize([s["iou"] for s in scores]),
        }
        seconds = entry.pop("seconds")
        entry["seconds_per_photo"] = float(np.median(seconds)) if seconds else float("nan")
    return {
        "benchmark": "masks",
        "photos": [p.name for p in photos],
        "pairs": pairs,
        "unnameable": unnamed,
        "segmentation": {"crf": crf, "grabcut": grabcut},
        "methods": results,
    }


def markdown_table(report: Mapping[str, Any]) -> str:
    """The report as a Markdown table: one row per method."""
    lines = ["| method | energy pointing game | pointing game | segmentation IoU | segmenter |",
             "|---|---|---|---|---|"]
    for entry in report["methods"].values():
        s = entry["summary"]
        lines.append(f"| {entry['label']} | {s['energy']['mean']:.3f} | {s['pointing']:.3f} | "
                     f"{s['iou']['mean']:.3f} | {entry['segmenter']} |")
    lines.append(f"\n{len(report['pairs'])} (photo, class) pairs on {len(report['photos'])} "
                 "photos; every class of the photo given.")
    return "\n".join(lines) + "\n"


def per_pair_table(report: Mapping[str, Any], metric: str = "iou") -> str:
    """One row per (photo, class), one column per method, for ``metric``."""
    keys = list(report["methods"])
    lines = ["| photo | class | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for i, pair in enumerate(report["pairs"]):
        cells = []
        for k in keys:
            value = report["methods"][k]["scores"][i][metric]
            cells.append(f"{float(value):.2f}")
        lines.append(f"| {pair['photo']} | {pair['class']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
