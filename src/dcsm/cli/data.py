"""``dcsm data synthetic`` and ``dcsm data check``: the data sets.

``dcsm data synthetic --out ROOT`` writes the generated VOC-layout set
(:mod:`dcsm.datasets.synthetic`); ``dcsm data check --data ROOT`` reads a VOC (and SBD) folder
and reports its splits, or says what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dcsm.cli.options import (
    Parser,
    add_progress_options,
    nonnegative_int,
    positive_int,
    progress_wanted,
)
from dcsm.errors import DcsmError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``data`` (``synthetic`` and ``check`` under it) to the ``dcsm`` command."""
    data = sub.add_parser("data", help="data sets: generate the synthetic set, check a VOC folder")
    dsub = data.add_subparsers(dest="data_command", required=True, parser_class=Parser)
    syn = dsub.add_parser("synthetic", help="write the generated multi-object set (VOC layout)")
    syn.add_argument("--out", required=True, type=Path, help="data root to write")
    syn.add_argument("--train", type=positive_int, default=480,
                     help="training images (%(default)s)")
    syn.add_argument("--val", type=positive_int, default=160,
                     help="validation images (%(default)s)")
    syn.add_argument("--size", type=positive_int, default=112, help="image side (%(default)s)")
    syn.add_argument("--seed", type=nonnegative_int, default=0, help="seed (%(default)s)")
    syn.add_argument("--void-border", type=nonnegative_int, default=0,
                     help="pixels of VOC's 255 void band on each side of object edges "
                          "(%(default)s)")
    add_progress_options(syn)
    syn.set_defaults(handler=run_synthetic)
    chk = dsub.add_parser("check", help="read a VOC 2012 (and SBD) folder and list its splits")
    chk.add_argument("--data", required=True, type=Path, help="folder holding VOCdevkit/VOC2012")
    chk.add_argument("--sbd", type=Path, default=None, help="SBD folder (benchmark_RELEASE)")
    chk.add_argument("--split", action="append", default=None,
                     help="split to read fully (repeatable; default: every split listed)")
    chk.set_defaults(handler=run_check)


def run_synthetic(args: argparse.Namespace) -> int:
    """``dcsm data synthetic``."""
    from dcsm.datasets.synthetic import SyntheticConfig, write_synthetic

    config = SyntheticConfig(args.train, args.val, args.size, args.seed, args.void_border)
    manifest = write_synthetic(args.out, config, progress=progress_wanted(args))
    images = manifest["images"]
    classes = manifest["classes"]
    if not (isinstance(images, dict) and isinstance(classes, list)):  # see write_synthetic
        raise DcsmError(f"'{args.out}': a synthetic manifest without image counts or classes")
    print(f"{args.out}: {images['train']} train and {images['val']} val images, classes "
          f"{', '.join(classes)}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    """``dcsm data check``."""
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
