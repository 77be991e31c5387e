"""What the commands share: the parser class, argument types, option groups and their use.

Every command module of :mod:`dcsm.cli` builds its options from these, so ``explain``,
``segment``, ``figure``, ``batch`` and ``evaluate`` cannot drift apart:

* :class:`Parser`: argparse with one-line errors and exit status 2.
* Argument types (each raises ``argparse.ArgumentTypeError`` with a one-line reason):
  :func:`floats` and :func:`names` (comma-separated lists), :func:`number` (a checked number
  type) and the ready ones :data:`positive_int`, :data:`nonnegative_int`, :data:`finite`,
  :data:`positive_float`, :data:`nonnegative_float`, :data:`fraction`.
* Option groups: :func:`add_model_options`, :func:`add_method_options` (with
  :func:`add_resolution_options`), :func:`add_crf_options`, :func:`add_grabcut_options`,
  :func:`add_progress_options`, :func:`add_display_options`, :func:`add_pictures_option`.
* Their use: :func:`explainer_from_args`, :func:`labels_from_args`, :func:`segmenter_params`,
  :func:`method_for`, :func:`max_side`, :func:`max_pixels`, :func:`progress_wanted`,
  :func:`report_memory`, :func:`display_from_args`.

This module imports only the standard library at load time.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import numpy as np

    from dcsm.api import Explainer
    from dcsm.outputs import Display

#: The label sets ``--labels`` accepts (:mod:`dcsm.pipeline.adapters.groups`; kept here so that the
#: parser imports no torch).
LABELS: tuple[str, ...] = ("imagenet", "voc", "coco")

#: Exit status of bad input, options or output folders.
EXIT_USAGE = 2
#: Exit status of a run that finished but could not do every image (recorded as failed).
EXIT_FAILED = 1


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on one line and exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


# ----------------------------------------------------------------------------- types
def floats(text: str) -> list[float]:
    """Comma-separated finite numbers, at least one: ``1,1.2``."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,1.2, got '{text}'") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def names(text: str) -> list[str]:
    """Comma-separated names, at least one, blanks dropped: ``conv4_1,conv5_1``."""
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise argparse.ArgumentTypeError("expected at least one name")
    return values


def number(cast: type, test: Callable[[float], bool] | None = None,
           wanted: str = "") -> Callable[[str], Any]:
    """An argparse type: ``cast(text)``, finite and passing ``test`` (else "expected wanted")."""
    kind = "an integer" if cast is int else "a number"

    def parse(text: str) -> Any:  # noqa: ANN401 - int or float, as cast
        try:
            value = cast(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {kind}, got '{text}'") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
        if test is not None and not test(value):
            raise argparse.ArgumentTypeError(f"expected {wanted}, got {text}")
        return value

    return parse


positive_int = number(int, lambda v: v >= 1, "an integer >= 1")
nonnegative_int = number(int, lambda v: v >= 0, "an integer >= 0")
finite = number(float)
positive_float = number(float, lambda v: v > 0, "a positive number")
nonnegative_float = number(float, lambda v: v >= 0, "a number >= 0")
fraction = number(float, lambda v: 0 < v < 1, "a number strictly between 0 and 1")
opacity = number(float, lambda v: 0 <= v <= 1, "an opacity from 0 to 1")


def colormap(text: str) -> str:
    """A matplotlib colormap name (checked when the options are parsed)."""
    from dcsm.errors import DcsmError
    from dcsm.io.viz import check_colormap

    try:
        return check_colormap(text)
    except DcsmError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ----------------------------------------------------------------------------- option groups
def add_model_options(p: argparse.ArgumentParser) -> None:
    """Options that choose and place the model."""
    from dcsm.pipeline.adapters import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL,
                   help="model name (see `dcsm models`), default %(default)s")
    p.add_argument("--weights", default=None,
                   help="weights: a local file, a torchvision weight name, or 'random'")
    p.add_argument("--device", default="cpu", help="torch device, default %(default)s")
    p.add_argument("--labels", choices=LABELS, default=None,
                   help="classes of an ImageNet model: its own (imagenet, default) or PASCAL "
                        "VOC's or COCO's as groups of ImageNet classes (see `dcsm models "
                        "--labels voc`)")


