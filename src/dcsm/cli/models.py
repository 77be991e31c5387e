"""``dcsm models``: the models ``--model`` accepts; ``dcsm models --labels voc``: the classes of
a label set as groups of ImageNet classes."""

from __future__ import annotations

import argparse

from dcsm.cli.options import LABELS


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``dcsm`` command's subparsers."""
    p = sub.add_parser("models", help="list the models (or a label set's classes)")
    p.add_argument("--labels", choices=[n for n in LABELS if n != "imagenet"], default=None,
                   help="list this label set's classes and the ImageNet classes each groups")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model: its name and what it is; or per class of ``--labels``."""
    if getattr(args, "labels", None):
        from dcsm.pipeline.adapters.groups import describe

        rows = describe(args.labels)
    else:
        from dcsm.pipeline.adapters import list_models

        rows = list_models()
    width = max(len(name) for name, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0
