r"""The real-photo benchmark: maps and masks against real per-object masks.

The photos are the five bundled ones (:func:`dcsm.datasets.realphotos.load_real_photos`) or a
whole data set on disk, streamed one photo at a time (:mod:`dcsm.datasets.coco`,
:func:`dcsm.datasets.realphotos.voc_entries`). For each photo and each method, the method is
given **every** class of the photo that the model can name (VOC's or COCO's classes as groups of
ImageNet classes, :mod:`dcsm.pipeline.adapters.groups`; ``person`` has no ImageNet group) in one
call (the peers batch them) and returns one map per class. Each (photo, class) pair is scored by
:func:`score_photo`, void pixels (VOC's borders, COCO's crowd regions) left out throughout:

* **relevance mass**, the energy pointing game (Wang et al. 2020, Score-CAM; Arras et al.
  2022's relevance mass accuracy): the share of the map's positive mass inside the class's true
  mask (a uniform map scores the mask's share of the photo);
* the **pointing game** (Zhang et al. 2016): whether the map's maximum lies within 15 pixels of
  the mask;
* **relevance rank accuracy** (Arras et al. 2022): the share of the mask among the K pixels the
  map ranks highest, K the mask's size (:func:`dcsm.bench.scores.relevance_rank_accuracy`);
* the **AUC** of the map as a score for mask membership (:func:`dcsm.bench.scores.mask_auc`);
* **class specificity**: the share of the map's positive mass on the *other* present classes'
  masks, outside its own (:func:`dcsm.bench.scores.mass_on_others`; every other annotated class
  counts, named by the model or not; lower is better), and the mean **SSIM** between the
  class's map and each other explained class's map of the photo
  (:func:`dcsm.bench.scores.map_similarity`; lower is better: the maps are distinct);
* the **segmentation IoU**: the maps of all the photo's classes are segmented together (the dense
  CRF, :mod:`dcsm.segmentation.crf`, or GrabCut for Simonyan et al.'s baseline, as in the paper)
  and the class's mask compared with the true one.

A class a method gives no map is scored as an all-zero map (IoU 0). Undefined values (the AUC of
a mask covering every pixel, the specificity of a map without positive mass or of a photo with
one class) are None and left out of the means; every mean comes with its count.

**Small objects.** A pair whose mask (all the class's objects together) covers under 1 % of the
photo (:data:`SMALL_SHARE`) is summarised apart (``summary_small``, ``per_class_small``); the
headline numbers (``summary``, ``per_class``) are those of the pairs of at least 1 %.

**Resumable runs.** With ``records`` (a folder), each photo's scores are appended, as it
finishes, to ``records/masks-records.jsonl`` (:class:`dcsm.io.records.Journal`) with the
fingerprint of the settings (data set, model, methods, segmenters, metric settings; kept in
``records/masks-settings.json``): a rerun skips the photos already done, a run with other
settings stops with an error (unless ``force``), and the report is built from the records, so
an interrupted and resumed run reports what an uninterrupted one does (the seconds aside). A
photo that cannot be read (a missing image) is recorded as failed and skipped; a rerun tries it
again. The maps can be kept (``maps_dir/<method>/<photo>.npz``) so that the segmentation rules
can be studied without recomputing them (``benchmarks/masks_unaries.py``).

**Quantus.** With ``quantus`` (metric names, :func:`quantus_plan`; ``dcsm bench masks
--quantus``) each method's maps of each photo are also judged by Quantus 0.6
(:func:`dcsm.integrations.quantus.evaluate_photos`, one call per photo and method): the same
(photo, class) pairs in the same order, each map made with every nameable class of the photo
given (the benchmark's own maps are handed in, so the localisation metrics judge exactly the
maps scored above; ``RandomLogit`` and ``MPRT`` call the method again through the integration's
``explain_func``, with the same candidates), void pixels set to zero for the localisation
metrics. On a non-negative map Quantus's ``RelevanceMassAccuracy`` is then the relevance mass
above; its ``AUC`` and ``RelevanceRankAccuracy`` count the void pixels as background of zero
attribution where the benchmark leaves them out. ``quantus_max_pairs`` caps the pairs judged
(the first ones in the photos' order, counted over the records of a resumed run too; ``MPRT``
alone costs two explanations per pair). The scores go into each photo's record, the Quantus
settings into the fingerprint, and the report gets each metric's mean per method with its count
(each method's ``quantus`` entry; the headline over the pairs of at least 1 % of the photo).
"""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dcsm.bench.scores import (
    energy_pointing_game,
    map_similarities,
    mask_auc,
    mass_on_others,
    pointing_game_hit,
    relevance_rank_accuracy,
    summarize,
)
from dcsm.datasets.realphotos import MaskedPhoto, PhotoClasses, PhotoEntry, name_classes
from dcsm.errors import DcsmError, first_line
from dcsm.integrations.quantus import check_metrics, evaluate_photos, require_quantus
from dcsm.io import safe_filename, save_npz
from dcsm.io.records import Journal, check_settings, read_records
from dcsm.methods.benchmarked import BenchMethod, bench_methods
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.segmentation import segment