def add_method_options(p: argparse.ArgumentParser) -> None:
    """Options of the saliency method and of candidate selection."""
    from dcsm.methods.registry import DEFAULT_METHOD
    from dcsm.methods.registry import names as method_names
    from dcsm.pipeline.layer_maps import CHANNEL_REDUCTIONS, UPSAMPLE_ORDERS
    from dcsm.pipeline.presets import DEFAULT_PRESET, PRESETS

    p.add_argument("--classes", default="auto",
                   help="'auto' (from the model's scores) or comma-separated names or indices")
    p.add_argument("--top-k", type=positive_int, default=None,
                   help="at most this many auto candidates (softmax default 2)")
    p.add_argument("--threshold", type=finite, default=None,
                   help="score threshold for auto candidates (sigmoid default 0.5)")
    p.add_argument("--min-contrast", type=positive_int, default=None,
                   help="contrast the classes with at least this many in all, topped up by the "
                        "candidate rule's ranking (preset default: 1, released 4)")
    merge = p.add_mutually_exclusive_group()
    merge.add_argument("--merge-lookalikes", dest="merge_lookalikes", action="store_const",
                       const=True, default=None,
                       help="auto candidates: merge look-alike classes of one object (ImageNet "
                            "classes of one VOC/COCO class, or contesting one place of the "
                            "score map) into the one that wins more of it (default: the "
                            "preset's, on for tuned)")
    merge.add_argument("--no-merge-lookalikes", dest="merge_lookalikes", action="store_const",
                       const=False, help="keep look-alike auto candidates apart")
    p.add_argument("--method", choices=method_names(explainers=True), default=DEFAULT_METHOD)
    p.add_argument("--preset", choices=list(PRESETS), default=DEFAULT_PRESET,
                   help="method settings (default %(default)s; paper: the paper's text; "
                        "released: the authors' code)")
    p.add_argument("--scales", type=floats, default=None,
                   help="comma-separated scale ratios (paper: 1,1.2,1.4,1.6)")
    p.add_argument("--layers", type=names, default=None,
                   help="comma-separated layer names (default: the model's set)")
    p.add_argument("--backprop", choices=["guided", "plain"], default="guided")
    p.add_argument("--no-subtract", action="store_true",
                   help="skip the class contrast (Eq. 2)")
    p.add_argument("--alpha", type=finite, default=None, help="tanh saturation (3)")
    p.add_argument("--upsample", choices=UPSAMPLE_ORDERS, default=None,
                   help="max over channels then upsample (default) or the reverse")
    p.add_argument("--reduce", choices=CHANNEL_REDUCTIONS, default=None,
                   help="channel reduction of each layer's derivatives: max_abs (the paper's) "
                        "or grad_act (positive derivative times activation, summed); default: "
                        "the preset's")
    flip = p.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_const", const=True, default=None,
                      help="also explain the mirror image and average (the default preset's)")
    flip.add_argument("--no-flip", dest="flip", action="store_const", const=False,
                      help="explain the image alone")
    walk = p.add_mutually_exclusive_group()
    walk.add_argument("--propagate", dest="propagate", action="store_const", const=True,
                      default=None, help="spread each map through the stride-16 feature "
                                         "affinities (the default preset's)")
    walk.add_argument("--no-propagate", dest="propagate", action="store_const", const=False,
                      help="no affinity walk")
    p.add_argument("--gamma", type=finite, default=None,
                   help="raise each final map to this power relative to its maximum (the "
                        "default preset's 2; 1: unchanged)")
    p.add_argument("--gate", type=finite, default=None,
                   help="weight each map by its class's score map scaled to [0, 1], to this "
                        "power (0: off; default: the preset's)")
    add_resolution_options(p)


def add_resolution_options(p: argparse.ArgumentParser) -> None:
    """The working resolution and the numeric precision."""
    from dcsm.io import DEFAULT_MAX_PIXELS
    from dcsm.pipeline.images import DEFAULT_MAX_SIDE

    res = p.add_mutually_exclusive_group()
    res.add_argument("--max-side", type=number(int, lambda v: v >= 32, "an integer >= 32"),
                     default=DEFAULT_MAX_SIDE, metavar="PX",
                     help="explain (and segment) larger images at this long side; maps are "
                          "returned at full size (default %(default)s)")
    res.add_argument("--full-resolution", action="store_true",
                     help="explain at the image's own size (the memory needed is estimated "
                          "first; too much is an error)")
    p.add_argument("--precision", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="forward pass precision (autocast); default %(default)s")
    p.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images of more than N pixels (width x height), read from the "
                        "file's header before decoding (default %(default)s)")


