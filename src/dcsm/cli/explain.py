"""``dcsm explain``, ``dcsm segment`` and ``dcsm figure``: one image or a few, one code path.

``dcsm explain IMAGE... --out DIR`` writes, for each image, ``DIR/<image stem>/`` (the stem made
a safe name, :mod:`dcsm.io.names`; an existing folder replaced only when it is an earlier output of
dcsm): ``maps.npz`` (one float32 (H, W) map in [0, 1] per class, keyed by class name or, for a
name unsafe as a file name, by the key ``summary.json``'s ``map_keys`` names), ``summary.json``,
``<class>.png`` (the map over the image), ``figure.png`` (the image and every map side by side)
and, with ``--per-layer``, ``layers.png`` (single-layer maps).

``dcsm segment IMAGE... --out DIR`` writes the same plus ``labels.png`` (VOC-palette PNG, 0
background, v the v-th candidate of ``summary.json``), ``masks.npz`` (one bool array per class)
and ``segmentation.png``, and adds a ``segmentation`` entry to ``summary.json``; the segmenter is
a dense CRF on the maps (``--segmenter crf``, maps ``--method dcsm`` by default) or Simonyan et
al.'s GrabCut (``--segmenter grabcut``, maps ``--method simonyan`` by default).

``--no-pictures`` leaves out every PNG preview and figure: ``maps.npz``, ``summary.json`` and
the segmentation's ``labels.png`` and ``masks.npz`` only.

``dcsm figure IMAGE --out FILE`` draws the paper's Fig. 1 for the image.

All three read and check every image before loading the model, explain each image the same way
(:func:`explain_one`), and write through :mod:`dcsm.outputs` and :mod:`dcsm.io`, so an image's
output directory (or the figure file) appears only once it is complete.
"""

from __future__ import annotations

import argparse
import os
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from dcsm.cli.options import (
    add_crf_options,
    add_display_options,
    add_grabcut_options,
    add_method_options,
    add_model_options,
    add_pictures_option,
    crf_params_from_args,
    display_from_args,
    explainer_from_args,
    grabcut_params_from_args,
    max_pixels,
    max_side,
    method_for,
    positive_int,
    report_memory,
    segmenter_params,
)
from dcsm.errors import DcsmError

if TYPE_CHECKING:
    import numpy as np

    from dcsm.api import Explainer
    from dcsm.pipeline.candidates import Candidate
    from dcsm.pipeline.result import BatchResult, SaliencyResult
    from dcsm.segmentation import Segmentation


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``explain``, ``segment`` and ``figure`` to the ``dcsm`` command's subparsers."""
    ex = sub.add_parser("explain", help="class saliency maps for images")
    _images_and_model(ex)
    ex.set_defaults(handler=run_explain)

    sg = sub.add_parser("segment", help="maps plus a segmentation: dense CRF or GrabCut")
    _images_and_model(sg)
    sg.set_defaults(method=None, handler=run_segment)  # dcsm for the CRF, simonyan for GrabCut
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
    fg.add_argument("--dpi", type=positive_int, default=100, help="default %(default)s")
    add_display_options(fg)
    add_crf_options(fg)
    add_grabcut_options(fg)
    fg.set_defaults(handler=run_figure)


