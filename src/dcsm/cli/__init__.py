"""The ``dcsm`` command.

``dcsm models`` lists the models; ``dcsm explain IMAGE... --out DIR`` writes, for each image,
``DIR/<image stem>/``: ``maps.npz`` (one float32 (H, W) map in [0, 1] per class, keyed by class
name), ``summary.json``, ``<class>.png`` (the map over the image), ``figure.png`` (the image and
every map side by side) and, with ``--per-layer``, ``layers.png`` (single-layer maps).

``dcsm segment IMAGE... --out DIR`` writes the same plus ``labels.png`` (VOC-palette PNG, 0
background, v the v-th candidate of ``summary.json``), ``masks.npz`` (one bool array per class)
and ``segmentation.png``, and adds a ``segmentation`` entry to ``summary.json``; the segmenter is
a dense CRF on the maps (``--segmenter crf``, maps ``--method dcsm`` by default) or Simonyan et
al.'s GrabCut (``--segmenter grabcut``, maps ``--method simonyan`` by default).
``dcsm figure IMAGE --out FILE`` draws the paper's Fig. 1 for the image.

Bad input gets one line on stderr and exit status 2; an image's output directory appears only
once it is complete.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dcsm.errors import DcsmError, DcsmWarning, first_line

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


def _number(cast: type, test: Callable[[float], bool] | None = None,
            wanted: str = "") -> Callable[[str], Any]:
    """An argparse type: ``cast(text)``, finite and passing ``test`` (else "expected wanted")."""
    kind = "an integer" if cast is int else "a number"

    def parse(text: str) -> Any:  # noqa: ANN401 - int or float, as cast
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
        if test is not None and not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


_positive_int = _number(int, lambda v: v >= 1, "an integer >= 1")
_nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_finite = _number(float)
_positive_float = _number(float, lambda v: v > 0, "a positive number")
_nonnegative_float = _number(float, lambda v: v >= 0, "a number >= 0")
_fraction = _number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")


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
    from dcsm.api import METHODS
    from dcsm.layer_maps import UPSAMPLE_ORDERS
    from dcsm.presets import PRESETS

    p.add_argument("--classes", default="auto",
                   help="'auto' (from the model's scores) or comma-separated names or indices")
    p.add_argument("--top-k", type=_positive_int, default=None,
                   help="at most this many auto candidates (softmax default 2)")
    p.add_argument("--threshold", type=_finite, default=None,
                   help="score threshold for auto candidates (sigmoid default 0.5)")
    p.add_argument("--min-contrast", type=_positive_int, default=None,
                   help="contrast the classes with at least this many in all, topped up by the "
                        "candidate rule's ranking (preset default: 1, released 4)")
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
    add_resolution_options(p)


def add_resolution_options(p: argparse.ArgumentParser) -> None:
    """The working resolution and the numeric precision."""
    from dcsm.images import DEFAULT_MAX_SIDE

    res = p.add_mutually_exclusive_group()
    res.add_argument("--max-side", type=_number(int, lambda v: v >= 32, "an integer >= 32"),
                     default=DEFAULT_MAX_SIDE, metavar="PX",
                     help="explain (and segment) larger images at this long side; maps are "
                          "returned at full size (default %(default)s)")
    res.add_argument("--full-resolution", action="store_true",
                     help="explain at the image's own size (the memory needed is estimated "
                          "first; too much is an error)")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="forward pass precision (autocast); default %(default)s")


def add_crf_options(p: argparse.ArgumentParser) -> None:
    """The dense CRF's parameters (see :mod:`dcsm.segmentation.crf`)."""
    from dcsm.segmentation import CRFParams

    d = CRFParams()
    g = p.add_argument_group("dense CRF", "unaries from the maps; background (1 - max_c M_c)^power")
    g.add_argument("--crf-bg-power", type=_positive_float, default=d.bg_power, metavar="P",
                   help="power of the background rule (default %(default)s)")
    g.add_argument("--crf-iterations", type=_nonnegative_int, default=d.iterations, metavar="N",
                   help="mean-field steps; 0 = the unaries' argmax (default %(default)s)")
    g.add_argument("--crf-gaussian-sxy", type=_positive_float, default=d.gaussian_sxy,
                   metavar="PX", help="smoothness kernel width, pixels (default %(default)s)")
    g.add_argument("--crf-gaussian-compat", type=_nonnegative_float, default=d.gaussian_compat,
                   metavar="W", help="smoothness kernel weight (default %(default)s)")
    g.add_argument("--crf-bilateral-sxy", type=_positive_float, default=d.bilateral_sxy,
                   metavar="PX", help="appearance kernel width, pixels (default %(default)s)")
    g.add_argument("--crf-bilateral-srgb", type=_positive_float, default=d.bilateral_srgb,
                   metavar="L", help="appearance kernel colour width, 0..255 (default %(default)s)")
    g.add_argument("--crf-bilateral-compat", type=_nonnegative_float, default=d.bilateral_compat,
                   metavar="W", help="appearance kernel weight (default %(default)s)")


