"""``dcsm batch INPUT --out DIR``: every image of a folder or list, resumable and sharded.

Registered by :func:`dcsm.cli.build_parser`. Takes every option of ``dcsm explain`` and, with
``--segment`` or ``--segmenter``, of ``dcsm segment``; the options are those functions' own
(:func:`dcsm.cli.add_model_options` and the rest), so the two commands cannot drift apart.
Exit status: 0 when every image is done, 1 when any failed (recorded in the manifest), 2 for
bad input or options.
"""

from __future__ import annotations

import argparse
from pathlib import Path

EXIT_FAILED = 1


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def add_batch_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to ``dcsm``'s subparsers."""
    from dcsm import cli
    from dcsm.segmentation import SEGMENTERS

    p = sub.add_parser(
        "batch", help="maps (and segmentations) for a folder or list of images: resumable, "
                      "sharded over processes/GPUs with torchrun")
    p.add_argument("input", metavar="INPUT",
                   help="a folder of images (searched recursively), a text file of image paths "
                        "(one per line), or one image")
    p.add_argument("--out", required=True, type=Path,
                   help="output folder: DIR/<stem>/ per image, DIR/.dcsm-batch/ the manifest")
    cli.add_model_options(p)
    p.set_defaults(device="auto")  # cuda:<LOCAL_RANK> when CUDA is there, else cpu
    cli.add_method_options(p)
    p.set_defaults(method=None)  # dcsm; simonyan for --segmenter grabcut, as `dcsm segment`
    p.add_argument("--per-layer", action="store_true",
                   help="also write layers.png with the single-layer maps (paper Fig. 2)")
    g = p.add_argument_group("segmentation (as `dcsm segment`)")
    g.add_argument("--segment", action="store_true",
                   help="also segment each image (dense CRF unless --segmenter says otherwise)")
    g.add_argument("--segmenter", choices=list(SEGMENTERS), default=None,
                   help="segment with this (implies --segment)")
    cli.add_crf_options(p)
    cli.add_grabcut_options(p)
    r = p.add_argument_group("running")
    r.add_argument("--batch-size", type=cli._positive_int, default=1, metavar="N",
                   help="explain up to N images of one working-resolution size together "
                        "(one forward per scale for all; same maps); default %(default)s")
    r.add_argument("--workers", type=_count, default=2,
                   help="processes decoding images ahead of the model (0: none), default "
                        "%(default)s")
    r.add_argument("--force", action="store_true",
                   help="DIR holds outputs made with other settings: redo them with these")
    r.add_argument("--threads", type=_count, default=0,
                   help="torch CPU threads per process (0: torch's choice; torchrun sets "
                        "OMP_NUM_THREADS=1 unless you set it)")
    r.add_argument("--rank", type=_count, default=None,
                   help="this process's shard (default: $RANK, else 0)")
    r.add_argument("--world-size", type=_count, default=None,
                   help="number of shards (default: $WORLD_SIZE, else 1)")
    r.add_argument("--no-dist", action="store_true",
                   help="do not join torch.distributed for the final summary, even under "
                        "torchrun")
    bar = r.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_const", const=True,
                     default=None, help="show the progress bar (default: on a terminal, rank 0)")
    bar.add_argument("--no-progress", dest="progress", action="store_const", const=False)
    return p


def run_batch(args: argparse.Namespace) -> int:
    """Run ``dcsm batch``; the exit status (DcsmError propagates: status 2)."""
    import torch

    from dcsm import cli
    from dcsm.batch.inputs import discover
    from dcsm.batch.runner import BatchOptions, combine, run
    from dcsm.batch.shard import Group, from_env, pick_device
    from dcsm.errors import DcsmError

    rank = from_env(args.rank, args.world_size)
    segmenter = args.segmenter or ("crf" if args.segment else None)
    params: dict[str, object] = {}
    if segmenter == "crf":
        params = cli.crf_params_from_args(args)
    elif segmenter == "grabcut":
        params = cli.grabcut_params_from_args(args)
    if args.method is None:
        args.method = "simonyan" if segmenter == "grabcut" else "dcsm"
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
    explainer = cli.explainer_from_args(args)
    options = BatchOptions(classes=args.classes, top_k=args.top_k, threshold=args.threshold,
                           per_layer=args.per_layer, segmenter=segmenter,
                           segment_params=params, workers=args.workers, force=args.force,
                           progress=args.progress, max_side=cli.max_side(args),
                           batch_size=args.batch_size)
    report = run(explainer, items, args.out, options, rank)
    group = Group(rank, enable=not args.no_dist)
    try:
        report = combine(report, group)
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
