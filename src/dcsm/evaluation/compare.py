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

**Resumable.** :func:`evaluate` records every image in ``.dcsm-evaluate/records.jsonl`` (a
:class:`dcsm.io.records.Journal`) once its label images are written: its candidates, each method's
confusion matrix (the non-zero cells) and time; ``.dcsm-evaluate/settings.json`` holds the
settings' fingerprint. A rerun skips what is done and the metrics are computed from the records,
so a run killed at image 1400 of 1449 goes on from there and ends with the same numbers as an
uninterrupted one. An image or a mask that cannot be read is recorded as failed (listed under
``failures`` in ``metrics.json``) and the others are scored; a rerun tries it again.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from dcsm.datasets.voc import VOID, VOCDataset, labels_in_mask
from dcsm.errors import DcsmError, failure_reason, first_line
from dcsm.evaluation.metrics import confusion_matrix, iou_per_label, mean_iou, pixel_accuracy
from dcsm.io import json_text, remove_path, save_json, write_atomic
from dcsm.io.records import Journal, check_settings, fingerprint, read_records
from dcsm.methods.registry import find as find_method
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.adapters.weights import weights_digest
from dcsm.pipeline.affinity import AUTO_LAYER
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import select
from dcsm.pipeline.explainer import DistinctSaliency
from dcsm.pipeline.images import model_input, reference_scale
from dcsm.segmentation import segment
from dcsm.segmentation.palette import save_labels


