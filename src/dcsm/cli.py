"""The ``dcsm`` command.

``dcsm models`` lists the models; ``dcsm explain IMAGE... --out DIR`` writes, for each image,
``DIR/<image stem>/``: ``maps.npz`` (one float32 (H, W) map in [0, 1] per class, keyed by class
name), ``summary.json``, ``<class>.png`` (the map over the image), ``figure.png`` (the image and
every map side by side) and, with ``--per-layer``, ``layers.png`` (single-layer maps).

Bad input gets one line on stderr and exit status 2; an image's output directory appears only
once it is complete.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from dcsm.errors import DcsmError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,1.2, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _names(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options that choose and place the model."""
    from dcsm.adapters import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model name (see `dcsm models`), default %(default)s")
    p.add_argument("--weights", default=None,
                   help="weights: a local file, a torchvision weight name, or 'random'")
    p.add_argument("--device", default="cpu", help="torch device, default %(default)s")


def add_method_options(p: argparse.ArgumentParser) -> None:
    """Options of the saliency method and of candidate selection."""
    from dcsm.baselines import METHODS
    from dcsm.layer_maps import UPSAMPLE_ORDERS
    from dcsm.presets import PRESETS

    p.add_argument("--classes", default="auto",
                   help="'auto' (from the model's scores) or comma-separated names or indices")
    p.add_argument("--top-k", type=_positive_int, default=None,
                   help="at most this many auto candidates (softmax default 2)")
    p.add_argument("--threshold", type=_finite, default=None,
                   help="score threshold for auto candidates (sigmoid default 0.5)")
    p.add_argument("--method", choices=METHODS, default="dcsm")
    p.add_argument("--preset", choices=list(PRESETS), default="paper")
    p.add_argument("--scales", type=_floats, default=None,
                   help="comma-separated scale ratios (paper: 1,1.2,1.4,1.6)")
    p.add_argument("--layers", type=_names, default=None,
                   help="comma-separated layer names (default: the model's set)")
    p.add_argument("--backprop", choices=["guided", "plain"], default="guided")
    p.add_argument("--no-subtract", action="store_true",
                   help="skip the class contrast (Eq. 2)")
    p.add_argument("--alpha", type=_finite, default=None, help="tanh saturation (3)")
    p.add_argument("--upsample", choices=UPSAMPLE_ORDERS, default=None,
                   help="max over channels then upsample (default) or the reverse")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``dcsm`` command."""
    parser = _Parser(prog="dcsm", description="Distinct class saliency maps (Shimoda & Yanai).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    sub.add_parser("models", help="list the models")
    ex = sub.add_parser("explain", help="class saliency maps for images")
    ex.add_argument("images", nargs="+", metavar="IMAGE")
    ex.add_argument("--out", required=True, type=Path, help="output directory")
    add_model_options(ex)
    add_method_options(ex)
    ex.add_argument("--per-layer", action="store_true",
                    help="also write layers.png with the single-layer maps (paper Fig. 2)")
    return parser


def _cmd_models() -> int:
    from dcsm.adapters import list_models

    rows = list_models()
    width = max(len(name) for name, _ in rows)
    for name, desc in rows:
        print(f"{name:<{width}}  {desc}")
    return 0


def explainer_from_args(args: argparse.Namespace):  # noqa: ANN201 - returns an Explainer
    """Load the model and build the explainer the options describe."""
    from dcsm.adapters import load_model
    from dcsm.baselines import make_explainer

    adapter = load_model(args.model, weights=args.weights, device=args.device)
    return make_explainer(adapter, args.method, preset=args.preset, scales=args.scales,
                          layers=args.layers, backprop=args.backprop, alpha=args.alpha,
                          subtract=not args.no_subtract, upsample=args.upsample)


def write_explanation(result, directory: Path, image_path: str | None = None) -> None:  # noqa: ANN001
    """Write maps.npz, summary.json, per-class PNGs and figures into ``directory``."""
    from dcsm.io import safe_filename, save_figure, save_json, save_npz, save_png
    from dcsm.viz import layers_figure, maps_figure, overlay

    save_npz(directory / "maps.npz", result.maps)
    summary = result.summary()
    if image_path is not None:
        summary = {"image": image_path, **summary}
    used: set[str] = set()
    files = {}
    for name, m in result.maps.items():
        stem = safe_filename(name)
        while stem in used or stem in ("figure", "layers", "maps", "summary"):
            stem += "_"
        used.add(stem)
        files[name] = f"{stem}.png"
        save_png(directory / files[name], overlay(result.image, m))
    summary["map_images"] = files
    save_json(directory / "summary.json", summary)
    titles = {c.name: f"{c.name} ({c.score:.2f})" for c in result.candidates}
    fig = maps_figure(result.image, result.maps, titles)
    save_figure(directory / "figure.png", fig)
    if result.layer_maps:
        save_figure(directory / "layers.png",
                    layers_figure(result.image, result.layer_maps, result.maps))


def _stems(paths: Sequence[str]) -> list[str]:
    stems = [Path(p).stem for p in paths]
    seen: dict[str, str] = {}
    for path, stem in zip(paths, stems, strict=True):
        if stem in seen:
            raise DcsmError(f"images '{seen[stem]}' and '{path}' would share the output "
                            f"directory '{stem}'")
        seen[stem] = path
    return stems


def _cmd_explain(args: argparse.Namespace) -> int:
    from dcsm.io import atomic_dir, load_image

    stems = _stems(args.images)
    images = [load_image(p) for p in args.images]  # every input checked before any work
    explainer = explainer_from_args(args)
    for path, stem, image in zip(args.images, stems, images, strict=True):
        result = explainer.explain(image, classes=args.classes, top_k=args.top_k,
                                   threshold=args.threshold, per_layer=args.per_layer)
        final = args.out / stem
        with atomic_dir(final) as tmp:
            write_explanation(result, tmp, path)
        listed = ", ".join(f"{c.name} {c.score:.3f}" for c in result.candidates)
        print(f"{path}: {listed} -> {final}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        if args.command == "models":
            return _cmd_models()
        return _cmd_explain(args)
    except DcsmError as exc:
        print(f"dcsm: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dcsm: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("dcsm: error: out of memory; try fewer or smaller scales or images",
              file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if os.environ.get("DCSM_DEBUG"):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        print(f"dcsm: error: {first} (set DCSM_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
