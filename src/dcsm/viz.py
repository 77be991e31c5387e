"""Figures and colour overlays for saliency maps.

Only matplotlib's object API is used (:class:`~matplotlib.figure.Figure` with a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`), never ``pyplot``, so nothing global
(current figure, backend, figure registry) changes and figures are freed like any object.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Colormap
from matplotlib.figure import Figure

from dcsm.errors import DcsmError

__all__ = [
    "colorize",
    "figure_to_array",
    "layers_figure",
    "maps_figure",
    "overlay",
]

#: Width and height of one panel, in inches.
PANEL_INCHES = 3.0
#: Extra height per row for the panel titles, in inches.
TITLE_INCHES = 0.4
#: Title of the fused-map column in :func:`layers_figure`.
FUSED_TITLE = "average"


def _colormap(name: str) -> Colormap:
    """Look up a registered matplotlib colormap by name, or raise :class:`DcsmError`."""
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        raise DcsmError(f"unknown colormap '{name}'") from None


def _as_map(m: np.ndarray, what: str = "map") -> np.ndarray:
    """Return ``m`` as a 2-D float64 array with NaN set to 0, or raise :class:`DcsmError`."""
    array = np.asarray(m, dtype=np.float64)
    if array.ndim != 2:
        raise DcsmError(f"{what} must be a 2-D array, got shape {array.shape}")
    return np.nan_to_num(array, nan=0.0, posinf=1.0, neginf=0.0)


def _as_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an ``(H, W, 3)`` array (a grey ``(H, W)`` image is repeated)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, np.newaxis], 3, axis=2)
    if array.ndim != 3 or array.shape[2] != 3:
        raise DcsmError(f"image must be an (H, W, 3) array, got shape {array.shape}")
    return array


def colorize(m: np.ndarray, cmap: str = "jet") -> np.ndarray:
    """Colour a float map in [0, 1] through a matplotlib colormap.

    Values outside [0, 1] are clipped, NaN counts as 0. Returns an ``(H, W, 3)`` uint8 array
    whose colours are exactly the colormap's own byte colours (``cmap(value, bytes=True)``).

    Raises:
        DcsmError: if ``m`` is not 2-D or ``cmap`` is not a known colormap.
    """
    values = np.clip(_as_map(m), 0.0, 1.0)
    rgba = _colormap(cmap)(values, bytes=True)
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def overlay(image: np.ndarray, m: np.ndarray, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Blend a colourised map over an image.

    Returns the ``(H, W, 3)`` uint8 array ``round((1 - alpha) * image + alpha * colorize(m))``
    (rounding half to even). ``image`` is ``(H, W, 3)`` (or grey ``(H, W)``) uint8 and ``m``
    an ``(H, W)`` float map in [0, 1].

    Raises:
        DcsmError: if the shapes do not match, ``alpha`` is outside [0, 1], or ``cmap`` is
            unknown.
    """
    if not 0.0 <= float(alpha) <= 1.0:
        raise DcsmError(f"overlay alpha must be between 0 and 1, got {alpha}")
    picture = _as_image(image)
    values = _as_map(m)
    if picture.shape[:2] != values.shape:
        ih, iw = picture.shape[:2]
        mh, mw = values.shape
        raise DcsmError(f"map is {mw}x{mh} pixels but the image is {iw}x{ih}; they must match")
    blended = (1.0 - alpha) * picture.astype(np.float64) + alpha * colorize(values, cmap)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def _new_figure(rows: int, cols: int, aspect: float = 1.0) -> tuple[Figure, np.ndarray]:
    """Create an Agg-backed figure with a ``rows`` x ``cols`` grid of axes (a 2-D array).

    ``aspect`` is the panels' height over width (the image's), so rows hug the pictures.
    """
    fig = Figure(
        figsize=(PANEL_INCHES * cols, (PANEL_INCHES * aspect + TITLE_INCHES) * rows),
        layout="constrained",
    )
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _aspect(image: np.ndarray) -> float:
    """Height over width of an image, bounded to keep figures reasonable."""
    return float(min(max(image.shape[0] / max(image.shape[1], 1), 0.25), 4.0))


