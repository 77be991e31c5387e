"""``dcsm models``: the models ``--model`` accepts."""

from __future__ import annotations

import argparse


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``models`` to the ``dcsm`` command's subparsers."""
    sub.add_parser("models", help="list the models").set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model: its name and what it is."""
    from dcsm.adapters import list_models

    rows = list_models()
    width = max(len(name) for name, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0
