"""Figures of segmentations: labels over the image with a legend, and the paper's Fig. 1.

Like :mod:`dcsm.io.viz`, only matplotlib's object API is used (no ``pyplot``); the builders accept
``figure=`` to draw into a figure made elsewhere (``pyplot`` in
:meth:`dcsm.segmentation.Segmentation.show`). Maps in Fig. 1 are drawn in :mod:`dcsm.io.viz`'s
styles: over the photo through a colormap (viridis by default) with a colour bar, or grey and
alone (``style="paper"``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from dcsm.errors import DcsmError
from dcsm.io.viz import (
    DEFAULT_OPACITY,
    blank_figure,
    check_opacity,
    colorize,
    display_text,
    image_aspect,
    overlay,
    style_colormap,
)
from dcsm.segmentation.palette import colorize_labels, label_overlay, voc_palette

#: Width of one panel, in inches.
PANEL_INCHES = 2.6
#: Maps are drawn up to this quantile of their own values, so that peaky maps (Simonyan's)
#: stay visible; distinct maps reach ~1 there anyway.
DISPLAY_QUANTILE = 0.99


class SegmentationLike(Protocol):
    """What the figures read of a segmentation (a :class:`dcsm.segmentation.Segmentation`).

    :meth:`dcsm.segmentation.Segmentation.figure` loads this module; naming the class's fields
    here instead of importing it keeps the two modules from importing each other."""

    labels: np.ndarray
    candidates: list[str]
    method: str
    regions: dict[str, np.ndarray]

    def label_names(self) -> dict[int, str]:
        """``{0: "background", 1: first candidate, ...}``."""
        ...


def _legend_handles(seg: SegmentationLike) -> list[Patch]:
    palette = voc_palette() / 255.0
    return [Patch(facecolor=tuple(palette[v]), edgecolor="white",
                  label=display_text(name))
            for v, name in seg.label_names().items()]


def _new_figure(cols: int, aspect: float, legend_rows: int = 0,
                figure: Figure | None = None) -> tuple[Figure, list[Axes]]:
    size = (PANEL_INCHES * cols, PANEL_INCHES * aspect + 0.45 + 0.25 * legend_rows)
    fig = blank_figure(size, figure)
    axes = fig.subplots(1, cols, squeeze=False)[0]
    return fig, list(axes)


def _panel(ax: Axes, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(display_text(title), fontsize=9)
    ax.set_axis_off()


def _display_values(m: np.ndarray) -> np.ndarray:
    """A map divided by its :data:`DISPLAY_QUANTILE` (when positive) and clipped to [0, 1]."""
    values = np.nan_to_num(np.asarray(m, dtype=np.float64))
    top = float(np.quantile(values, DISPLAY_QUANTILE)) if values.size else 1.0
    return np.clip(values / (top if top > 0 else 1.0), 0.0, 1.0)


def _map_panel(ax: Axes, image: np.ndarray, m: np.ndarray, title: str, style: str, cmap: str,
               alpha: float) -> None:
    """A map scaled by :func:`_display_values`: over the image, or alone (``paper``)."""
    values = _display_values(m)
    picture = colorize(values, cmap) if style == "paper" else overlay(image, values, alpha, cmap)
    ax.imshow(picture, interpolation="nearest")
    ax.set_title(display_text(title), fontsize=9)
    ax.set_axis_off()


def _region_picture(image: np.ndarray, region: np.ndarray, label: int) -> np.ndarray:
    """The region in its label's colour over the image, the rest darkened."""
    return label_overlay(image, np.where(region, label, 0).astype(np.uint8))


def segmentation_figure(image: np.ndarray | None, seg: SegmentationLike, title: str | None = None,
                        figure: Figure | None = None) -> Figure:
    """The image and the labels over it (VOC colours, background darkened), with a legend.

    Without an image (``None``), one panel of the labels in their VOC colours (background
    black). ``figure``: draw into this figure instead of a new Agg-backed one.

    Raises:
        DcsmError: if the labels do not fit the image.
    """
    heading = title or f"segmentation ({seg.method})"
    legend_rows = 1 + len(seg.candidates) // 4
    if image is None:
        fig, axes = _new_figure(1, image_aspect(seg.labels), legend_rows, figure)
        _panel(axes[0], colorize_labels(seg.labels), heading)
    else:
        img = np.asarray(image)
        if img.shape[:2] != seg.labels.shape:
            raise DcsmError("the segmentation does not fit the image")
        fig, axes = _new_figure(2, image_aspect(img), legend_rows, figure)
        _panel(axes[0], img, "image")
        _panel(axes[1], label_overlay(img, seg.labels), heading)
    fig.legend(handles=_legend_handles(seg), loc="outside lower center",
               ncol=min(4, len(seg.candidates) + 1), fontsize=9, frameon=False)
    return fig


