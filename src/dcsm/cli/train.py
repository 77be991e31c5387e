"""The commands ``dcsm data``, ``dcsm train`` and ``dcsm evaluate``.

``dcsm data synthetic --out ROOT`` writes the generated VOC-layout set
(:mod:`dcsm.datasets.synthetic`); ``dcsm data check --data ROOT`` reads a VOC (and SBD) folder
and reports its splits, or says what is missing. ``dcsm train --data ROOT --out DIR`` trains a
multi-label classifier (:mod:`dcsm.training.trainer`); ``dcsm evaluate --data ROOT --split val
--model checkpoint:DIR --out EVAL`` compares the segmentation methods
(:mod:`dcsm.evaluation.compare`).

This module only imports argparse at load time; :mod:`dcsm.cli` registers the parsers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

COMMANDS = ("data", "train", "evaluate")


def _cli():  # noqa: ANN202 - the dcsm.cli module
    from dcsm import cli

    return cli


def _nonnegative(text: str) -> int:
    return _cli()._nonnegative_int(text)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``data``, ``train`` and ``evaluate`` to the ``dcsm`` command's subparsers."""
    cli = _cli()
    positive = cli._positive_int
    positive_float = cli._positive_float

    data = sub.add_parser("data", help="data sets: generate the synthetic set, check a VOC folder")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    syn = dsub.add_parser("synthetic", help="write the generated multi-object set (VOC layout)")
    syn.add_argument("--out", required=True, type=Path, help="data root to write")
    syn.add_argument("--train", type=positive, default=480, help="training images (%(default)s)")
    syn.add_argument("--val", type=positive, default=160, help="validation images (%(default)s)")
    syn.add_argument("--size", type=positive, default=112, help="image side (%(default)s)")
    syn.add_argument("--seed", type=_nonnegative, default=0, help="seed (%(default)s)")
    syn.add_argument("--void-border", type=_nonnegative, default=0,
                     help="pixels of VOC's 255 void band on each side of object edges "
                          "(%(default)s)")
    _progress_options(syn)
    chk = dsub.add_parser("check", help="read a VOC 2012 (and SBD) folder and list its splits")
    chk.add_argument("--data", required=True, type=Path, help="folder holding VOCdevkit/VOC2012")
    chk.add_argument("--sbd", type=Path, default=None, help="SBD folder (benchmark_RELEASE)")
    chk.add_argument("--split", action="append", default=None,
                     help="split to read fully (repeatable; default: every split listed)")

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
    tr.add_argument("--epochs", type=positive, default=None,
                    help="default: 20 for vgg16, 30 for small_vgg")
    tr.add_argument("--batch-size", type=positive, default=None, help="default: 16")
    tr.add_argument("--optimizer", choices=["sgd", "adam"], default=None,
                    help="default: sgd for vgg16, adam for small_vgg")
    tr.add_argument("--lr", type=positive_float, default=None,
                    help="learning rate of the new layers (default: 0.001), cosine decay")
    tr.add_argument("--pretrained-lr-factor", type=cli._finite, default=None,
                    help="pretrained layers learn at lr times this (vgg16: 0.1)")
    tr.add_argument("--momentum", type=cli._finite, default=0.9, help="SGD momentum")
    tr.add_argument("--weight-decay", type=cli._finite, default=None,
                    help="default: 0.0005 for vgg16, 0.0001 for small_vgg")
    tr.add_argument("--min-size", type=positive, default=None,
                    help="smallest square side of random resizing (vgg16 256, small_vgg 80)")
    tr.add_argument("--max-size", type=positive, default=None,
                    help="largest square side of random resizing (vgg16 448, small_vgg 160)")
    tr.add_argument("--size-step", type=positive, default=None,
                    help="step between sides (vgg16 32, small_vgg 16)")
    tr.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    tr.add_argument("--seed", type=_nonnegative, default=0)
    tr.add_argument("--resume", action="store_true", help="continue the run in --out")
    tr.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    tr.add_argument("--threads", type=positive, default=None,
                    help="CPU threads of torch (default: torch's; 1 on a busy machine)")
    tr.add_argument("--workers", type=_nonnegative, default=None,
                    help="data-loader workers (default: up to 8 on a GPU, 0 on a CPU)")
    amp = tr.add_mutually_exclusive_group()
    amp.add_argument("--amp", dest="amp", action="store_true", default=None,
                     help="mixed precision (default on a GPU)")
    amp.add_argument("--no-amp", dest="amp", action="store_false")
    tr.add_argument("--checkpoint-every", type=_nonnegative, default=0,
                    help="also save last.pt every N iterations (0: each epoch only)")
    tr.add_argument("--max-iterations", type=positive, default=None,
                    help="stop (and save) after this many iterations in all")
    _progress_options(tr)

    ev = sub.add_parser("evaluate", help="weakly supervised segmentation of a split: Simonyan + "
                                         "GrabCut against dcsm and its ablations")
    ev.add_argument("--data", required=True, type=Path, help="folder holding VOCdevkit/VOC2012")
    ev.add_argument("--split", default="val", help="split (default %(default)s)")
    ev.add_argument("--out", required=True, type=Path, help="output directory")
    cli.add_model_options(ev)
    ev.set_defaults(model=None)
    cli.add_method_options(ev)
    ev.add_argument("--oracle-labels", action="store_true",
                    help="candidates from the ground-truth image labels, not the model")
    ev.add_argument("--methods", type=cli._names, default=None,
                    help="comma-separated methods (default: the paper's five; see the docs)")
    ev.add_argument("--single-layer", default=None,
                    help="layer of dcsm_single_layer (default: the middle one of the layers, "
                         "conv4_2 for VGG-16 and small_vgg)")
    ev.add_argument("--limit", type=positive, default=None, help="only the first N images")
    ev.add_argument("--threads", type=positive, default=None,
                    help="CPU threads of torch (default: torch's; 1 on a busy machine)")
    cli.add_crf_options(ev)
    cli.add_grabcut_options(ev)
    _progress_options(ev)