def _images_and_model(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    add_model_options(p)
    add_method_options(p)
    p.add_argument("--per-layer", action="store_true",
                   help="also write layers.png with the single-layer maps (paper Fig. 2)")
    add_display_options(p)
    add_pictures_option(p)


# ----------------------------------------------------------------------------- the shared path
def output_stems(paths: Sequence[str], out: Path | None = None) -> list[str]:
    """Each image's output directory name under ``--out``, in order: the safe name of its stem,
    distinct without regard to case (:func:`dcsm.io.names.output_names`, as ``dcsm batch`` names
    them, from the paths relative to the images' common folder: ``a/cat.png`` and
    ``b/Cat.png`` become ``a__cat`` and ``b__Cat``).

    With ``out``, every existing ``out/<name>`` is checked first: one that is not an earlier
    dcsm output (:func:`dcsm.outputs.is_previous_output`) stops the command before any work.

    Raises:
        DcsmError: when an image is given twice, or an existing folder may not be replaced.
    """
    from dcsm.io import refuse_replacing
    from dcsm.io.names import output_names
    from dcsm.outputs import is_previous_output

    # keys relative to the images' common folder: shared stems are told apart by the folders
    # that differ (a/cat.png, b/cat.png -> a__cat, b__cat), not by the whole absolute path
    absolute = [os.path.abspath(p) for p in paths]
    seen: dict[str, str] = {}
    for path, full in zip(paths, absolute, strict=True):
        if full in seen:
            raise DcsmError(f"images '{seen[full]}' and '{path}' are the same file and would "
                            "share one output directory; give each image once")
        seen[full] = path
    try:
        common = os.path.commonpath([os.path.dirname(p) for p in absolute])
        keys = [os.path.relpath(p, common) for p in absolute]
    except ValueError:  # Windows: images on several drives
        keys = absolute
    names = output_names([k.replace(os.sep, "/") for k in keys])
    if out is not None:
        for name in names:
            refuse_replacing(Path(out) / name, is_previous_output)
    return names


def load_inputs(args: argparse.Namespace, paths: Sequence[str]
                ) -> tuple[list[np.ndarray], Explainer]:
    """Every image read and checked first (a bad one stops the command before any work), then
    the model and the explainer the options describe."""
    from dcsm.io import load_image

    images = [load_image(p, max_pixels(args)) for p in paths]
    return images, explainer_from_args(args)


def explain_one(explainer: Explainer, image: np.ndarray, args: argparse.Namespace
                ) -> SaliencyResult:
    """One image's explanation with the command's candidate options."""
    report_memory(explainer, image)
    return one_result(explainer.explain(image, classes=args.classes, top_k=args.top_k,
                                        threshold=args.threshold,
                                        per_layer=getattr(args, "per_layer", False)))


def one_result(result: SaliencyResult | BatchResult) -> SaliencyResult:
    """The result of explaining one image (an image, not a tensor batch, gives one)."""
    from dcsm.pipeline.result import SaliencyResult  # command-line start-up: torch on demand

    if not isinstance(result, SaliencyResult):
        raise DcsmError(f"expected the maps of one image, got {type(result).__name__}")
    return result


def explain_images(args: argparse.Namespace, segmenter: str | None) -> int:
    """``dcsm explain`` (``segmenter`` None) and ``dcsm segment``: each image explained, and
    segmented, into ``--out/<stem>/`` (written atomically); one line printed per image."""
    from dcsm.outputs import output_dir, write_explanation
    from dcsm.segmentation import segment

    params = segmenter_params(args, segmenter)  # checked before any work
    display = display_from_args(args)
    args.method = method_for(args, segmenter)
    stems = output_stems(args.images, args.out)
    images, explainer = load_inputs(args, args.images)
    for path, stem, image in zip(args.images, stems, images, strict=True):
        result = explain_one(explainer, image, args)
        seg = None
        if segmenter is not None:
            seg = segment(result, segmenter=segmenter, max_side=max_side(args), **params)
        final = args.out / stem
        with output_dir(args.out, stem) as tmp:
            write_explanation(result, tmp, path, seg, display, pictures=args.pictures)
        print(_printable(f"{path}: {_listed(result, seg)} -> {final}"))
    return 0


def _printable(text: str) -> str:
    """``text`` with control and format characters (from file or class names) escaped as
    ``\\xNN``/``\\uNNNN``, so a name cannot move the cursor or recolour the terminal."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Cs") else c
                   for c in text)


def _listed(result: SaliencyResult, seg: Segmentation | None) -> str:
    def merged(c: Candidate) -> str:
        return f" (merged: {', '.join(c.merged)})" if c.merged else ""

    if seg is None:
        return ", ".join(f"{c.name} {c.score:.3f}{merged(c)}" for c in result.candidates)
    return ", ".join(f"{c.name} {c.score:.3f}{merged(c)} ({int(m.sum())} px)"
                     for c, m in zip(result.candidates, seg.masks.values(), strict=True))


# ----------------------------------------------------------------------------- the commands
def run_explain(args: argparse.Namespace) -> int:
    """``dcsm explain``."""
    return explain_images(args, segmenter=None)


def run_segment(args: argparse.Namespace) -> int:
    """``dcsm segment``."""
    return explain_images(args, segmenter=args.segmenter)


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


def run_figure(args: argparse.Namespace) -> int:
    """``dcsm figure``: Simonyan et al.'s maps and GrabCut against the distinct maps and the CRF,
    for the same candidates."""
    from dcsm.api import make_explainer
    from dcsm.io import save_figure
    from dcsm.segmentation import figure_one, segment

    crf_params = crf_params_from_args(args)
    grabcut_params = grabcut_params_from_args(args)
    display = display_from_args(args)
    _figure_format(args.out)
    [image], explainer = load_inputs(args, [args.image])
    distinct = explain_one(explainer, image, args)
    simonyan = one_result(make_explainer(
        explainer.adapter, "simonyan", max_side=max_side(args), precision=args.precision,
        max_pixels=max_pixels(args)).explain(image, classes=[c.index for c in distinct.candidates]))
    crf = segment(distinct, segmenter="crf", max_side=max_side(args), **crf_params)
    grabcut = segment(simonyan, segmenter="grabcut", max_side=max_side(args), **grabcut_params)
    fig = figure_one(image, simonyan.maps, grabcut, distinct.maps, crf, distinct.method,
                     **display.options())
    save_figure(args.out, fig, dpi=args.dpi)
    print(_printable(f"{args.image}: {_listed(distinct, None)} -> {args.out}"))
    return 0