def add_crf_options(p: argparse.ArgumentParser) -> None:
    """The dense CRF's parameters (see :mod:`dcsm.segmentation.crf`)."""
    from dcsm.segmentation import CRFParams
    from dcsm.segmentation.crf import BACKGROUNDS
    from dcsm.segmentation.crf import MAX_CRF_ITERATIONS as most

    d = CRFParams()
    g = p.add_argument_group("dense CRF", "unaries from the maps (each divided by its maximum "
                                          "unless --crf-no-normalize) against a background "
                                          "score: Otsu's threshold of the maps, a constant or "
                                          "(1 - max_c M_c)^power")
    g.add_argument("--crf-background", choices=list(BACKGROUNDS), default=d.background,
                   help="background rule: otsu (one threshold per image, from its maps), "
                        "constant (--crf-bg-threshold) or power (--crf-bg-power); default "
                        "%(default)s")
    g.add_argument("--crf-bg-threshold", type=number(float, lambda v: 0 < v < 1,
                                                     "a number in (0, 1)"),
                   default=d.bg_threshold, metavar="T",
                   help="the constant background score (default %(default)s)")
    g.add_argument("--crf-bg-power", type=positive_float, default=d.bg_power, metavar="P",
                   help="power of the 'power' background rule (default %(default)s)")
    g.add_argument("--crf-sharpness", type=positive_float, default=d.sharpness, metavar="G",
                   help="power of the unary scores: how strongly the maps hold against the "
                        "pairwise terms (default %(default)s)")
    g.add_argument("--crf-no-normalize", dest="crf_normalize", action="store_false",
                   default=d.normalize,
                   help="use the maps as they are, not each divided by its maximum")
    g.add_argument("--crf-iterations", default=d.iterations, metavar="N",
                   type=number(int, lambda v: 0 <= v <= most, f"an integer from 0 to {most}"),
                   help="mean-field steps; 0 = the unaries' argmax (default %(default)s)")
    g.add_argument("--crf-gaussian-sxy", type=positive_float, default=d.gaussian_sxy,
                   metavar="PX", help="smoothness kernel width, pixels (default %(default)s)")
    g.add_argument("--crf-gaussian-compat", type=nonnegative_float, default=d.gaussian_compat,
                   metavar="W", help="smoothness kernel weight (default %(default)s)")
    g.add_argument("--crf-bilateral-sxy", type=positive_float, default=d.bilateral_sxy,
                   metavar="PX", help="appearance kernel width, pixels (default %(default)s)")
    g.add_argument("--crf-bilateral-srgb", type=positive_float, default=d.bilateral_srgb,
                   metavar="L", help="appearance kernel colour width, 0..255 (default %(default)s)")
    g.add_argument("--crf-bilateral-compat", type=nonnegative_float, default=d.bilateral_compat,
                   metavar="W", help="appearance kernel weight (default %(default)s)")


def add_grabcut_options(p: argparse.ArgumentParser) -> None:
    """The GrabCut baseline's parameters (see :mod:`dcsm.segmentation.grabcut`)."""
    from dcsm.segmentation import GrabCutParams
    from dcsm.segmentation.grabcut import MAX_GRABCUT_ITERATIONS as most

    d = GrabCutParams()
    g = p.add_argument_group("GrabCut (Simonyan et al.)", "colour models from map quantiles")
    g.add_argument("--grabcut-fg-quantile", type=fraction, default=d.fg_quantile, metavar="Q",
                   help="pixels at or above this quantile model the foreground (default "
                        "%(default)s)")
    g.add_argument("--grabcut-bg-quantile", type=fraction, default=d.bg_quantile, metavar="Q",
                   help="pixels at or below this quantile model the background (default "
                        "%(default)s)")
    g.add_argument("--grabcut-iterations", default=d.iterations, metavar="N",
                   type=number(int, lambda v: 1 <= v <= most, f"an integer from 1 to {most}"),
                   help="GrabCut rounds; 1 = one graph cut (default %(default)s)")
    g.add_argument("--grabcut-all-components", action="store_true",
                   help="keep every foreground component, not only the largest")


def add_display_options(p: argparse.ArgumentParser) -> None:
    """How the pictures draw the maps: ``--style``, ``--colormap``, ``--opacity``."""
    g = p.add_argument_group("pictures", "how the PNG files and figures draw the maps "
                                         "(maps.npz is never affected)")
    g.add_argument("--style", choices=["overlay", "paper"], default="overlay",
                   help="overlay: each map over the photo, with a colour bar (default); "
                        "paper: grey maps side by side, as in the paper")
    g.add_argument("--colormap", type=colormap, default=None, metavar="NAME",
                   help="matplotlib colormap of the maps (default viridis; grey for "
                        "--style paper), e.g. inferno, magma, cividis, jet")
    g.add_argument("--opacity", type=opacity, default=0.5, metavar="A",
                   help="the maps' opacity over the photo, 0 to 1 (default %(default)s)")


def add_pictures_option(p: argparse.ArgumentParser) -> None:
    """``--no-pictures`` (``args.pictures``): the data files only."""
    p.add_argument("--no-pictures", dest="pictures", action="store_false",
                   help="write the data only: maps.npz and summary.json (with a segmentation "
                        "also labels.png and masks.npz), no PNG previews or figures; the "
                        "arrays are the same")


