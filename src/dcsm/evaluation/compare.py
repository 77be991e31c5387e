"""Weakly supervised segmentation of a VOC-layout split, several methods side by side.

For every image of the split: the candidate classes come from the model (its sigmoid scores
at scale 1 over the threshold, as ``dcsm explain`` picks them) or, with ``oracle=True``, from the
ground-truth mask's classes; every method then computes its maps for those same classes and
segments them; the predicted label image (0 background, v the data set's v-th class) is scored
against the mask (:mod:`dcsm.evaluation.metrics`: VOC's 255 is ignored).

Methods (``METHODS``; the first five are the default, the paper's comparison and ablation):

==================  ===========================================================================
``simonyan_grabcut``  Simonyan et al. 2014: input-gradient maps, one GrabCut per class
``dcsm_no_subtract``  dcsm without the class contrast (Eq. 2), dense CRF
``dcsm_single_scale`` dcsm at scale 1 only (no Eq. 3 over scales), dense CRF
``dcsm_single_layer`` dcsm from one layer (default: the middle one of the method's layers), CRF
``dcsm_crf``          the full method: every layer, every scale, the contrast; dense CRF
``simonyan_crf``      (extra) Simonyan et al.'s maps segmented by the same dense CRF
``dcsm_layers_only``  (extra) intermediate layers only: one scale, no contrast; dense CRF
``dcsm_grabcut``      (extra) the full method's maps segmented by GrabCut
==================  ===========================================================================

``dcsm_crf``'s label images are the run's predictions (``pred/``); each method's are also in
``methods/<method>/``. Besides the split's mIoU, each method is scored on the images whose mask
holds one class and on those with several (``miou_by_classes_in_image``), since the class
contrast only acts where several candidates are; ``images.jsonl`` has one line per image (its
labels, candidates and each method's mIoU on that image alone).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dcsm.adapters.base import ModelAdapter
from dcsm.baselines import InputGradient
from dcsm.candidates import select
from dcsm.datasets.voc import VOCDataset
from dcsm.errors import DcsmError
from dcsm.evaluation.metrics import confusion_matrix, iou_per_label, mean_iou, pixel_accuracy
from dcsm.explainer import DistinctSaliency
from dcsm.images import model_input, reference_scale


@dataclass(frozen=True)
class Method:
    """One way from an image to a segmentation: which maps, which segmenter."""

    name: str
    title: str
    maps: str  # "simonyan" or a dcsm variant: "full", "no_subtract", "single_scale", ...
    segmenter: str  # "crf" or "grabcut"


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("simonyan_grabcut", "Simonyan et al. + GrabCut", "simonyan", "grabcut"),
    Method("dcsm_no_subtract", "dcsm without subtraction + CRF", "no_subtract", "crf"),
    Method("dcsm_single_scale", "dcsm single scale + CRF", "single_scale", "crf"),
    Method("dcsm_single_layer", "dcsm single layer + CRF", "single_layer", "crf"),
    Method("dcsm_crf", "dcsm (full) + CRF", "full", "crf"),
    Method("simonyan_crf", "Simonyan et al. + CRF", "simonyan", "crf"),
    Method("dcsm_layers_only", "dcsm layers only (1 scale, no subtraction) + CRF",
           "layers_only", "crf"),
    Method("dcsm_grabcut", "dcsm (full) + GrabCut", "full", "grabcut"),
)}
DEFAULT_METHODS: tuple[str, ...] = ("simonyan_grabcut", "dcsm_no_subtract", "dcsm_single_scale",
                                    "dcsm_single_layer", "dcsm_crf")
PRIMARY = "dcsm_crf"
#: Images grouped by the number of classes their mask holds (0 or 1, and 2 or more).
GROUPS = ("one", "several")
BASELINE = "simonyan_grabcut"


def map_explainers(full: DistinctSaliency, kinds: set[str], single_layer: str | None
                   ) -> dict[str, DistinctSaliency | InputGradient]:
    """The explainer of each kind of maps, all derived from the full method's settings."""
    a = full.adapter
    ref = full.scales[reference_scale(full.scales)]
    common = {"preset": full.preset, "backprop": full.rule, "alpha": full.alpha,
              "upsample": full.upsample, "batch": full.batch, "max_side": full.max_side,
              "precision": full.precision}
    layer = single_layer or full.layers[len(full.layers) // 2]
    made: dict[str, DistinctSaliency | InputGradient] = {}
    for kind in kinds:
        if kind == "simonyan":
            made[kind] = InputGradient(a, "plain", max_side=full.max_side,
                                       precision=full.precision)
        elif kind == "full":
            made[kind] = full
        elif kind == "no_subtract":
            made[kind] = DistinctSaliency(a, scales=full.scales, layers=full.layers,
                                          subtract=False, **common)  # type: ignore[arg-type]
        elif kind == "single_scale":
            made[kind] = DistinctSaliency(a, scales=[ref], layers=full.layers,
                                          subtract=full.subtract, **common)  # type: ignore[arg-type]
        elif kind == "single_layer":
            made[kind] = DistinctSaliency(a, scales=full.scales, layers=[layer],
                                          subtract=full.subtract, **common)  # type: ignore[arg-type]
        elif kind == "layers_only":
            made[kind] = DistinctSaliency(a, scales=[ref], layers=full.layers, subtract=False,
                                          **common)  # type: ignore[arg-type]
        else:  # pragma: no cover - METHODS only names the kinds above
            raise DcsmError(f"unknown kind of maps '{kind}'")
    return made


def class_mapping(adapter: ModelAdapter, data: VOCDataset, oracle: bool) -> dict[int, int]:
    """``{adapter class index: data set label}`` by class name (case-insensitive); DcsmError
    when a class the run may need is missing on the other side."""
    lowered = [n.lower() for n in data.class_names]
    mapping = {i: lowered.index(n.lower()) + 1 for i, n in enumerate(adapter.class_names)
               if n.lower() in lowered}
    if oracle:
        known = {n.lower() for n in adapter.class_names}
        missing = [n for n in data.class_names if n.lower() not in known]
        if missing:
            raise DcsmError(f"model {adapter.name} has no class '{missing[0]}' of the data set "
                            f"(its classes: {', '.join(adapter.class_names[:8])}...)")
    else:
        missing = [n for i, n in enumerate(adapter.class_names) if i not in mapping]
        if missing:
            raise DcsmError(f"model {adapter.name}'s class '{missing[0]}' is not a class of the "
                            f"data set ({', '.join(data.class_names[:8])}...); evaluate a model "
                            "trained on it")
    return mapping


def predicted_scores(adapter: ModelAdapter, image: np.ndarray) -> torch.Tensor:
    """(1, C) class probabilities of the image as given."""
    with torch.no_grad():
        x = model_input(adapter, image, 1.0)
        adapter.model.eval()
        return adapter.probabilities(adapter.pool(adapter.model(x))).float().cpu()


def _fmt(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.3f}"


def _table(results: dict[str, dict[str, Any]], label_names: list[str],
           group_sizes: dict[str, int]) -> str:
    base = results.get(BASELINE, {}).get("miou")
    one, several = (f"mIoU, {g} class{'' if g == 'one' else 'es'} ({group_sizes[g]} images)"
                    for g in GROUPS)
    lines = [f"| method | maps | segmenter | mIoU | vs Simonyan + GrabCut | {one} | {several} "
             "| background IoU | s / image |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        m = METHODS[name]
        delta = "" if base is None or name == BASELINE else f"{r['miou'] - base:+.3f}"
        groups = r["miou_by_classes_in_image"]
        lines.append(f"| {m.title} | {m.maps} | {m.segmenter} | {_fmt(r['miou'])} | {delta} | "
                     f"{_fmt(groups['one'])} | {_fmt(groups['several'])} | "
                     f"{_fmt(r['per_class_iou']['background'])} | "
                     f"{r['seconds_per_image']:.3f} |")
    lines += ["", "Per-class IoU:", "",
              "| method | " + " | ".join(label_names) + " |",
              "|---|" + "---|" * len(label_names)]
    for name, r in results.items():
        cells = [_fmt(r["per_class_iou"][n]) for n in label_names]
        lines.append(f"| {METHODS[name].title} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def evaluate(
    data: VOCDataset,
    split: str,
    full: DistinctSaliency,
    out: str | Path,
    methods: Sequence[str] = DEFAULT_METHODS,
    oracle: bool = False,
    threshold: float | None = None,
    top_k: int | None = None,
    crf: dict[str, object] | None = None,
    grabcut: dict[str, object] | None = None,
    single_layer: str | None = None,
    limit: int | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``split`` and write ``out`` (replaced atomically): ``metrics.json``,
    ``table.md``, ``images.jsonl``, ``pred/<id>.png`` and ``methods/<method>/<id>.png``.

    ``full`` is the full method's explainer; the ablations change one of its settings. Returns
    the metrics written to ``metrics.json``.
    """
    from dcsm.io import atomic_dir, save_json
    from dcsm.segmentation import segment
    from dcsm.segmentation.palette import save_labels

    log = log or (lambda text: print(text, flush=True))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise DcsmError(f"unknown method '{unknown[0] if unknown else ''}'; known: "
                        f"{', '.join(METHODS)}")
    methods = list(dict.fromkeys(methods))
    adapter = full.adapter
    if single_layer is not None:
        adapter.resolve_layers([single_layer])
    mapping = class_mapping(adapter, data, oracle)
    to_adapter = {label: i for i, label in mapping.items()}
    items = data.segmentation_items(split)
    if limit is not None:
        items = items[:limit]
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir())
                                              and not (out / "metrics.json").exists())):
        raise DcsmError(f"'{out}' exists and is not an earlier evaluation; choose an empty or "
                        "new --out")
    explainers = map_explainers(full, {METHODS[m].maps for m in methods}, single_layer)
    params = {"crf": dict(crf or {}), "grabcut": dict(grabcut or {})}
    labels_n = data.num_classes + 1
    confusion = {m: np.zeros((labels_n, labels_n), np.int64) for m in methods}
    # the same, separately for images whose mask holds one class and several classes
    grouped = {g: {m: np.zeros((labels_n, labels_n), np.int64) for m in methods}
               for g in GROUPS}
    group_sizes = dict.fromkeys(GROUPS, 0)
    seconds = dict.fromkeys(methods, 0.0)
    cand_stats = {"true": 0, "predicted": 0, "correct": 0, "exact": 0}
    primary = PRIMARY if PRIMARY in methods else methods[-1]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(items), desc=f"evaluate {split}", unit="img", dynamic_ncols=True)
    with atomic_dir(out) as tmp:
        (tmp / "pred").mkdir()
        for m in methods:
            (tmp / "methods" / m).mkdir(parents=True)
        with (tmp / "images.jsonl").open("w", encoding="utf-8") as per_image:
            for item in items:
                image = data.load_image(item.id)
                truth = data.load_mask(item.id)
                if truth.shape != image.shape[:2]:
                    raise DcsmError(f"mask of '{item.id}' is {truth.shape[1]}x{truth.shape[0]} "
                                    f"but its image is {image.shape[1]}x{image.shape[0]}")
                probs = predicted_scores(adapter, image)
                if oracle:
                    classes = [to_adapter[label + 1] for label in item.labels]
                else:
                    sel = select(adapter, probs, 0, None, top_k, threshold)
                    classes = [c.index for c in sel.selected]
                true_set = {label + 1 for label in item.labels}
                pred_set = {mapping[c] for c in classes}
                cand_stats["true"] += len(true_set)
                cand_stats["predicted"] += len(pred_set)
                cand_stats["correct"] += len(true_set & pred_set)
                cand_stats["exact"] += int(true_set == pred_set)
                lut = np.zeros(256, np.uint8)
                for v, c in enumerate(classes, 1):
                    lut[v] = mapping[c]
                maps_cache: dict[str, tuple[Any, float]] = {}
                group = GROUPS[0] if len(item.labels) <= 1 else GROUPS[1]
                group_sizes[group] += 1
                record: dict[str, Any] = {
                    "id": item.id, "labels": [data.class_names[v] for v in item.labels],
                    "candidates": [{"name": adapter.class_names[c],
                                    "score": round(float(probs[0, c]), 4)} for c in classes],
                    "iou": {}}
                for m in methods:
                    method = METHODS[m]
                    if not classes:
                        pred = np.zeros(truth.shape, np.uint8)
                    else:
                        if method.maps not in maps_cache:
                            started = time.perf_counter()
                            result = explainers[method.maps].explain(image, classes=classes)
                            maps_cache[method.maps] = (result, time.perf_counter() - started)
                        result, map_seconds = maps_cache[method.maps]
                        started = time.perf_counter()
                        seg = segment(result, method=method.segmenter, max_side=full.max_side,
                                      **params[method.segmenter])  # type: ignore[arg-type]
                        seconds[m] += map_seconds + time.perf_counter() - started
                        pred = lut[seg.labels]
                    cm = confusion_matrix(truth, pred, labels_n)
                    confusion[m] += cm
                    grouped[group][m] += cm
                    iou = iou_per_label(cm)
                    record["iou"][m] = round(float(np.nanmean(iou)), 4)
                    save_labels(tmp / "methods" / m / f"{item.id}.png", pred)
                    if m == primary:
                        save_labels(tmp / "pred" / f"{item.id}.png", pred)
                per_image.write(json.dumps(record) + "\n")
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix_str(" ".join(
                        f"{m.split('_', 1)[-1][:8]} {mean_iou(confusion[m]):.3f}"
                        for m in methods), refresh=False)
        if bar is not None:
            bar.close()
        n = max(len(items), 1)
        results: dict[str, dict[str, Any]] = {}
        for m in methods:
            iou = iou_per_label(confusion[m])
            results[m] = {
                "title": METHODS[m].title, "maps": METHODS[m].maps,
                "segmenter": METHODS[m].segmenter,
                "miou": mean_iou(confusion[m]),
                "per_class_iou": {name: (None if np.isnan(v) else float(v))
                                  for name, v in zip(data.label_names, iou, strict=True)},
                "pixel_accuracy": pixel_accuracy(confusion[m]),
                "miou_by_classes_in_image": {
                    g: (mean_iou(grouped[g][m]) if group_sizes[g] else None) for g in GROUPS},
                "seconds_per_image": seconds[m] / n,
                "confusion": confusion[m].tolist(),
            }
        layers = {k: e.parameters().get("layers") for k, e in explainers.items()}
        metrics = {
            "miou": results[primary]["miou"],
            "per_class_iou": results[primary]["per_class_iou"],
            "method": primary,
            "methods": results,
            "candidates": {
                "source": "oracle (ground-truth image labels)" if oracle else "model",
                "precision": cand_stats["correct"] / max(cand_stats["predicted"], 1),
                "recall": cand_stats["correct"] / max(cand_stats["true"], 1),
                "exact": cand_stats["exact"] / n},
            "settings": {
                "data": str(data.root), "split": split, "images": len(items),
                "images_by_classes_in_image": group_sizes,
                "labels": data.label_names, "model": adapter.name,
                "oracle_labels": oracle, "threshold": threshold, "top_k": top_k,
                "dcsm": full.parameters(), "maps_layers": layers,
                "crf": params["crf"], "grabcut": params["grabcut"], "methods": methods,
                "void_label": 255,
            },
        }
        save_json(tmp / "metrics.json", metrics)
        table = _table(results, data.label_names, group_sizes)
        (tmp / "table.md").write_text(table, encoding="utf-8")
    log(table)
    return metrics