__all__ = ["DEFAULT_MASK_METHODS", "METRICS", "RECORDS_FILE", "SETTINGS_FILE", "SMALL_SHARE",
           "PhotoClasses", "build_report", "iou", "markdown_table", "masks_benchmark",
           "name_classes", "quantus_plan", "score_pair", "score_photo", "segmenter_for"]

#: The methods ``dcsm bench masks`` runs by default (those whose library is installed).
DEFAULT_MASK_METHODS: tuple[str, ...] = (
    "dcsm-tuned", "dcsm-paper", "dcsm-released", "dcsm-tuned-no-subtract", "gradcam",
    "simonyan", "pgc-gradcam", "pgc-finercam",
)
#: Pointing game tolerance in pixels (Zhang et al. 2016).
POINTING_TOLERANCE = 15.0
#: Pairs whose mask covers less than this share of the photo are summarised apart.
SMALL_SHARE = 0.01
#: The scores of a pair: summary key -> (score key, heading, whether higher is better).
METRICS: dict[str, tuple[str, str, bool]] = {
    "energy": ("energy", "relevance mass", True),
    "pointing": ("hit", "pointing game", True),
    "rank": ("rank", "rank accuracy", True),
    "auc": ("auc", "AUC", True),
    "other": ("other", "mass on others", False),
    "ssim": ("ssim", "SSIM with others", False),
    "iou": ("iou", "CRF IoU", True),
}
#: The journal and settings files of a resumable run, in its ``records`` folder.
RECORDS_FILE = "masks-records.jsonl"
SETTINGS_FILE = "masks-settings.json"
#: Version of the records' content: a change in what is scored makes old records stale.
SCORES_VERSION = 3  # 3: the CRF takes the maps before their final power (map_gamma)
#: The seed of Quantus's RandomLogit classes and MPRT's randomisation.
QUANTUS_SEED = 42
#: A photo's pairs go to Quantus in batches of at most this many.
QUANTUS_BATCH = 16
#: Quantus metrics where lower is better (RandomLogit: SSIM with another class's map; MPRT:
#: rank correlation with the randomised model's map).
QUANTUS_LOWER_BETTER = ("RandomLogit", "MPRT", "ModelParameterRandomisation")
_QUANTUS_NOTES = {
    "RandomLogit": "SSIM with the map of a random other class",
    "MPRT": "Spearman correlation with the map of the model with every layer randomised "
            "(near 0 is best)",
}
_QUANTUS_NOTES["ModelParameterRandomisation"] = _QUANTUS_NOTES["MPRT"]


def segmenter_for(method: str) -> str:
    """The segmenter a method's maps go to: GrabCut for Simonyan et al.'s gradients (their
    paper's choice, the paper's baseline), the dense CRF for every other map: the
    ``segmenter`` of the benchmark's method (:mod:`dcsm.methods.benchmarked`; ``crf`` for a
    method not in its table)."""
    return next((m.segmenter for m in bench_methods() if m.key == method), "crf")


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


def _similarities(maps: Sequence[np.ndarray]) -> np.ndarray | None:
    try:
        return map_similarities(maps)
    except ValueError:  # a photo too small for SSIM's window
        return None


