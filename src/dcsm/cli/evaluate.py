"""``dcsm evaluate --data ROOT --split val --model checkpoint:DIR --out EVAL``: weakly
supervised segmentation of a split, the methods side by side (:mod:`dcsm.evaluation.compare`).

Resumable: a rerun into the same ``--out`` skips the images already scored with the same
settings (``--force`` starts over with other settings). Exit status: 0 when every image was
scored, 1 when some could not be (unreadable image or mask: listed in ``metrics.json``), 2 for
bad input or options, or a folder that cannot be written.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from dcsm.cli.options import (
    EXIT_FAILED,
    add_crf_options,
    add_grabcut_options,
    add_method_options,
    add_model_options,
    add_progress_options,
    crf_params_from_args,
    explainer_from_args,
    grabcut_params_from_args,
    names,
    positive_int,
    progress_wanted,
)
from dcsm.errors import DcsmError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``evaluate`` to the ``dcsm`` command's subparsers."""
    ev = sub.add_parser("evaluate", help="weakly supervised segmentation of a split: Simonyan + "
                                         "GrabCut against dcsm and its ablations")
    ev.add_argument("--data", required=True, type=Path, help="folder holding VOCdevkit/VOC2012")
    ev.add_argument("--split", default="val", help="split (default %(default)s)")
    ev.add_argument("--out", required=True, type=Path, help="output directory")
    add_model_options(ev)
    ev.set_defaults(model=None)
    add_method_options(ev)
    ev.add_argument("--oracle-labels", action="store_true",
                    help="candidates from the ground-truth image labels, not the model")
    ev.add_argument("--methods", type=names, default=None,
                    help="comma-separated methods (default: the paper's five; see the docs)")
    ev.add_argument("--single-layer", default=None,
                    help="layer of dcsm_single_layer (default: the middle one of the layers, "
                         "conv4_2 for VGG-16 and small_vgg)")
    ev.add_argument("--limit", type=positive_int, default=None, help="only the first N images")
    ev.add_argument("--threads", type=positive_int, default=None,
                    help="CPU threads of torch (default: torch's; 1 on a busy machine)")
    ev.add_argument("--force", action="store_true",
                    help="--out holds an evaluation with other settings: start it over with "
                         "these (a rerun with the same settings resumes it)")
    add_crf_options(ev)
    add_grabcut_options(ev)
    add_progress_options(ev)
    ev.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dcsm evaluate``."""
    from dcsm.datasets.voc import VOCDataset
    from dcsm.evaluation.compare import DEFAULT_METHODS, evaluate
    from dcsm.methods.registry import DEFAULT_METHOD
    from dcsm.pipeline.explainer import DistinctSaliency

    if args.model is None:
        raise DcsmError("dcsm evaluate needs --model, e.g. checkpoint:runs/synthetic")
    if args.method != DEFAULT_METHOD or args.no_subtract or args.classes.strip().lower() != "auto":
        raise DcsmError("dcsm evaluate runs every method itself (--methods); --method, "
                        "--no-subtract and --classes do not apply (candidates: the model's or "
                        "--oracle-labels)")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    data = VOCDataset(args.data)
    crf = crf_params_from_args(args)
    grabcut = grabcut_params_from_args(args)
    full = explainer_from_args(args)
    if not isinstance(full, DistinctSaliency):  # --method dcsm, checked above
        raise DcsmError(f"dcsm evaluate needs the dcsm method, got {type(full).__name__}")
    metrics = evaluate(data, args.split, full, args.out,
                       methods=args.methods or DEFAULT_METHODS, oracle=args.oracle_labels,
                       threshold=args.threshold, top_k=args.top_k, crf=crf, grabcut=grabcut,
                       single_layer=args.single_layer, limit=args.limit,
                       progress=progress_wanted(args), force=args.force)
    failed = metrics["settings"]["images_failed"]
    scored = metrics["settings"]["images"]
    note = f" ({scored} images scored, {failed} failed: see 'failures')" if failed else ""
    print(f"-> {args.out / 'metrics.json'}{note}")
    return EXIT_FAILED if failed else 0