@dataclass(frozen=True)
class Method:
    """One way from an image to a segmentation: which maps, which segmenter."""

    name: str
    title: str
    maps: str  # a registered method ("simonyan") or a dcsm variant: "full", "no_subtract", ...
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
                   ) -> dict[str, Explainer]:
    """The explainer of each kind of maps, all derived from the full method's settings: a
    registered method (``simonyan``, :mod:`dcsm.methods.registry`) at the full method's working
    resolution and precision, or a variant of the full method."""
    a = full.adapter
    ref = full.scales[reference_scale(full.scales)]
    variant = functools.partial(
        DistinctSaliency, a, preset=full.preset, backprop=full.rule, alpha=full.alpha,
        upsample=full.upsample, batch=full.batch, max_side=full.max_side,
        precision=full.precision, reduce=full.reduce, flip=full.flip, gamma=full.gamma,
        gate=full.gate, propagate=full.propagate or False)
    layer = single_layer or full.layers[len(full.layers) // 2]
    walk = full.propagate
    # the single layer's variant walks through its own layer's features
    single_walk = False if walk is None else replace(walk, layer=AUTO_LAYER)
    made: dict[str, Explainer] = {}
    for kind in kinds:
        other = find_method(kind, explainers=True)
        if other is not None:
            made[kind] = other.build(a, {"max_side": full.max_side, "precision": full.precision})
        elif kind == "full":
            made[kind] = full
        elif kind == "no_subtract":
            made[kind] = variant(scales=full.scales, layers=full.layers, subtract=False)
        elif kind == "single_scale":
            made[kind] = variant(scales=[ref], layers=full.layers, subtract=full.subtract)
        elif kind == "single_layer":
            made[kind] = variant(scales=full.scales, layers=[layer], subtract=full.subtract,
                                 propagate=single_walk)
        elif kind == "layers_only":
            made[kind] = variant(scales=[ref], layers=full.layers, subtract=False)
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


# ----------------------------------------------------------------------------- the plan
@dataclass
class _Plan:
    """Everything an evaluation needs, checked before any work."""

    data: VOCDataset
    split: str
    ids: list[str]
    methods: list[str]
    primary: str
    explainers: dict[str, Explainer]
    params: dict[str, dict[str, Any]]  # each segmenter's keyword arguments of segment()
    mapping: dict[int, int]  # adapter class index -> data set label
    oracle: bool
    threshold: float | None
    top_k: int | None
    max_side: int | None
    full: DistinctSaliency

    @property
    def adapter(self) -> ModelAdapter:
        """The model under evaluation."""
        return self.full.adapter

    @property
    def labels_n(self) -> int:
        """Labels of the data set, background included."""
        return self.data.num_classes + 1

    def settings(self) -> dict[str, Any]:
        """What decides the per-image records (their fingerprint; not the image selection)."""
        return {
            "data": str(self.data.root), "split": self.split,
            "labels": self.data.label_names, "model": self.adapter.name,
            "weights_sha256": weights_digest(self.adapter.model),
            "oracle_labels": self.oracle, "threshold": self.threshold, "top_k": self.top_k,
            "dcsm": self.full.parameters(),
            "maps_layers": {k: e.parameters().get("layers") for k, e in self.explainers.items()},
            "crf": self.params["crf"], "grabcut": self.params["grabcut"],
            "methods": self.methods, "void_label": VOID,
        }


def _checked_methods(methods: Sequence[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise DcsmError(f"unknown method '{unknown[0] if unknown else ''}'; known: "
                        f"{', '.join(METHODS)}")
    return list(dict.fromkeys(methods))


def _plan(data: VOCDataset, split: str, full: DistinctSaliency, methods: Sequence[str],
          oracle: bool, threshold: float | None, top_k: int | None,
          crf: dict[str, object] | None, grabcut: dict[str, object] | None,
          single_layer: str | None, limit: int | None) -> _Plan:
    """Check the methods, the model's classes against the data set's and the split; the plan."""
    chosen = _checked_methods(methods)
    if single_layer is not None:
        full.adapter.resolve_layers([single_layer])
    mapping = class_mapping(full.adapter, data, oracle)
    ids = data.ids(split)
    if not ids:
        raise DcsmError(f"split '{split}' lists no images")
    if not (data.root / "SegmentationClass").is_dir():
        raise DcsmError(f"VOC folder '{data.root}' is missing: SegmentationClass/")
    if limit is not None:
        ids = ids[:limit]
    explainers = map_explainers(full, {METHODS[m].maps for m in chosen}, single_layer)
    return _Plan(data, split, ids, chosen, PRIMARY if PRIMARY in chosen else chosen[-1],
                 explainers, {"crf": dict(crf or {}), "grabcut": dict(grabcut or {})},
                 mapping, oracle, threshold, top_k, full.max_side, full)


# ----------------------------------------------------------------------------- one image
class _Failed(Exception):
    """An image that could not be evaluated: the stage ("read", "explain") and the reason."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason


def _read(plan: _Plan, image_id: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """The image, its mask and the classes the mask holds; _Failed("read") when unreadable."""
    try:
        image = plan.data.load_image(image_id, plan.full.max_pixels)
        truth = plan.data.load_mask(image_id)
        if truth.shape != image.shape[:2]:
            raise DcsmError(f"mask of '{image_id}' is {truth.shape[1]}x{truth.shape[0]} but its "
                            f"image is {image.shape[1]}x{image.shape[0]}")
    except Exception as exc:  # noqa: BLE001 - recorded as failed; the run goes on
        raise _Failed("read", failure_reason(exc)) from exc
    return image, truth, labels_in_mask(truth)


def _candidates(plan: _Plan, image: np.ndarray, labels: tuple[int, ...]
                ) -> tuple[list[int], torch.Tensor]:
    """The adapter classes to explain (the model's or, oracle, the mask's) and the scores."""
    probs = predicted_scores(plan.adapter, image)
    if plan.oracle:
        to_adapter = {label: i for i, label in plan.mapping.items()}
        return [to_adapter[label + 1] for label in labels], probs
    sel = select(plan.adapter, probs, 0, None, plan.top_k, plan.threshold)
    return [c.index for c in sel.selected], probs


def _sparse(cm: np.ndarray) -> list[list[int]]:
    """A confusion matrix as its non-zero ``[truth, prediction, count]`` cells."""
    g, p = np.nonzero(cm)
    return [[int(a), int(b), int(cm[a, b])] for a, b in zip(g, p, strict=True)]


def _dense(cells: list[list[int]], n: int) -> np.ndarray:
    cm = np.zeros((n, n), np.int64)
    for g, p, count in cells:
        cm[g, p] += count
    return cm


def _evaluate_image(plan: _Plan, image_id: str
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One image through every method: (its record, each method's label image).

    Raises:
        _Failed: when the image or its mask cannot be read, or a method fails on it.
    """
    image, truth, labels = _read(plan, image_id)
    try:
        classes, probs = _candidates(plan, image, labels)
        true_set = {label + 1 for label in labels}
        pred_set = {plan.mapping[c] for c in classes}
        lut = np.zeros(256, np.uint8)
        for v, c in enumerate(classes, 1):
            lut[v] = plan.mapping[c]
        maps_cache: dict[str, tuple[Any, float]] = {}
        predictions: dict[str, np.ndarray] = {}
        confusion: dict[str, list[list[int]]] = {}
        iou: dict[str, float] = {}
        seconds: dict[str, float] = {}
        for m in plan.methods:
            method = METHODS[m]
            seconds[m] = 0.0
            if not classes:
                pred = np.zeros(truth.shape, np.uint8)
            else:
                if method.maps not in maps_cache:
                    started = time.perf_counter()
                    result = plan.explainers[method.maps].explain(image, classes=classes)
                    maps_cache[method.maps] = (result, time.perf_counter() - started)
                result, map_seconds = maps_cache[method.maps]
                started = time.perf_counter()
                seg = segment(result, segmenter=method.segmenter, max_side=plan.max_side,
                              **plan.params[method.segmenter])
                seconds[m] = map_seconds + time.perf_counter() - started
                pred = lut[seg.labels]
            cm = confusion_matrix(truth, pred, plan.labels_n)
            confusion[m] = _sparse(cm)
            iou[m] = round(float(np.nanmean(iou_per_label(cm))), 4)
            predictions[m] = pred
    except Exception as exc:  # noqa: BLE001 - recorded as failed; the run goes on
        raise _Failed("explain", failure_reason(exc)) from exc
    record = {
        "id": image_id, "labels": [plan.data.class_names[v] for v in labels],
        "candidates": [{"name": plan.adapter.class_names[c], "score": round(float(probs[0, c]), 4)}
                       for c in classes],
        "iou": iou,
        "group": GROUPS[0] if len(labels) <= 1 else GROUPS[1],
        "candidate_counts": {"true": len(true_set), "predicted": len(pred_set),
                             "correct": len(true_set & pred_set),
                             "exact": int(true_set == pred_set)},
        "confusion": confusion, "seconds": {m: round(v, 4) for m, v in seconds.items()},
    }
    return record, predictions


def _prediction_files(out: Path, plan: _Plan, image_id: str) -> list[Path]:
    files = [out / "methods" / m / f"{image_id}.png" for m in plan.methods]
    return [*files, out / "pred" / f"{image_id}.png"]


def _write_predictions(out: Path, plan: _Plan, image_id: str,
                       predictions: dict[str, np.ndarray]) -> None:
    """Each method's label image, and the primary method's as the run's prediction (each file
    atomically; a failure to write stops the run)."""
    for m in plan.methods:
        save_labels(out / "methods" / m / f"{image_id}.png", predictions[m])
    save_labels(out / "pred" / f"{image_id}.png", predictions[plan.primary])


# ----------------------------------------------------------------------------- the output folder
RECORDS_DIR = ".dcsm-evaluate"
_WRITTEN = ("pred", "methods", "metrics.json", "table.md", "images.jsonl", RECORDS_DIR)


def _prepare_out(out: Path, settings: dict[str, Any], force: bool) -> str:
    """Check that ``out`` is new, empty, or an evaluation with these settings (with ``force``,
    one with other settings is cleared); the settings' fingerprint."""
    records = out / RECORDS_DIR
    if out.exists() and not out.is_dir():
        raise DcsmError(f"'{out}' exists and is not a folder; choose an empty or new --out")
    ours = (records / "settings.json").is_file()
    if out.is_dir() and any(out.iterdir()) and not ours:
        if not (out / "metrics.json").exists():
            raise DcsmError(f"'{out}' exists and is not an earlier evaluation; choose an empty "
                            "or new --out")
        if not force:
            raise DcsmError(f"'{out}' holds an evaluation without per-image records (an "
                            "earlier dcsm's); use another --out, or --force to redo it")
    if force:
        old = None
        with contextlib.suppress(OSError, ValueError):
            old = json.loads((records / "settings.json").read_text(encoding="utf-8"))
        if not (isinstance(old, dict) and old.get("fingerprint") == fingerprint(settings)):
            for name in _WRITTEN:  # start over: nothing made with other settings may stay
                remove_path(out / name)
    try:
        for folder in (records, out / "pred", *(out / "methods" / m for m in settings["methods"])):
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DcsmError(f"cannot create the output folder '{out}': "
                        f"{exc.strerror or first_line(exc)}") from exc
    return check_settings(records / "settings.json", settings, force, out)


def _done(out: Path, plan: _Plan, fp: str) -> dict[str, dict[str, Any]]:
    """The records of images already evaluated with these settings whose files are there."""
    done: dict[str, dict[str, Any]] = {}
    for rec in read_records(out / RECORDS_DIR / "records.jsonl"):
        if rec.get("fingerprint") == fp and rec.get("event") == "done":
            done[str(rec.get("id"))] = rec
        elif rec.get("fingerprint") == fp and rec.get("event") == "failed":
            done.pop(str(rec.get("id")), None)
    return {i: rec for i, rec in done.items()
            if all(f.is_file() for f in _prediction_files(out, plan, i))}


# ----------------------------------------------------------------------------- the scores
def _summarise(plan: _Plan, records: list[dict[str, Any]], failures: list[dict[str, str]]
               ) -> tuple[dict[str, Any], str]:
    """The metrics of the split from the per-image records (and the markdown table)."""
    n_labels = plan.labels_n
    methods = plan.methods
    confusion = {m: np.zeros((n_labels, n_labels), np.int64) for m in methods}
    grouped = {g: {m: np.zeros((n_labels, n_labels), np.int64) for m in methods}
               for g in GROUPS}
    group_sizes = dict.fromkeys(GROUPS, 0)
    seconds = dict.fromkeys(methods, 0.0)
    counts = {"true": 0, "predicted": 0, "correct": 0, "exact": 0}
    for rec in records:
        group_sizes[rec["group"]] += 1
        for key in counts:
            counts[key] += int(rec["candidate_counts"][key])
        for m in methods:
            cm = _dense(rec["confusion"][m], n_labels)
            confusion[m] += cm
            grouped[rec["group"]][m] += cm
            seconds[m] += float(rec["seconds"][m])
    n = max(len(records), 1)
    results: dict[str, dict[str, Any]] = {}
    for m in methods:
        iou = iou_per_label(confusion[m])
        results[m] = {
            "title": METHODS[m].title, "maps": METHODS[m].maps,
            "segmenter": METHODS[m].segmenter,
            "miou": mean_iou(confusion[m]),
            "per_class_iou": {name: (None if np.isnan(v) else float(v))
                              for name, v in zip(plan.data.label_names, iou, strict=True)},
            "pixel_accuracy": pixel_accuracy(confusion[m]),
            "miou_by_classes_in_image": {
                g: (mean_iou(grouped[g][m]) if group_sizes[g] else None) for g in GROUPS},
            "seconds_per_image": seconds[m] / n,
            "confusion": confusion[m].tolist(),
        }
    settings = plan.settings()
    settings.pop("weights_sha256")
    metrics = {
        "miou": results[plan.primary]["miou"],
        "per_class_iou": results[plan.primary]["per_class_iou"],
        "method": plan.primary,
        "methods": results,
        "candidates": {
            "source": "oracle (ground-truth image labels)" if plan.oracle else "model",
            "precision": counts["correct"] / max(counts["predicted"], 1),
            "recall": counts["correct"] / max(counts["true"], 1),
            "exact": counts["exact"] / n},
        "settings": {**settings, "images": len(records), "images_failed": len(failures),
                     "images_by_classes_in_image": group_sizes},
        "failures": failures,
    }
    return metrics, _table(results, plan.data.label_names, group_sizes)


def _write_report(out: Path, metrics: dict[str, Any], table: str,
                  records: list[dict[str, Any]]) -> None:
    """``metrics.json``, ``table.md`` and ``images.jsonl`` (one line per scored image, in the
    split's order), each atomically."""
    # NaN (an IoU over no labels) is written null: strict JSON
    lines = "".join(json_text({k: r[k] for k in ("id", "labels", "candidates", "iou")},
                              indent=None, nan_as_null=True) + "\n" for r in records)
    write_atomic(out / "images.jsonl", lambda tmp: tmp.write_text(lines, encoding="utf-8"))
    write_atomic(out / "table.md", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    save_json(out / "metrics.json", metrics, nan_as_null=True)


# ----------------------------------------------------------------------------- the run
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
    force: bool = False,
) -> dict[str, Any]:
    """Evaluate ``methods`` on ``split`` into ``out``: ``metrics.json``, ``table.md``,
    ``images.jsonl``, ``pred/<id>.png`` and ``methods/<method>/<id>.png``.

    ``full`` is the full method's explainer; the ablations change one of its settings. The run
    is resumable: each image's scores are recorded in ``out/.dcsm-evaluate/records.jsonl``
    (with the settings' fingerprint, ``settings.json`` beside it) once its label images are
    written, and a rerun skips the images already done, so an interrupted run loses at most
    the image in progress. A rerun with other settings is refused unless ``force`` (which
    starts ``out`` over); ``limit`` (the first N images of the split) is not a setting, so a
    run on part of a split can be extended to all of it. The metrics are computed from the
    records of the selected images. An image or mask that cannot be read, or an image a
    method fails on, is recorded as failed (``metrics["failures"]``, the reason logged) and
    the run goes on; a failure to write (a full disk) stops it with a DcsmError. Returns the
    metrics written to ``metrics.json``.
    """
    log = log or (lambda text: print(text, flush=True))
    out = Path(out)
    plan = _plan(data, split, full, methods, oracle, threshold, top_k, crf, grabcut,
                 single_layer, limit)
    fp = _prepare_out(out, plan.settings(), force)
    done = _done(out, plan, fp)
    pending = [i for i in plan.ids if i not in done]
    failures: dict[str, dict[str, str]] = {}
    bar = None
    if progress:
        bar = tqdm(total=len(plan.ids), initial=len(plan.ids) - len(pending),
                   desc=f"evaluate {split}", unit="img", dynamic_ncols=True)
    journal = Journal(out / RECORDS_DIR / "records.jsonl",
                      busy=f"another dcsm evaluate run is writing '{out}'")
    with journal:
        journal.write("start", fingerprint=fp, images=len(plan.ids), done=len(done),
                      pending=len(pending))
        try:
            for image_id in pending:
                try:
                    record, predictions = _evaluate_image(plan, image_id)
                except _Failed as failed:
                    failures[image_id] = {"id": image_id, "stage": failed.stage,
                                          "reason": failed.reason}
                    journal.write("failed", fingerprint=fp, **failures[image_id])
                    message = f"dcsm evaluate: {image_id}: failed: {failed.reason}"
                    if bar is not None:
                        bar.write(message, file=sys.stderr)
                    else:
                        print(message, file=sys.stderr, flush=True)
                else:
                    _write_predictions(out, plan, image_id, predictions)
                    journal.write("done", fingerprint=fp, **record)
                    done[image_id] = record
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
    records = [done[i] for i in plan.ids if i in done]
    metrics, table = _summarise(plan, records, [failures[i] for i in plan.ids if i in failures])
    _write_report(out, metrics, table, records)
    log(table)
    return metrics