def figure_one(
    image: np.ndarray,
    simonyan: Mapping[str, np.ndarray],
    grabcut: SegmentationLike,
    distinct: Mapping[str, np.ndarray],
    crf: SegmentationLike,
    distinct_label: str = "ours",
    *,
    style: str = "overlay",
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    colorbar: bool = True,
) -> Figure:
    """The paper's Fig. 1 for any image, one labelled row of panels.

    (A) the image; per class, Simonyan et al.'s maps; per class, their GrabCut regions (each
    class's own region, in its label colour, the rest darkened; regions may overlap); per
    class, the distinct maps; and the CRF labels over the image, with a legend. Maps are
    scaled from 0 to their own 99th percentile and drawn over the image through ``cmap``
    (viridis by default) with opacity ``alpha`` and, with ``colorbar``, a colour bar; or, in
    the ``paper`` style, alone in grey.

    Args:
        image: (H, W, 3) uint8.
        simonyan: class name -> Simonyan map (the classes of ``grabcut`` and ``crf``).
        grabcut: :func:`~dcsm.segmentation.segment_grabcut` of ``simonyan``.
        distinct: class name -> distinct map.
        crf: :func:`~dcsm.segmentation.segment_crf` of ``distinct``.
        distinct_label: how the distinct maps are named in the titles.
        style: ``"overlay"`` or ``"paper"`` (:data:`dcsm.io.viz.STYLES`).
        cmap: the maps' colormap (default: the style's own).
        alpha: the maps' opacity over the image, in [0, 1].
        colorbar: draw a colour bar in the ``overlay`` style.

    Raises:
        DcsmError: if the classes or sizes disagree, or the style, colormap or opacity is not
            known or valid.
    """
    colours = style_colormap(style, cmap)
    alpha = check_opacity(alpha)
    img = np.asarray(image)
    names = list(crf.candidates)
    if list(grabcut.candidates) != names or any(n not in simonyan or n not in distinct
                                                for n in names):
        raise DcsmError("the figure needs the same classes in every panel")
    if img.shape[:2] != crf.labels.shape or img.shape[:2] != grabcut.labels.shape:
        raise DcsmError("the segmentations do not fit the image")
    k = len(names)
    fig, axes = _new_figure(2 + 3 * k, image_aspect(img), legend_rows=1 + k // 6)
    letters = iter("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

    def label(text: str) -> str:
        letter = next(letters, None)
        return f"({letter}) {text}" if letter else text

    _panel(axes[0], img, label("image"))
    for i, name in enumerate(names):
        _map_panel(axes[1 + i], img, simonyan[name], label(f"Simonyan: {name}"), style, colours,
                   alpha)
    for i, name in enumerate(names):
        _panel(axes[1 + k + i], _region_picture(img, grabcut.regions[name], i + 1),
               label(f"GrabCut: {name}"))
    for i, name in enumerate(names):
        _map_panel(axes[1 + 2 * k + i], img, distinct[name], label(f"{distinct_label}: {name}"),
                   style, colours, alpha)
    _panel(axes[-1], label_overlay(img, crf.labels), label(f"CRF on {distinct_label}"))
    fig.legend(handles=_legend_handles(crf), loc="outside lower center",
               ncol=min(6, k + 1), fontsize=9, frameon=False)
    if colorbar and style == "overlay":
        from matplotlib.cm import ScalarMappable
        from matplotlib.colors import Normalize

        fig.colorbar(ScalarMappable(Normalize(0.0, 1.0), colours), ax=list(axes), shrink=0.8,
                     aspect=25, pad=0.02, label="saliency (to the 99th percentile)")
    return fig