def score_photo(maps: Mapping[str, np.ndarray], photo: MaskedPhoto,
                masks: Mapping[str, np.ndarray] | None = None,
                classes: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Every score of each class of one photo, given a method's maps (see the module's notes).

    Args:
        maps: class name -> (H, W) map at the photo's size.
        photo: the photo with its true masks.
        masks: class name -> (H, W) bool segmentation of the maps; None: no IoU.
        classes: the classes to score (a class without a map scores as an all-zero map); by
            default those of ``maps`` that the photo holds.

    Returns:
        One dict per class: ``class``, ``pixels`` (its mask's size), ``share`` (of the photo),
        ``small`` (share under :data:`SMALL_SHARE`), ``energy``, ``hit``, ``rank``, ``auc``,
        ``other``, ``ssim`` and ``iou`` (None where undefined).
    """
    present = photo.classes
    if classes is None:
        classes = [c for c in maps if c in present]
    unknown = [c for c in classes if c not in present]
    if unknown:
        raise ValueError(f"photo {photo.name} has no class {unknown[0]!r}")
    void = photo.void
    shape = photo.labels.shape
    truth = {c: photo.mask(c) for c in present}
    for name, m in maps.items():
        if np.shape(m) != shape:
            raise ValueError(f"the map of {name!r} is {np.shape(m)}, the photo {shape}")
    explained = [c for c in classes if c in maps]
    matrix = _similarities([maps[c] for c in explained]) if len(explained) > 1 else None
    similarity = {(a, b): float(matrix[i, j]) for i, a in enumerate(explained)
                  for j, b in enumerate(explained) if i != j} if matrix is not None else {}
    rows = []
    for c in classes:
        saliency = np.asarray(maps[c], dtype=np.float64) if c in maps else np.zeros(shape)
        kept = np.where(void, 0.0, saliency)
        others = np.zeros(shape, dtype=bool)
        for o in present:
            if o != c:
                others |= truth[o]
        sims = [similarity[c, o] for o in explained if (c, o) in similarity]
        pixels = int(truth[c].sum())
        share = pixels / truth[c].size
        rows.append({
            "class": c,
            "pixels": pixels,
            "share": share,
            "small": share < SMALL_SHARE,
            "energy": energy_pointing_game(kept, truth[c]),
            "hit": pointing_game_hit(kept, truth[c], POINTING_TOLERANCE),
            "rank": relevance_rank_accuracy(saliency, truth[c], void),
            "auc": mask_auc(saliency, truth[c], void),
            "other": mass_on_others(saliency, truth[c], others, void),
            "ssim": float(np.mean(sims)) if sims else None,
            "iou": None if masks is None else iou(
                np.asarray(masks.get(c, np.zeros(shape, bool)), dtype=bool), truth[c], void),
        })
    return rows


def _segment(method: str, maps: Mapping[str, np.ndarray], image: np.ndarray,
             crf: Mapping[str, Any], grabcut: Mapping[str, Any],
             map_gamma: float = 1.0) -> dict[str, np.ndarray]:
    kind = segmenter_for(method)
    seg = segment(dict(maps), image, segmenter=kind, map_gamma=map_gamma,
                  **(crf if kind == "crf" else grabcut))
    return seg.masks


def quantus_plan(metrics: Sequence[str], methods: Sequence[BenchMethod],
                 max_pairs: int | None = None) -> dict[str, Any]:
    """The Quantus part of a run's settings (its fingerprint and report), checked before any
    work: DcsmError when ``quantus`` is not installed (naming the extra), for an unknown metric,
    a method the integration cannot call (one not in :data:`dcsm.bench.methods.METHODS`) or
    ``max_pairs`` under 1."""
    names = check_metrics(metrics)
    quantus = require_quantus()
    registered = {m.key: m for m in bench_methods()}
    for spec in methods:
        if registered.get(spec.key) is not spec:
            raise DcsmError(f"Quantus judges the benchmark's own methods; '{spec.key}' is not "
                            "one of them")
    if max_pairs is not None and max_pairs < 1:
        raise DcsmError(f"the Quantus pair limit must be at least 1, got {max_pairs}")
    return {"metrics": names, "max_pairs": max_pairs, "seed": QUANTUS_SEED,
            "candidates": "present", "ignore_void": True,
            "version": str(getattr(quantus, "__version__", "unknown"))}


def _quantus_scores(items: Sequence[Mapping[str, Any]], metrics: Sequence[str]
                    ) -> list[dict[str, Any]]:
    """Quantus's items as record entries: each metric's score (None where undefined), and the
    reasons where Quantus refused a map."""
    out = []
    for item in items:
        entry: dict[str, Any] = {}
        for name in metrics:
            value = float(item[name])
            entry[name] = value if np.isfinite(value) else None
        if item.get("errors"):
            entry["errors"] = dict(item["errors"])
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- the run
_PAIR_KEYS = ("class", "pixels", "share", "small")


class _Runner:
    """Models and map functions, made on first use per label set; one photo at a time."""

    def __init__(self, adapters: Callable[[str], ModelAdapter], methods: Sequence[BenchMethod],
                 crf: Mapping[str, Any], grabcut: Mapping[str, Any], maps_dir: Path | None,
                 progress: Callable[[str], None] | None,
                 quantus: Mapping[str, Any] | None = None) -> None:
        self.adapters, self.methods = adapters, list(methods)
        self.crf, self.grabcut = crf, grabcut
        self.maps_dir, self.progress = maps_dir, progress
        self.quantus = quantus
        self.models: dict[str, ModelAdapter] = {}
        self.functions: dict[tuple[str, str], Callable[..., dict[int, np.ndarray]]] = {}

    def model(self, label_set: str) -> ModelAdapter:
        if label_set not in self.models:
            self.models[label_set] = self.adapters(label_set)
        return self.models[label_set]

    def function(self, spec: BenchMethod, label_set: str) -> Callable[..., dict[int, np.ndarray]]:
        if (spec.key, label_set) not in self.functions:
            self.functions[spec.key, label_set] = spec.build(self.model(label_set), "oracle")
        return self.functions[spec.key, label_set]

    def judge(self, spec: BenchMethod, photo: MaskedPhoto, classes: Sequence[str],
              maps: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Quantus's scores of one method's ``maps`` for the photo's first ``classes``."""
        assert self.quantus is not None
        metrics = self.quantus["metrics"]
        start = time.perf_counter()
        result = evaluate_photos(self.model, [(photo, list(classes))], method=spec.key,
                                 metrics=metrics, candidates="present",
                                 batch_size=min(len(classes), QUANTUS_BATCH),
                                 ignore_void=self.quantus["ignore_void"],
                                 seed=self.quantus["seed"], maps={photo.name: maps})
        seconds = time.perf_counter() - start
        if [item["class"] for item in result["items"]] != list(classes):
            raise DcsmError(f"Quantus judged other pairs of photo {photo.name} than asked")
        return {"seconds": seconds, "scores": _quantus_scores(result["items"], metrics)}

    def run(self, photo: MaskedPhoto, judged: int | None = None) -> dict[str, Any]:
        """The record of one photo: its pairs and each method's scores and seconds; with
        Quantus, its scores of the first ``judged`` pairs (all: None)."""
        classes = name_classes(self.model(photo.label_set), photo)
        pairs = []
        for name in classes.named:
            pixels = int(photo.mask(name).sum())
            share = pixels / photo.labels.size
            pairs.append({"class": name, "pixels": pixels, "share": share,
                          "small": share < SMALL_SHARE})
            if photo.objects:
                pairs[-1]["objects"] = sum(1 for o in photo.objects
                                           if o.class_name == name and not o.crowd)
        record: dict[str, Any] = {"photo": photo.name, "unnameable": classes.unnamed,
                                  "pairs": pairs, "methods": {}}
        if self.quantus is not None:
            record["quantus_pairs"] = len(pairs) if judged is None else min(judged, len(pairs))
        if not classes.named:
            return record
        for spec in self.methods:  # the methods take turns on each photo
            start = time.perf_counter()
            by_index = self.function(spec, photo.label_set)(photo.image, classes.indices)
            seconds = time.perf_counter() - start
            maps = {name: np.asarray(by_index[i], dtype=np.float32)
                    for name, i in zip(classes.named, classes.indices, strict=True)
                    if i in by_index}
            if self.maps_dir is not None:
                folder = self.maps_dir / spec.key
                folder.mkdir(parents=True, exist_ok=True)
                save_npz(folder / f"{safe_filename(photo.name.replace(':', '_'))}.npz", maps)
            masks = _segment(spec.key, maps, photo.image, self.crf, self.grabcut,
                             spec.map_gamma) if maps else {}
            scores = score_photo(maps, photo, masks, classes.named)
            record["methods"][spec.key] = {
                "seconds": seconds,
                "scores": [{k: v for k, v in s.items() if k not in _PAIR_KEYS[1:]}
                           for s in scores]}
            line = ""
            if record.get("quantus_pairs"):
                judged_pairs = classes.named[:record["quantus_pairs"]]
                quantus = self.judge(spec, photo, judged_pairs, maps)
                record["methods"][spec.key]["quantus"] = quantus
                line = f", Quantus {quantus['seconds']:.1f} s"
            if self.progress is not None:
                mean_iou = np.mean([s["iou"] for s in scores])
                self.progress(f"{photo.name} {spec.key}: {seconds:.1f} s, IoU {mean_iou:.3f}"
                              + line)
        return record


def _entries(photos: Iterable[MaskedPhoto | PhotoEntry]) -> Iterator[PhotoEntry]:
    for item in photos:
        if isinstance(item, PhotoEntry):
            yield item
        else:
            yield PhotoEntry(item.name, functools.partial(_given, item))


def _given(photo: MaskedPhoto) -> MaskedPhoto:
    """``photo`` (the loader of a photo already read)."""
    return photo


def _load(entry: PhotoEntry) -> MaskedPhoto | str:
    """The photo, or the one-line reason it cannot be read."""
    try:
        photo = entry.load()
    except DcsmError as exc:
        return first_line(exc)
    if photo.name != entry.name:
        return f"the data set gave photo {photo.name} for {entry.name}"
    return photo


def _prefetched(entries: Iterator[PhotoEntry], skip: Callable[[str], bool], ahead: int
                ) -> Iterator[tuple[PhotoEntry, Future[MaskedPhoto | str] | None]]:
    """Each entry with its photo being read in a background thread, ``ahead`` photos in
    advance (None for the entries ``skip`` names: done before)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="dcsm-photos") as pool:
        queue: deque[tuple[PhotoEntry, Future[MaskedPhoto | str] | None]] = deque()
        for entry in entries:
            queue.append((entry, None if skip(entry.name) else pool.submit(_load, entry)))
            while len(queue) > ahead:
                yield queue.popleft()
        while queue:
            yield queue.popleft()


class _Records:
    """The journal of a resumable run (see the module's notes)."""

    def __init__(self, folder: Path, settings: Mapping[str, Any], force: bool) -> None:
        self.path = Path(folder) / RECORDS_FILE
        records = [r for r in read_records(self.path) if r.get("event") in ("photo", "failed")]
        # a folder whose run stopped before its first photo holds nothing to protect
        self.fingerprint = check_settings(Path(folder) / SETTINGS_FILE, settings,
                                          force or not records, Path(folder))
        self.done: dict[str, dict[str, Any]] = {}
        for rec in records:
            if rec.get("fingerprint") == self.fingerprint and rec.get("event") == "photo":
                self.done[str(rec.get("photo"))] = rec
        self.journal = Journal(self.path, busy=f"another dcsm bench masks run is writing "
                                                f"'{self.path}' (same --out)")


def masks_benchmark(
    adapters: Callable[[str], ModelAdapter],
    photos: Iterable[MaskedPhoto | PhotoEntry],
    methods: Sequence[BenchMethod],
    crf: Mapping[str, Any] | None = None,
    grabcut: Mapping[str, Any] | None = None,
    maps_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
    *,
    records: Path | None = None,
    settings: Mapping[str, Any] | None = None,
    force: bool = False,
    bar: Any = None,  # noqa: ANN401 - dcsm.batch.progress.Progress or anything with step/message
    prefetch: int = 2,
    quantus: Sequence[str] | None = None,
    quantus_max_pairs: int | None = None,
) -> dict[str, Any]:
    """Run every method on every photo and score every nameable (photo, class) pair.

    Args:
        adapters: the model for a label set (``"voc"``, ``"coco"``), grouped.
        photos: the photos with their masks, or :class:`~dcsm.datasets.realphotos.PhotoEntry`
            items read one at a time (in a background thread, ``prefetch`` ahead), so that a
            data set of any size streams through.
        methods: the methods (:func:`dcsm.bench.methods.get_methods`), run with every class of
            the photo given (the ``oracle`` candidates of the grid pointing game).
        crf, grabcut: segmenter settings (their defaults if None).
        maps_dir: where to keep each method's maps, ``<method>/<photo>.npz``; None: not kept.
        progress: called with one line per photo and method.
        records: a folder for the journal of a resumable run (see the module's notes); None:
            nothing is recorded and every photo is run.
        settings: what else the records' fingerprint covers (the data set, the model); the
            methods, segmenters and metric settings are added here.
        force: with ``records``, start over when the folder's settings differ.
        bar: a progress bar (``step(failed=...)`` per photo, ``message(line)``), e.g.
            :class:`dcsm.batch.progress.Progress`.
        quantus: Quantus metrics to run on every method's maps as well (see the module's
            notes; :data:`dcsm.integrations.quantus.DEFAULT_METRICS`); None: no Quantus.
        quantus_max_pairs: with ``quantus``, judge the first this many pairs only.

    Returns:
        The report (:func:`build_report`).

    Raises:
        DcsmError: no photos, the records folder holds other settings (not ``force``), or
            ``quantus`` cannot run (not installed, an unknown metric; before any work).
    """
    if quantus is None and quantus_max_pairs is not None:
        raise DcsmError("a Quantus pair limit needs Quantus metrics")
    plan = None if quantus is None else quantus_plan(quantus, methods, quantus_max_pairs)
    crf, grabcut = dict(crf or {}), dict(grabcut or {})
    full = {"benchmark": "masks", "scores_version": SCORES_VERSION,
            "methods": [m.key for m in methods], "crf": crf, "grabcut": grabcut,
            "pointing_tolerance": POINTING_TOLERANCE, "small_share": SMALL_SHARE,
            **dict(settings or {})}
    if plan is not None:
        full["quantus"] = plan
    journal = _Records(records, full, force) if records is not None else None
    runner = _Runner(adapters, methods, crf, grabcut, maps_dir, progress, plan)
    done = journal.done if journal is not None else {}
    # the Quantus pairs already judged, by this run's records too (a resumed run's cap)
    judged = sum(int(r.get("quantus_pairs", 0)) for r in done.values())
    order: list[str] = []
    results: dict[str, dict[str, Any]] = {}

    def finished(rec: dict[str, Any], failed: bool) -> None:
        results[rec["photo"]] = rec
        if bar is not None:
            bar.step(failed=failed)

    if journal is not None:
        journal.journal.open()
    try:
        seen: set[str] = set()
        for entry, future in _prefetched(_entries(photos), done.__contains__, max(prefetch, 0)):
            if entry.name in seen:
                raise DcsmError(f"photo {entry.name} comes twice")
            seen.add(entry.name)
            order.append(entry.name)
            if future is None:
                finished(done[entry.name], failed=False)
                continue
            loaded = future.result()
            try:
                if isinstance(loaded, str):
                    raise DcsmError(loaded)
                cap = None if plan is None or plan["max_pairs"] is None else max(
                    plan["max_pairs"] - judged, 0)
                rec = runner.run(loaded, cap)
                judged += int(rec.get("quantus_pairs", 0))
            except DcsmError as exc:
                reason = first_line(exc)
                if bar is not None:
                    bar.message(f"skipped {entry.name}: {reason}")
                rec = {"photo": entry.name, "reason": reason}
                if journal is not None:
                    journal.journal.write("failed", fingerprint=journal.fingerprint, **rec)
                finished(rec, failed=True)
                continue
            if journal is not None:
                journal.journal.write("photo", fingerprint=journal.fingerprint, **rec)
            finished(rec, failed=False)
    finally:
        if journal is not None:
            journal.journal.close()
    if not order:
        raise DcsmError("no photos to run")
    report = build_report([results[name] for name in order], methods, SMALL_SHARE, plan)
    report["segmentation"] = {"crf": crf, "grabcut": grabcut}
    report["settings"] = full
    if journal is not None:
        report["fingerprint"] = journal.fingerprint
    return report


# ----------------------------------------------------------------------------- the report
def _summaries(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {name: summarize([s[key] for s in scores])
            for name, (key, _, _) in METRICS.items()}


def _per_class(scores: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_class: dict[str, list[Mapping[str, Any]]] = {}
    for s in scores:
        by_class.setdefault(s["class"], []).append(s)
    return {c: {"pairs": len(v), **_summaries(v)} for c, v in sorted(by_class.items())}


def _quantus_part(records: Sequence[Mapping[str, Any]], methods: Sequence[BenchMethod],
                  quantus: Mapping[str, Any], large: Sequence[int], small: Sequence[int]
                  ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The report's ``quantus`` entry and each method's Quantus part (see :func:`build_report`);
    ``large`` and ``small``: the pairs' positions on either side of the small-object share."""
    metrics = list(quantus["metrics"])
    parts: dict[str, dict[str, Any]] = {}
    judged: list[bool] = []
    for rec in records:
        if "reason" not in rec:
            count = int(rec.get("quantus_pairs", 0))
            judged += [i < count for i in range(len(rec["pairs"]))]
    for spec in methods:
        scores: list[dict[str, Any] | None] = []
        seconds = []
        for rec in records:
            if "reason" in rec:
                continue
            count = int(rec.get("quantus_pairs", 0))
            entry = rec["methods"].get(spec.key, {}).get("quantus") if count else None
            got = entry["scores"] if entry else []
            if len(got) != min(count, len(rec["pairs"])):
                raise DcsmError("the records do not hold every method's Quantus scores of "
                                f"photo {rec['photo']}")
            if entry:
                seconds.append(entry["seconds"])
            scores += [dict(g) for g in got] + [None] * (len(rec["pairs"]) - len(got))
        parts[spec.key] = {"scores": scores,
                           "summary": _quantus_summary(scores, large, metrics),
                           "summary_small": _quantus_summary(scores, small, metrics),
                           "seconds_per_photo": float(np.median(seconds)) if seconds
                           else float("nan")}
    head = {**dict(quantus), "pairs": sum(judged[i] for i in large),
            "pairs_small": sum(judged[i] for i in small)}
    return head, parts


def _quantus_summary(scores: Sequence[Mapping[str, Any] | None], positions: Sequence[int],
                     metrics: Sequence[str]) -> dict[str, Any]:
    """Each Quantus metric over the judged pairs at ``positions`` where it is defined."""
    kept = [s for s in (scores[i] for i in positions) if s is not None]
    return {name: summarize([s[name] for s in kept]) for name in metrics}


def build_report(records: Sequence[Mapping[str, Any]], methods: Sequence[BenchMethod],
                 small_share: float = SMALL_SHARE,
                 quantus: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The report from the photos' records, in the order given.

    Returns:
        ``photos`` (those scored), ``failed`` (photo, reason), ``pairs`` (photo, class, pixels,
        share, small), ``unnameable`` (photo, class) and ``unnameable_counts`` (class -> photos),
        ``counts``, and per method its ``label``, ``source``, ``segmenter``, ``scores`` (one per
        pair, in ``pairs``' order), ``summary`` and ``per_class`` over the pairs of at least
        ``small_share`` of the photo, ``summary_small`` and ``per_class_small`` over the others
        (each metric's mean, median, quartiles and count), and ``seconds_per_photo`` (median).
        With ``quantus`` (the plan of :func:`quantus_plan`), ``quantus`` (the plan and the counts
        of pairs judged, ``pairs`` and ``pairs_small``) and per method ``quantus``: ``scores``
        (one per pair, None for a pair not judged), ``summary`` and ``summary_small`` (each
        Quantus metric over the judged pairs where it is defined) and ``seconds_per_photo``.
    """
    photos, failed, pairs, unnamed = [], [], [], []
    results: dict[str, Any] = {
        spec.key: {"label": spec.label, "source": spec.source,
                   "segmenter": segmenter_for(spec.key), "scores": [], "seconds": []}
        for spec in methods}
    for rec in records:
        if "reason" in rec:
            failed.append({"photo": rec["photo"], "reason": rec["reason"]})
            continue
        photos.append(rec["photo"])
        unnamed += [{"photo": rec["photo"], "class": c} for c in rec["unnameable"]]
        pairs += [{"photo": rec["photo"], **p} for p in rec["pairs"]]
        for key, entry in results.items():
            method = rec["methods"].get(key)
            if method is None:
                continue
            entry["seconds"].append(method["seconds"])
            entry["scores"] += [{"photo": rec["photo"], **s} for s in method["scores"]]
    large = [i for i, p in enumerate(pairs) if p["share"] >= small_share]
    small = [i for i, p in enumerate(pairs) if p["share"] < small_share]
    for entry in results.values():
        scores = entry["scores"]
        if len(scores) != len(pairs):  # records from before a method was added: cannot be
            raise DcsmError("the records do not hold every method's scores of every pair")
        entry["summary"] = _summaries([scores[i] for i in large])
        entry["summary_small"] = _summaries([scores[i] for i in small])
        entry["per_class"] = _per_class([scores[i] for i in large])
        entry["per_class_small"] = _per_class([scores[i] for i in small])
        seconds = entry.pop("seconds")
        entry["seconds_per_photo"] = float(np.median(seconds)) if seconds else float("nan")
    counts: dict[str, int] = {}
    for u in unnamed:
        counts[u["class"]] = counts.get(u["class"], 0) + 1
    extra: dict[str, Any] = {}
    if quantus is not None:
        extra["quantus"], parts = _quantus_part(records, methods, quantus, large, small)
        for key, part in parts.items():
            results[key]["quantus"] = part
    return {
        "benchmark": "masks",
        "small_share": small_share,
        "counts": {"photos": len(photos), "failed": len(failed), "pairs": len(large),
                   "pairs_small": len(small), "unnameable": len(unnamed)},
        "photos": photos,
        "failed": failed,
        "pairs": pairs,
        "unnameable": unnamed,
        "unnameable_counts": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))),
        "methods": results,
        **extra,
    }


def _cell(value: Any) -> str:  # noqa: ANN401 - a number or None
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    return f"{float(value):.3f}"


def _method_rows(report: Mapping[str, Any], key: str) -> list[str]:
    rows = []
    for entry in report["methods"].values():
        s = entry[key]
        cells = " | ".join(_cell(s[m]["mean"]) for m in METRICS)
        n = s["energy"]["n"]
        rows.append(f"| {entry['label']} | {cells} | {n} | {entry['segmenter']} | "
                    f"{_cell(entry['seconds_per_photo'])} |")
    return rows


def _quantus_rows(report: Mapping[str, Any], key: str) -> list[str]:
    """The Quantus table: one row per metric, one column per method, each cell the mean over
    the judged pairs where the metric is defined, with their count."""
    metrics = report["quantus"]["metrics"]
    entries = list(report["methods"].values())
    lines = ["| Quantus metric | " + " | ".join(e["label"] for e in entries) + " |",
             "|---|" + "---|" * len(entries)]
    for name in metrics:
        cells = []
        for e in entries:
            s = e["quantus"][key][name]
            cells.append(f"{_cell(s['mean'])} ({s['n']})")
        arrow = " ↓" if name in QUANTUS_LOWER_BETTER else ""
        lines.append(f"| {name}{arrow} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(report: Mapping[str, Any], per_class: bool = True) -> str:
    """The report as Markdown: the methods overall (objects of at least 1 % of the photo), the
    small objects apart, then (``per_class``) each metric per class and the classes the model
    cannot name."""
    share = 100 * report.get("small_share", SMALL_SHARE)
    heads = " | ".join(h + (" ↓" if not up else "") for _, h, up in METRICS.values())
    header = [f"| method | {heads} | pairs | segmenter | s / photo |",
              "|---|" + "---|" * (len(METRICS) + 3)]
    counts = report.get("counts", {})
    lines = [*header, *_method_rows(report, "summary")]
    lines.append(f"\n{counts.get('pairs', len(report['pairs']))} (photo, class) pairs of "
                 f"objects of at least {share:g} % of the photo on {len(report['photos'])} "
                 "photos; every class of the photo given; ↓: lower is better.")
    if report["failed"]:
        lines.append(f"{len(report['failed'])} photo(s) could not be read and were skipped "
                     f"(e.g. {report['failed'][0]['photo']}: {report['failed'][0]['reason']}).")
    quantus = report.get("quantus")
    if quantus is not None:
        cap = quantus.get("max_pairs")
        lines += ["", f"### Quantus {quantus.get('version', '')}".rstrip(), "",
                  *_quantus_rows(report, "summary"),
                  f"\n{quantus['pairs']} (photo, class) pairs of objects of at least {share:g} % "
                  "judged" + (f" (the first {cap} pairs of the run)" if cap else "") + ", each "
                  "map made with every class of its photo given; (n): the pairs where the "
                  "metric is defined." + "".join(
                      f" {name}: {_QUANTUS_NOTES[name]}." for name in quantus["metrics"]
                      if name in _QUANTUS_NOTES)]
    if counts.get("pairs_small"):
        lines += ["", f"### Objects under {share:g} % of the photo", "", *header,
                  *_method_rows(report, "summary_small")]
        if quantus is not None and quantus["pairs_small"]:
            lines += ["", *_quantus_rows(report, "summary_small")]
    if not per_class:
        return "\n".join(lines) + "\n"
    keys = list(report["methods"])
    for part, title in (("per_class", "per class"),
                        ("per_class_small", f"per class, objects under {share:g} %")):
        classes = sorted({c for k in keys for c in report["methods"][k][part]})
        if not classes:
            continue
        labels = [report["methods"][k]["label"] for k in keys]
        for metric, (_, heading, up) in METRICS.items():
            lines += ["", f"### {heading}{'' if up else ' (lower is better)'}, {title}", "",
                      "| class | pairs | " + " | ".join(labels) + " |",
                      "|---|---|" + "---|" * len(keys)]
            for c in classes:
                first = next(report["methods"][k][part][c] for k in keys
                             if c in report["methods"][k][part])
                cells = []
                for k in keys:
                    row = report["methods"][k][part].get(c)
                    s = row[metric] if row else None
                    cell = _cell(s["mean"]) if s else "-"
                    if s and s["n"] != first["pairs"]:
                        cell += f" ({s['n']})"
                    cells.append(cell)
                lines.append(f"| {c} | {first['pairs']} | " + " | ".join(cells) + " |")
    if report["unnameable"]:
        lines += ["", "### Classes the model cannot name (not scored)", "",
                  "| class | photos |", "|---|---|"]
        lines += [f"| {c} | {n} |" for c, n in report["unnameable_counts"].items()]
    return "\n".join(lines) + "\n"


def per_pair_table(report: Mapping[str, Any], metric: str = "iou") -> str:
    """One row per (photo, class), one column per method, for ``metric``."""
    keys = list(report["methods"])
    lines = ["| photo | class | " + " | ".join(keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for i, pair in enumerate(report["pairs"]):
        cells = [_cell(report["methods"][k]["scores"][i][metric]) for k in keys]
        lines.append(f"| {pair['photo']} | {pair['class']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