def _show_image(ax: Axes, image: np.ndarray, title: str) -> None:
    """Draw an RGB image on ``ax`` with a title and no axis decorations."""
    ax.imshow(_as_image(image))
    ax.set_title(title)
    ax.set_axis_off()


def _show_map(ax: Axes, m: np.ndarray, title: str) -> None:
    """Draw a [0, 1] map on ``ax`` as a jet heat map with a title and no axis decorations."""
    ax.imshow(_as_map(m), cmap="jet", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_title(title)
    ax.set_axis_off()


def maps_figure(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    titles: Mapping[str, str] | None = None,
    suptitle: str | None = None,
) -> Figure:
    """One row of panels: the image, then each class's map as a heat map.

    Maps are drawn with the ``jet`` colormap on a fixed 0..1 scale. Each map's panel is titled
    ``titles[name]`` when given (for example ``"tabby 0.62"``), else the class name; the image
    panel is titled ``"image"``. With no maps the figure holds only the image. Each panel is
    about 3 inches wide.

    Raises:
        DcsmError: if the image or a map has the wrong number of dimensions.
    """
    names = list(maps)
    fig, axes = _new_figure(1, 1 + len(names), _aspect(image))
    _show_image(axes[0, 0], image, "image")
    for col, name in enumerate(names, start=1):
        title = titles[name] if titles is not None and name in titles else name
        _show_map(axes[0, col], maps[name], title)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


def _layer_names(layer_maps: Mapping[str, Mapping[str, np.ndarray]]) -> Sequence[str]:
    """All layer names of all classes, in order of first appearance."""
    seen: dict[str, None] = {}
    for per_layer in layer_maps.values():
        for layer in per_layer:
            seen.setdefault(layer, None)
    return list(seen)


def layers_figure(
    image: np.ndarray,
    layer_maps: Mapping[str, Mapping[str, np.ndarray]],
    fused: Mapping[str, np.ndarray],
) -> Figure:
    """Per-layer maps and their fusion, one row per class (like Fig. 2 of Shimoda & Yanai).

    Columns: the image (titled with the class name), one heat map per layer (titled with the
    layer name) and the fused map (titled ``"average"``). ``layer_maps[class][layer]`` and
    ``fused[class]`` are float maps in [0, 1]. A class lacking one of the layers other classes
    have gets an empty panel there. With no classes the figure holds only the image.

    Raises:
        DcsmError: if a class in ``layer_maps`` has no fused map, or an array has the wrong
            number of dimensions.
    """
    classes = list(layer_maps)
    missing = [name for name in classes if name not in fused]
    if missing:
        raise DcsmError(f"no fused map for class '{missing[0]}'")
    if not classes:
        fig, axes = _new_figure(1, 1)
        _show_image(axes[0, 0], image, "image")
        return fig
    layers = _layer_names(layer_maps)
    fig, axes = _new_figure(len(classes), 2 + len(layers), _aspect(image))
    for row, name in enumerate(classes):
        _show_image(axes[row, 0], image, name)
        for col, layer in enumerate(layers, start=1):
            if layer in layer_maps[name]:
                _show_map(axes[row, col], layer_maps[name][layer], layer)
            else:
                axes[row, col].set_title(layer)
                axes[row, col].set_axis_off()
        _show_map(axes[row, -1], fused[name], FUSED_TITLE)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure with Agg and return its pixels as an ``(H, W, 3)`` uint8 array.

    ``H`` and ``W`` are the figure's size in inches times its dpi.
    """
    canvas = fig.canvas
    if not isinstance(canvas, FigureCanvasAgg):
        canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.array(rgba[..., :3], dtype=np.uint8)
