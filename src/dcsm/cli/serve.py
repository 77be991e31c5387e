"""``dcsm serve``: the local web viewer (:mod:`dcsm.viewer`).

``dcsm serve [--port 8501] [--host 127.0.0.1] [--model NAME] [--weights W] [--device D]``
loads the model once and serves the page until Ctrl-C. It listens on 127.0.0.1 (this machine
only) unless ``--host`` says otherwise, and answers only requests addressed to it: ``localhost``,
``127.0.0.1``, ``[::1]``, the ``--host`` address, and the names given with ``--allow-host``
(:mod:`dcsm.viewer.guard`); uploads are capped at 20 MB. From another machine, reach it through
an SSH tunnel (``ssh -L 8501:localhost:8501 HOST``) rather than listening on 0.0.0.0. Without
the optional extra (Streamlit) it prints one line
naming what to install and exits with status 2, before loading anything. The page is a
Streamlit app (:mod:`dcsm.viewer.page`).
"""

from __future__ import annotations

import argparse
import errno
import socket
import sys

from dcsm.cli.options import add_model_options, number
from dcsm.errors import DcsmError


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``dcsm`` command's subparsers."""
    p = sub.add_parser("serve", help="a local web viewer: maps over the photo, per layer, "
                                     "segmentation, downloads (needs the 'viewer' extra)")
    p.add_argument("--port", type=number(int, lambda v: 1 <= v <= 65535, "a port from 1 to "
                                         "65535"), default=8501, help="default %(default)s")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default %(default)s: this machine only; "
                        "0.0.0.0 opens it to the network)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a further host name the page is reached by (a reverse proxy's); "
                        "requests for other names are refused (repeatable)")
    add_model_options(p)
    p.set_defaults(handler=run_serve)


def check_address(host: str, port: int) -> None:
    """A one-line :class:`DcsmError` if nothing can listen on ``host:port`` (the port taken, the
    host unknown or not this machine's), checked before the model loads."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise DcsmError(f"cannot listen on {host}: {reason}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        try:
            probe.bind(address)
        except OSError as exc:
            hint = "; choose another --port" if exc.errno == errno.EADDRINUSE else ""
            raise DcsmError(f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
                            ) from None


def run_serve(args: argparse.Namespace) -> int:
    """``dcsm serve``: check the extra and the address, load the model, serve the page."""
    from dcsm.viewer.app import launch, require_streamlit
    from dcsm.viewer.logic import Viewer

    require_streamlit()  # a one-line error naming the extra, before the model loads
    check_address(args.host, args.port)
    viewer = Viewer.from_name(args.model, weights=args.weights, device=args.device,
                              labels=getattr(args, "labels", None))
    print(f"dcsm: viewer of {viewer.model_name} at http://{args.host}:{args.port} "
          "(Ctrl-C stops it)", file=sys.stderr, flush=True)
    launch(viewer, host=args.host, port=args.port, allow_hosts=args.allow_host)
    return 0