def _progress_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_true", default=None,
                   help="progress bar (default: on a terminal)")
    g.add_argument("--no-progress", dest="progress", action="store_false")


def _progress(args: argparse.Namespace) -> bool:
    import sys

    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def run(args: argparse.Namespace) -> int:
    """Run ``dcsm data``, ``dcsm train`` or ``dcsm evaluate``; returns the exit status."""
    if args.command == "data":
        return _data(args)
    if args.command == "train":
        return _train(args)
    return _evaluate(args)


def _data(args: argparse.Namespace) -> int:
    if args.data_command == "synthetic":
        from dcsm.datasets.synthetic import SyntheticConfig, write_synthetic

        config = SyntheticConfig(args.train, args.val, args.size, args.seed, args.void_border)
        manifest = write_synthetic(args.out, config, progress=_progress(args))
        print(f"{args.out}: {manifest['images']['train']} train and "  # type: ignore[index]
              f"{manifest['images']['val']} val images, classes "  # type: ignore[index]
              f"{', '.join(manifest['classes'])}")  # type: ignore[arg-type]
        return 0
    from dcsm.datasets.voc import VOCDataset

    data = VOCDataset(args.data, args.sbd)
    splits = args.split or data.splits()
    print(f"{data.root}: {data.num_classes} classes ({', '.join(data.class_names)})")
    for split in splits:
        items = data.labelled_items(split)
        objects = sum(len(i.labels) for i in items)
        with_masks = sum(i.mask is not None for i in items)
        print(f"  {split}: {len(items)} images, {with_masks} with masks, {objects} image-level "
              "labels")
    return 0


def _train(args: argparse.Namespace) -> int:
    from dcsm.errors import DcsmError
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
                         max_iterations=args.max_iterations, progress=_progress(args))
    data = args.data
    if data is None:
        if not args.resume:
            raise DcsmError("dcsm train needs --data (a folder holding VOCdevkit/VOC2012)")
        from dcsm.training.trainer import LAST, load_checkpoint

        data = load_checkpoint(args.out / LAST).get("data")
    train(data, args.out, config, options, resume=args.resume, sbd=args.sbd)
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dcsm.datasets.voc import VOCDataset
    from dcsm.errors import DcsmError
    from dcsm.evaluation.compare import DEFAULT_METHODS, evaluate

    cli = _cli()
    if args.model is None:
        raise DcsmError("dcsm evaluate needs --model, e.g. checkpoint:runs/synthetic")
    if args.method != "dcsm" or args.no_subtract or args.classes.strip().lower() != "auto":
        raise DcsmError("dcsm evaluate runs every method itself (--methods); --method, "
                        "--no-subtract and --classes do not apply (candidates: the model's or "
                        "--oracle-labels)")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    data = VOCDataset(args.data)
    crf = cli.crf_params_from_args(args)
    grabcut = cli.grabcut_params_from_args(args)
    full = cli.explainer_from_args(args)
    evaluate(data, args.split, full, args.out, methods=args.methods or DEFAULT_METHODS,
             oracle=args.oracle_labels, threshold=args.threshold, top_k=args.top_k, crf=crf,
             grabcut=grabcut, single_layer=args.single_layer, limit=args.limit,
             progress=_progress(args))
    print(f"-> {args.out / 'metrics.json'}")
    return 0