def add_progress_options(p: argparse.ArgumentParser, default_help: str = "on a terminal"
                         ) -> None:
    """``--progress`` / ``--no-progress`` (``args.progress``: True, False or None)."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_const", const=True,
                   default=None, help=f"show the progress bar (default: {default_help})")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False)


# ----------------------------------------------------------------------------- their use
def crf_params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`dcsm.segmentation.segment_crf`, checked (the values as
    :func:`dcsm.segmentation.segment` takes them: ``Any``)."""
    from dcsm.segmentation import CRFParams

    return CRFParams(args.crf_bg_power, args.crf_iterations, args.crf_gaussian_sxy,
                     args.crf_gaussian_compat, args.crf_bilateral_sxy, args.crf_bilateral_srgb,
                     args.crf_bilateral_compat, args.crf_background, args.crf_bg_threshold,
                     args.crf_normalize, args.crf_sharpness).as_dict()


def grabcut_params_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :func:`dcsm.segmentation.segment_grabcut`, checked (the values as
    :func:`dcsm.segmentation.segment` takes them: ``Any``)."""
    from dcsm.segmentation import GrabCutParams

    return GrabCutParams(args.grabcut_fg_quantile, args.grabcut_bg_quantile,
                         args.grabcut_iterations, not args.grabcut_all_components).as_dict()


def segmenter_params(args: argparse.Namespace, segmenter: str | None) -> dict[str, Any]:
    """The checked parameters of ``segmenter`` ("crf", "grabcut"; None: no segmentation)."""
    if segmenter == "crf":
        return crf_params_from_args(args)
    if segmenter == "grabcut":
        return grabcut_params_from_args(args)
    return {}


def method_for(args: argparse.Namespace, segmenter: str | None) -> str:
    """``--method`` if given, else the maps the segmenter is paired with: Simonyan et al.'s
    for GrabCut (their baseline), dcsm for the CRF and for maps alone."""
    if args.method is not None:
        return str(args.method)
    return "simonyan" if segmenter == "grabcut" else "dcsm"


def max_side(args: argparse.Namespace) -> int | None:
    """The working resolution the options ask for (None: full resolution)."""
    return None if getattr(args, "full_resolution", False) else args.max_side


def max_pixels(args: argparse.Namespace) -> int | None:
    """The pixel limit of the images (``--max-pixels``; the library's default where the command
    has no such option)."""
    from dcsm.io import DEFAULT_MAX_PIXELS

    return getattr(args, "max_pixels", DEFAULT_MAX_PIXELS)


def progress_wanted(args: argparse.Namespace) -> bool:
    """``--progress``/``--no-progress``, else whether stderr is a terminal."""
    return sys.stderr.isatty() if args.progress is None else bool(args.progress)


def labels_from_args(args: argparse.Namespace) -> str | None:
    """``--labels`` (None where the command has no such option)."""
    return getattr(args, "labels", None)


def explainer_from_args(args: argparse.Namespace) -> Explainer:
    """Load the model and build the explainer the options describe."""
    from dcsm.api import make_explainer
    from dcsm.pipeline.adapters import load_model

    adapter = load_model(args.model, weights=args.weights, device=args.device,
                         labels=labels_from_args(args))
    return make_explainer(adapter, args.method, preset=args.preset, scales=args.scales,
                          layers=args.layers, backprop=args.backprop, alpha=args.alpha,
                          subtract=not args.no_subtract, upsample=args.upsample,
                          min_contrast=args.min_contrast, max_side=max_side(args),
                          precision=args.precision, max_pixels=max_pixels(args),
                          merge_lookalikes=args.merge_lookalikes, reduce=args.reduce,
                          propagate=args.propagate, flip=args.flip, gamma=args.gamma,
                          gate=args.gate)


def display_from_args(args: argparse.Namespace) -> Display:
    """The :class:`~dcsm.outputs.Display` the picture options describe."""
    from dcsm.outputs import Display

    return Display(style=getattr(args, "style", "overlay"),
                   colormap=getattr(args, "colormap", None),
                   opacity=getattr(args, "opacity", 0.5))


def report_memory(explainer: Explainer, image: np.ndarray) -> None:
    """With --full-resolution, say up front what one image will take."""
    if explainer.max_side is not None:
        return
    need = explainer.estimate_memory(image.shape[0], image.shape[1])
    print(f"dcsm: full resolution {image.shape[1]}x{image.shape[0]}: about "
          f"{need / 2**30:.2f} GiB", file=sys.stderr)
