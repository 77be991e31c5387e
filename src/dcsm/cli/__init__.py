"""The ``dcsm`` command: :func:`main` and :func:`build_parser`.

One module per command, each with ``add_parsers(subparsers)`` (which sets the ``handler`` the
command runs) and the handler itself; what they share is :mod:`dcsm.cli.options`:

* :mod:`dcsm.cli.models`: ``dcsm models``, the models ``--model`` accepts.
* :mod:`dcsm.cli.explain`: ``dcsm explain``, ``dcsm segment`` and ``dcsm figure`` (one code
  path: the images checked first, the maps, the segmentation, the files written atomically).
* :mod:`dcsm.cli.batch`: ``dcsm batch``, folders and lists, resumable, sharded (torchrun).
* :mod:`dcsm.cli.data`: ``dcsm data synthetic`` and ``dcsm data check``.
* :mod:`dcsm.cli.train`: ``dcsm train``.
* :mod:`dcsm.cli.evaluate`: ``dcsm evaluate``, the segmentation methods on a labelled split.
* :mod:`dcsm.cli.bench`: ``dcsm bench gridpg``, the grid pointing game.
* :mod:`dcsm.cli.serve`: ``dcsm serve``, the local web viewer (the ``viewer`` extra).

The dependencies go one way: this package imports the library (:mod:`dcsm.batch`,
:mod:`dcsm.training`, :mod:`dcsm.evaluation`, :mod:`dcsm.bench`, the API), never the other way.
Each command's handler imports the tools it runs (training, benchmarks, data sets, the
viewer, matplotlib's writers) when it runs, not when the parser is built: ``dcsm --help`` and
one command do not pay for the others.

Bad input gets one line on stderr (``dcsm: error: ...``, or argparse's ``dcsm CMD: error: ...``
for bad options) and exit status 2, never a traceback; an image's output directory appears
only once it is complete. Runs that finish but could not do every image (``batch``,
``evaluate``) exit with status 1. Ctrl-C stops a command with status 130, SIGTERM (``docker
stop``, a job scheduler) the same way with status 143: temporary outputs removed, worker
processes stopped, resumable runs left resumable (:mod:`dcsm.processes`). ``DCSM_DEBUG=1``
shows the traceback of unexpected errors.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Sequence

from dcsm.cli import batch, bench, data, evaluate, explain, models, serve, train
from dcsm.cli.options import EXIT_USAGE, Parser
from dcsm.errors import DcsmError, DcsmWarning, first_line
from dcsm.processes import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_as_interrupt

__all__ = ["COMMANDS", "EXIT_USAGE", "build_parser", "main"]

#: The command modules, in the order ``dcsm --help`` lists them.
COMMANDS = (models, explain, batch, data, train, evaluate, bench, serve)


def build_parser() -> Parser:
    """The argument parser of the ``dcsm`` command."""
    parser = Parser(prog="dcsm", description="Distinct class saliency maps (Shimoda & Yanai).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add_parsers(sub)
    return parser


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """dcsm's own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, DcsmWarning):
        print(f"dcsm: warning: {' '.join(str(message).split())}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def _os_error(exc: OSError) -> str:
    """An operating system error (a full disk, a missing permission) in one line."""
    reason = exc.strerror or first_line(exc)
    return f"{reason}: '{exc.filename}'" if exc.filename else reason


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with sigterm_as_interrupt(), warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", DcsmWarning)
            return int(args.handler(args))
    except DcsmError as exc:
        print(f"dcsm: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:  # SIGTERM: the same clean-up as Ctrl-C
        print("dcsm: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("dcsm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("dcsm: error: out of memory; try fewer or smaller scales or images",
              file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dcsm models | head -1`: the reader has gone; say nothing
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # what no library call turned into a DcsmError: still one line
        if os.environ.get("DCSM_DEBUG"):
            raise
        print(f"dcsm: error: {_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except RuntimeError as exc:
        if os.environ.get("DCSM_DEBUG"):
            raise
        print(f"dcsm: error: {first_line(exc)} (set DCSM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1
