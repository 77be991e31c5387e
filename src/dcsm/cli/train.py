"""``dcsm train --data ROOT --out DIR``: train a multi-label classifier
(:mod:`dcsm.training.trainer`); ``--resume`` continues the run in ``DIR``."""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsm.cli.options import (
    add_progress_options,
    finite,
    nonnegative_int,
    positive_float,
    positive_int,
    progress_wanted,
)
from dcsm.errors import DcsmError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` to the ``dcsm`` command's subparsers."""
    tr = sub.add_parser("train", help="train a multi-label classifier (sigmoid BCE, global max "
                                      "pooling, random resizing)")
    tr.add_argument("--data", type=Path, default=None,
                    help="folder holding VOCdevkit/VOC2012 (on --resume: the run's own)")
    tr.add_argument("--out", required=True, type=Path, help="run directory (checkpoints)")
    tr.add_argument("--sbd", type=Path, default=None,
                    help="SBD folder, for image-level labels (train_aug)")
    tr.add_argument("--backbone", choices=["small_vgg", "vgg16"], default="small_vgg",
                    help="network (default %(default)s; vgg16 is the paper's)")
    tr.add_argument("--weights", default=None,
                    help="vgg16's ImageNet weights: a local state-dict file or a torchvision "
                         "name (DEFAULT: downloads), or 'random'")
    tr.add_argument("--train-split", default="train",
                    help="training split (default %(default)s; train_aug with --sbd)")
    tr.add_argument("--val-split", default="val", help="validation split, or 'none'")
    tr.add_argument("--epochs", type=positive_int, default=None,
                    help="default: 20 for vgg16, 30 for small_vgg")
    tr.add_argument("--batch-size", type=positive_int, default=None, help="default: 16")
    tr.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                    help="default: sgd for vgg16, adam for small_vgg")
    tr.add_argument("--lr", type=positive_float, default=None,
                    help="learning rate of the new layers (default: 0.001), cosine decay")
    tr.add_argument("--pretrained-lr-factor", type=finite, default=None,
                    help="pretrained layers learn at lr times this (vgg16: 0.1)")
    tr.add_argument("--momentum", type=finite, default=0.9, help="SGD momentum")
    tr.add_argument("--weight-decay", type=finite, default=None,
                    help="default: 0.0005 for vgg16, 0.0001 for small_vgg")
    tr.add_argument("--min-size", type=positive_int, default=None,
                    help="smallest square side of random resizing (vgg16 256, small_vgg 80)")
    tr.add_argument("--max-size", type=positive_int, default=None,
                    help="largest square side of random resizing (vgg16 448, small_vgg 160)")
    tr.add_argument("--size-step", type=positive_int, default=None,
                    help="step between sides (vgg16 32, small_vgg 16)")
    tr.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    tr.add_argument("--seed", type=nonnegative_int, default=0)
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    tr.add_argument("--threads", type=positive_int, default=None,
                    help="CPU threads of torch (default: torch's; 1 on a busy machine)")
    tr.add_argument("--workers", type=nonnegative_int, default=None,
                    help="data-loader workers (default: up to 8 on a GPU, 0 on a CPU)")
    amp = tr.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="mixed precision (default on a GPU)")
    amp.add_argument("--no-amp", dest="amp", action="store_false")
    tr.add_argument("--checkpoint-every", type=nonnegative_int, default=0,
                    help="also save last.pt every N iterations (0: each epoch only)")
    tr.add_argument("--max-iterations", type=positive_int, default=None,
                    help="stop (and save) after this many iterations in all")
    add_progress_options(tr)
    tr.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """``dcsm train``."""
    from dcsm.training.trainer import TrainConfig, train

    val_split = None if args.val_split.lower() == "none" else args.val_split
    config = TrainConfig(
        backbone=args.backbone, weights=args.weights, train_split=args.train_split,
        val_split=val_split, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, pretrained_lr_factor=args.pretrained_lr_factor,
        momentum=args.momentum, weight_decay=args.weight_decay, min_size=args.min_size,
        max_size=args.max_size, size_step=args.size_step, flip=not args.no_flip,
        seed=args.seed)
    from dcsm.training.trainer import RunOptions

    options = RunOptions(device=args.device, threads=args.threads, workers=args.workers,
                         amp=args.amp, checkpoint_every=args.checkpoint_every,
                         max_iterations=args.max_iterations, progress=progress_wanted(args))
    data = args.data
    if data is None:
        if not args.resume:
            raise DcsmError("dcsm train needs --data (a folder holding VOCdevkit/VOC2012)")
        from dcsm.pipeline.adapters.checkpoint import LAST, load_checkpoint

        data = load_checkpoint(args.out / LAST).get("data")
    train(data, args.out, config, options, resume=args.resume, sbd=args.sbd)
    return 0
