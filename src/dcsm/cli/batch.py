"""``dcsm batch INPUT --out DIR``: every image of a folder or list, resumable and sharded.

Takes every option of ``dcsm explain`` and, with ``--segment`` or ``--segmenter``, of
``dcsm segment``; the options are the same functions' (:mod:`dcsm.cli.options`), so the
commands cannot drift apart. The work is :mod:`dcsm.batch`'s. Exit status: 0 when every image
is done, 1 when any failed (recorded in the manifest), 2 for bad input or options.
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
    add_pictures_option,
    add_progress_options,
    explainer_from_args,
    max_side,
    method_for,
    nonnegative_int,
    positive_int,
    segmenter_params,
)
from dcsm.errors import DcsmError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` subcommand to ``dcsm``'s subparsers."""
    from dcsm.segmentation import SEGMENTERS

    p = sub.add_parser(
        "batch", help="maps (and segmentations) for a folder or list of images: resumable, "
                      "sharded over processes/GPUs with torchrun")
    p.add_argument("input", metavar="INPUT",
                   help="a folder of images (searched recursively), a text file of image paths "
                        "(one per line), or one image")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: DIR/<stem>/ per image, DIR/.dcsm-batch/ the manifest")
    add_model_options(p)
    p.set_defaults(device="auto")  # cuda:<LOCAL_RANK> when CUDA is there, else cpu
    add_method_options(p)
    p.set_defaults(method=None)  # dcsm; simonyan for --segmenter grabcut, as `dcsm segment`
    p.add_argument("--per-layer", action="store_true",
                   help="also write layers.png with the single-layer maps (paper Fig. 2)")
    add_pictures_option(p)
    g = p.add_argument_group("segmentation (as `dcsm segment`)")
    g.add_argument("--segment", action="store_true",
                   help="also segment each image (dense CRF unless --segmenter says otherwise)")
    g.add_argument("--segmenter", choices=list(SEGMENTERS), default=None,
                   help="segment with this (implies --segment)")
    add_crf_options(p)
    add_grabcut_options(p)
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=positive_int, default=1, metavar="N",
                   help="explain up to N images of one working-resolution size together "
                        "(one forward per scale for all; same maps); default %(default)s")
    r.add_argument("--workers", type=nonnegative_int, default=2,
                   help="processes decoding images ahead of the model (0: none), default "
                        "%(default)s")
    r.add_argument("--writers", type=nonnegative_int, default=None, metavar="N",
                   help="processes that segment and write the outputs while the model explains "
                        "the next images (0: in turn, in this process; default: with the "
                        "model on a GPU one per spare core, 1 to 8; on the CPU 1 when "
                        "--threads leaves a core free, else 0)")
    r.add_argument("--force", action="store_true",
                   help="DIR holds outputs made with other settings: redo them with these")
    r.add_argument("--threads", type=nonnegative_int, default=0,
                   help="torch CPU threads per process (0: torch's choice; torchrun sets "
                        "OMP_NUM_THREADS=1 unless you set it)")
    r.add_argument("--rank", type=nonnegative_int, default=None,
                   help="this process's shard (default: $RANK, else 0)")
    r.add_argument("--world-size", type=nonnegative_int, default=None,
                   help="number of shards (default: $WORLD_SIZE, else 1)")
    r.add_argument("--no-dist", action="store_true",
                   help="do not join torch.distributed for the final summary, even under "
                        "torchrun")
    add_progress_options(r, "on a terminal, rank 0")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run ``dcsm batch``; the exit status (DcsmError propagates: status 2)."""
    from dcsm.batch import runner
    from dcsm.batch.inputs import discover
    from dcsm.batch.shard import Group, from_env, pick_device

    rank = from_env(args.rank, args.world_size)
    segmenter = args.segmenter or ("crf" if args.segment else None)
    params = segmenter_params(args, segmenter)
    args.method = method_for(args, segmenter)
    source = Path(args.input)
    if source.is_dir() and source.resolve() == args.out.resolve():
        raise DcsmError("--out must not be the input folder itself; use a folder beside it")
    if args.threads:
        torch.set_num_threads(args.threads)
    items = discover(args.input, exclude=args.out)
    args.device = pick_device(args.device, rank)
    if args.device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.set_device(torch.device(args.device))
    torch.manual_seed(0)  # 'random' weights: the same in every rank and every rerun
    explainer = explainer_from_args(args)
    options = runner.BatchOptions(
        classes=args.classes, top_k=args.top_k, threshold=args.threshold,
        per_layer=args.per_layer, segmenter=segmenter, segment_params=params,
        workers=args.workers, force=args.force, progress=args.progress,
        max_side=max_side(args), batch_size=args.batch_size, pictures=args.pictures,
        writers=args.writers)
    report = runner.run(explainer, items, args.out, options, rank)
    group = Group(rank, enable=not args.no_dist)
    try:
        report = runner.combine(report, group)
        who = "" if report.ranks > 1 or rank.world_size == 1 else \
            f" (rank {rank.rank} of {rank.world_size})"
        if rank.rank == 0 or report.ranks == 1:
            rate = "img/s over all ranks" if report.ranks > 1 else "img/s"
            print(f"dcsm batch{who}: {report.assigned} of {report.total} images: "
                  f"{report.done} done, {report.skipped} already done, {report.failed} failed, "
                  f"{report.seconds:.1f} s ({report.images_per_second:.2f} {rate}); manifest "
                  f"{report.manifest.parent}", flush=True)
        group.barrier()  # torchrun stops every rank once one exits non-zero: exit together
    finally:
        group.close()
    return EXIT_FAILED if report.failed else 0