def add_grabcut_options(p: argparse.ArgumentParser) -> None:
    """The GrabCut baseline's parameters (see :mod:`dcsm.segmentation.grabcut`)."""
    from dcsm.segmentation import GrabCutParams

    d = GrabCutParams()
    g = p.add_argument_group("GrabCut (Simonyan et al.)", "colour models from map quantiles")
    g.add_argument("--grabcut-fg-quantile", type=_fraction, default=d.fg_quantile, metavar="Q",
                   help="pixels at or above this quantile model the foreground (default "
                        "%(default)s)")
    g.add_argument("--grabcut-bg-quantile", type=_fraction, default=d.bg_quantile, metavar="Q",
                   help="pixels at or below this quantile model the background (default "
                        "%(default)s)")
    g.add_argument("--grabcut-iterations", type=_positive_int, default=d.iterations, metavar="N",
                   help="GrabCut rounds; 1 = one graph cut (default %(default)s)")
    g.add_argument("--grabcut-all-components", action="store_true",
                   help="keep every foreground component, not only the largest")


def crf_params_from_args(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of :func:`dcsm.segmentation.segment_crf`, checked."""
    from dcsm.segmentation import CRFParams

    return CRFParams(args.crf_bg_power, args.crf_iterations, args.crf_gaussian_sxy,
                     args.crf_gaussian_compat, args.crf_bilateral_sxy, args.crf_bilateral_srgb,
                     args.crf_bilateral_compat).as_dict()


def grabcut_params_from_args(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of :func:`dcsm.segmentation.segment_grabcut`, checked."""
    from dcsm.segmentation import GrabCutParams

    return GrabCutParams(args.grabcut_fg_quantile, args.grabcut_bg_quantile,
                         args.grabcut_iterations, not args.grabcut_all_components).as_dict()


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

    sg = sub.add_parser("segment", help="maps plus a segmentation: dense CRF or GrabCut")
    sg.add_argument("images", nargs="+", metavar="IMAGE")
    sg.add_argument("--out", required=True, type=Path, help="output directory")
    add_model_options(sg)
    add_method_options(sg)
    sg.set_defaults(method=None)  # dcsm for the CRF, simonyan for GrabCut, unless given
    sg.add_argument("--per-layer", action="store_true",
                    help="also write layers.png with the single-layer maps (paper Fig. 2)")
    sg.add_argument("--segmenter", choices=["crf", "grabcut"], default="crf",
                    help="dense CRF on the maps (default; maps: --method dcsm) or Simonyan et "
                         "al.'s GrabCut (maps: --method simonyan unless given)")
    add_crf_options(sg)
    add_grabcut_options(sg)

    fg = sub.add_parser("figure", help="the paper's Fig. 1 for an image: Simonyan maps and "
                                       "GrabCut against distinct maps and the CRF")
    fg.add_argument("image", metavar="IMAGE")
    fg.add_argument("--out", required=True, type=Path,
                    help="figure file; the suffix picks the format (.png, .pdf, .svg, ...)")
    add_model_options(fg)
    add_method_options(fg)
    fg.add_argument("--dpi", type=_positive_int, default=100, help="default %(default)s")
    add_crf_options(fg)
    add_grabcut_options(fg)
    from dcsm.batch.cli import add_batch_parser

    add_batch_parser(sub)  # dcsm batch: folders and lists, resumable, sharded (torchrun)
    from dcsm.training.cli import add_parsers as add_training_parsers

    add_training_parsers(sub)  # dcsm data synthetic|check, dcsm train, dcsm evaluate
    from dcsm.bench.cli import add_parser as add_bench_parser

    add_bench_parser(sub)  # dcsm bench gridpg: the grid pointing game against the peers
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
    from dcsm.api import make_explainer

    adapter = load_model(args.model, weights=args.weights, device=args.device)
    explainer = make_explainer(adapter, args.method, preset=args.preset, scales=args.scales,
                               layers=args.layers, backprop=args.backprop, alpha=args.alpha,
                               subtract=not args.no_subtract, upsample=args.upsample,
                               min_contrast=args.min_contrast, max_side=max_side(args),
                               precision=args.precision)
    return explainer


def max_side(args: argparse.Namespace) -> int | None:
    """The working resolution the options ask for (None: full resolution)."""
    return None if getattr(args, "full_resolution", False) else args.max_side


def report_memory(explainer, image) -> None:  # noqa: ANN001
    """With --full-resolution, say up front what one image will take."""
    if explainer.max_side is not None:
        return
    need = explainer.estimate_memory(image.shape[0], image.shape[1])
    print(f"dcsm: full resolution {image.shape[1]}x{image.shape[0]}: about "
          f"{need / 2**30:.2f} GiB", file=sys.stderr)


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
    from dcsm.outputs import write_explanation

    stems = _stems(args.images)
    images = [load_image(p) for p in args.images]  # every input checked before any work
    explainer = explainer_from_args(args)
    for path, stem, image in zip(args.images, stems, images, strict=True):
        report_memory(explainer, image)
        result = explainer.explain(image, classes=args.classes, top_k=args.top_k,
                                   threshold=args.threshold, per_layer=args.per_layer)
        final = args.out / stem
        with atomic_dir(final) as tmp:
            write_explanation(result, tmp, path)
        listed = ", ".join(f"{c.name} {c.score:.3f}" for c in result.candidates)
        print(f"{path}: {listed} -> {final}")
    return 0


def _cmd_segment(args: argparse.Namespace) -> int:
    from dcsm.io import atomic_dir, load_image
    from dcsm.outputs import write_explanation
    from dcsm.segmentation import segment

    if args.segmenter == "crf":
        params = crf_params_from_args(args)
    else:
        params = grabcut_params_from_args(args)
    if args.method is None:
        args.method = "simonyan" if args.segmenter == "grabcut" else "dcsm"
    stems = _stems(args.images)
    images = [load_image(p) for p in args.images]  # every input checked before any work
    explainer = explainer_from_args(args)
    for path, stem, image in zip(args.images, stems, images, strict=True):
        report_memory(explainer, image)
        result = explainer.explain(image, classes=args.classes, top_k=args.top_k,
                                   threshold=args.threshold, per_layer=args.per_layer)
        seg = segment(result, method=args.segmenter, max_side=max_side(args), **params)
        final = args.out / stem
        with atomic_dir(final) as tmp:
            write_explanation(result, tmp, path, seg)
        listed = ", ".join(f"{c.name} {c.score:.3f} ({int(m.sum())} px)"
                           for c, m in zip(result.candidates, seg.masks.values(), strict=True))
        print(f"{path}: {listed} -> {final}")
    return 0


def _figure_format(path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    known = FigureCanvasAgg(Figure()).get_supported_filetypes()
    suffix = path.suffix.lower().lstrip(".")
    if suffix not in known:
        raise DcsmError(f"cannot tell the figure format of '{path}': use a suffix such as "
                        f".png, .pdf or .svg")
    if path.is_dir():
        raise DcsmError(f"'{path}' is a directory; --out needs a file name")


def _cmd_figure(args: argparse.Namespace) -> int:
    from dcsm.api import make_explainer
    from dcsm.io import load_image, save_figure
    from dcsm.segmentation import figure_one, segment

    crf_params = crf_params_from_args(args)
    grabcut_params = grabcut_params_from_args(args)
    _figure_format(args.out)
    image = load_image(args.image)
    explainer = explainer_from_args(args)
    distinct = explainer.explain(image, classes=args.classes, top_k=args.top_k,
                                 threshold=args.threshold)
    simonyan = make_explainer(explainer.adapter, "simonyan", max_side=max_side(args),
                              precision=args.precision).explain(
        image, classes=[c.index for c in distinct.candidates])
    crf = segment(distinct, method="crf", max_side=max_side(args), **crf_params)
    grabcut = segment(simonyan, method="grabcut", max_side=max_side(args), **grabcut_params)
    fig = figure_one(image, simonyan.maps, grabcut, distinct.maps, crf, distinct.method)
    save_figure(args.out, fig, dpi=args.dpi)
    listed = ", ".join(f"{c.name} {c.score:.3f}" for c in distinct.candidates)
    print(f"{args.image}: {listed} -> {args.out}")
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from dcsm.batch.cli import run_batch

    return run_batch(args)


def _cmd_training(args: argparse.Namespace) -> int:
    from dcsm.training.cli import run

    return run(args)


def _cmd_bench(args: argparse.Namespace) -> int:
    from dcsm.bench.cli import run

    return run(args)


_COMMANDS = {"explain": _cmd_explain, "segment": _cmd_segment, "figure": _cmd_figure,
             "batch": _cmd_batch, "data": _cmd_training, "train": _cmd_training,
             "evaluate": _cmd_training, "bench": _cmd_bench}


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """dcsm's own warnings as one line on stderr; others as Python prints them."""
    if issubclass(category, DcsmWarning):
        print(f"dcsm: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed on one line
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            warnings.simplefilter("always", DcsmWarning)
            if args.command == "models":
                return _cmd_models()
            return _COMMANDS[args.command](args)
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
        print(f"dcsm: error: {first_line(exc)} (set DCSM_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
