"""``dcsm bench gridpg``: the grid pointing game from the command line.

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
    add_model_options,
    finite,
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
