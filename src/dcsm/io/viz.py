"""Figures and colour overlays for saliency maps.

Two styles of drawing a map (:data:`STYLES`):

* ``"overlay"`` (the default): the map, coloured through a perceptually uniform colormap
  (:data:`DEFAULT_COLORMAP`, viridis), blended over the photo with an opacity (:func:`overlay`);
  figures add a colour bar for the map's 0..1 scale.
* ``"paper"``: the map alone in grey (:data:`PAPER_COLORMAP`), side by side with the photo, as
  Shimoda & Yanai's figures show them.

Only matplotlib's object API is used (:class:`~matplotlib.figure.Figure` with a
:class:`~matplotlib.backends.backend_agg.FigureCanvasAgg`), never ``pyplot``, so nothing global
(current figure, backend, figure registry) changes and figures are freed like any object. The
figure builders accept ``figure=`` to draw into a figure made elsewhere (``pyplot`` in
:meth:`dcsm.SaliencyResult.show`).

:func:`png_bytes`, :func:`data_uri` and :func:`html_gallery` turn pictures into PNG bytes and
self-contained HTML (embedded images, nothing loaded from elsewhere), for notebooks and the
viewer.
"""

from __future__ import annotations

import base64
import html
import io
import unicodedata
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize
from matplotlib.figure import Figure
from PIL import Image

from dcsm.errors import DcsmError

__all__ = [
    "DEFAULT_COLORMAP",
    "DEFAULT_OPACITY",
    "PAPER_COLORMAP",
    "STYLES",
    "SUGGESTED_COLORMAPS",
    "blank_figure",
    "check_colormap",
    "check_opacity",
    "check_style",
    "colorize",
    "data_uri",
    "display_text",
    "figure_to_array",
    "figure_to_png",
    "html_gallery",
    "image_aspect",
    "layers_figure",
    "map_picture",
    "maps_figure",
    "overlay",
    "png_bytes",
    "style_colormap",
]

#: Width and height of one panel, in inches.
PANEL_INCHES = 3.0
#: Extra height per row for the panel titles, in inches.
TITLE_INCHES = 0.4
#: Title of the fused-map column in :func:`layers_figure`.
FUSED_TITLE = "average"
#: The colormap of overlays unless one is named: perceptually uniform, readable in grey.
DEFAULT_COLORMAP = "viridis"
#: The colormap of the ``paper`` style: grey maps, as the paper prints them.
PAPER_COLORMAP = "gray"
#: How much of an overlay's colour comes from the map (the rest from the photo).
DEFAULT_OPACITY = 0.5
#: The ways of drawing a map: over the photo, or alone in grey (the paper's figures).
STYLES: tuple[str, ...] = ("overlay", "paper")
#: Colormaps named in error messages and offered by the viewer (any matplotlib name works).
SUGGESTED_COLORMAPS: tuple[str, ...] = (
    "viridis", "inferno", "magma", "plasma", "cividis", "turbo", "jet", "gray")
#: Label of the colour bar of overlay figures.
COLORBAR_LABEL = "saliency"


def check_colormap(name: str) -> str:
    """``name`` if matplotlib knows the colormap, else a one-line :class:`DcsmError`."""
    if not isinstance(name, str) or name not in matplotlib.colormaps:
        raise DcsmError(f"unknown colormap '{name}'; try one of "
                        f"{', '.join(SUGGESTED_COLORMAPS)} (any matplotlib colormap name)")
    return name


def check_opacity(alpha: float) -> float:
    """``alpha`` as a float if it lies in [0, 1], else a one-line :class:`DcsmError`."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise DcsmError(f"opacity must be a number from 0 to 1, got {alpha!r}") from None
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise DcsmError(f"opacity must be from 0 to 1, got {alpha}")
    return value


def check_style(style: str) -> str:
    """``style`` if it is one of :data:`STYLES`, else a one-line :class:`DcsmError`."""
    if style not in STYLES:
        raise DcsmError(f"unknown style '{style}'; known: {', '.join(STYLES)}")
    return style


def style_colormap(style: str, cmap: str | None) -> str:
    """The colormap a style draws with: ``cmap`` if named, else the style's own (viridis over
    the photo, grey for the paper's style)."""
    if cmap is not None:
        return check_colormap(cmap)
    return PAPER_COLORMAP if check_style(style) == "paper" else DEFAULT_COLORMAP


def _colormap(name: str) -> Colormap:
    """Look up a registered matplotlib colormap by name, or raise :class:`DcsmError`."""
    return matplotlib.colormaps[check_colormap(name)]


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


def colorize(m: np.ndarray, cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Colour a float map in [0, 1] through a matplotlib colormap.

    Values outside [0, 1] are clipped, NaN counts as 0. Returns an ``(H, W, 3)`` uint8 array
    whose colours are exactly the colormap's own byte colours (``cmap(value, bytes=True)``).

    Raises:
        DcsmError: if ``m`` is not 2-D or ``cmap`` is not a known colormap.
    """
    values = np.clip(_as_map(m), 0.0, 1.0)
    rgba = _colormap(cmap)(values, bytes=True)
    return np.ascontiguousarray(rgba[..., :3], dtype=np.uint8)


def overlay(image: np.ndarray, m: np.ndarray, alpha: float = DEFAULT_OPACITY,
            cmap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Blend a colourised map over an image.

    Returns the ``(H, W, 3)`` uint8 array ``round((1 - alpha) * image + alpha * colorize(m))``
    (rounding half to even). ``image`` is ``(H, W, 3)`` (or grey ``(H, W)``) uint8 and ``m``
    an ``(H, W)`` float map in [0, 1]; ``alpha`` is the map's opacity.

    Raises:
        DcsmError: if the shapes do not match, ``alpha`` is outside [0, 1], or ``cmap`` is
            unknown.
    """
    alpha = check_opacity(alpha)
    picture = _as_image(image)
    values = _as_map(m)
    if picture.shape[:2] != values.shape:
        ih, iw = picture.shape[:2]
        mh, mw = values.shape
        raise DcsmError(f"map is {mw}x{mh} pixels but the image is {iw}x{ih}; they must match")
    blended = (1.0 - alpha) * picture.astype(np.float64) + alpha * colorize(values, cmap)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def map_picture(image: np.ndarray, m: np.ndarray, style: str = "overlay",
                cmap: str | None = None, alpha: float = DEFAULT_OPACITY) -> np.ndarray:
    """One map as an ``(H, W, 3)`` uint8 picture in a style: :func:`overlay` over ``image``
    (``"overlay"``) or the map alone through the colormap (``"paper"``, grey by default)."""
    colours = style_colormap(style, cmap)
    if style == "paper":
        return colorize(m, colours)
    return overlay(image, m, alpha, colours)


# ----------------------------------------------------------------------------- figures
def _new_figure(rows: int, cols: int, aspect: float = 1.0,
                figure: Figure | None = None) -> tuple[Figure, np.ndarray]:
    """A figure (new and Agg-backed, or ``figure`` resized and cleared) with a ``rows`` x
    ``cols`` grid of axes (a 2-D array).

    ``aspect`` is the panels' height over width (the image's), so rows hug the pictures.
    """
    size = (PANEL_INCHES * cols, (PANEL_INCHES * aspect + TITLE_INCHES) * rows)
    fig = blank_figure(size, figure)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def blank_figure(size: tuple[float, float], figure: Figure | None = None) -> Figure:
    """An empty figure of ``size`` inches with the constrained layout: a new Agg-backed one, or
    ``figure`` cleared and resized (as ``show()`` reuses pyplot's)."""
    if figure is None:
        fig = Figure(figsize=size, layout="constrained")
        FigureCanvasAgg(fig)
        return fig
    figure.clear()
    figure.set_size_inches(*size)
    figure.set_layout_engine("constrained")
    return figure


def image_aspect(image: np.ndarray) -> float:
    """Height over width of an image, bounded to keep figures reasonable."""
    return float(min(max(image.shape[0] / max(image.shape[1], 1), 0.25), 4.0))


def display_text(text: str) -> str:
    """A class or model name as a figure draws it, literally: ``$`` escaped (so a name such as
    ``"$\\frac{$"`` is not read as mathtext, which fails on it), control and format characters
    (NUL, escape, bidirectional overrides) shown as U+FFFD."""
    return "".join("\ufffd" if unicodedata.category(c) in ("Cc", "Cf", "Cs") else
                   "\\$" if c == "$" else c for c in str(text))


def _show_image(ax: Axes, image: np.ndarray, title: str) -> None:
    """Draw an RGB image on ``ax`` with a title and no axis decorations."""
    ax.imshow(_as_image(image))
    ax.set_title(display_text(title))
    ax.set_axis_off()


def _show_map(ax: Axes, image: np.ndarray, m: np.ndarray, title: str, style: str, cmap: str,
              alpha: float) -> None:
    """Draw a [0, 1] map on ``ax`` in ``style``: over the photo (an RGB picture) or alone
    through ``cmap`` on a fixed 0..1 scale."""
    if style == "paper":
        ax.imshow(_as_map(m), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(overlay(image, m, alpha, cmap), interpolation="nearest")
    ax.set_title(display_text(title))
    ax.set_axis_off()


def _colorbar(fig: Figure, axes: Sequence[Axes], cmap: str) -> None:
    """One colour bar for the map panels ``axes``: the colormap over the maps' 0..1 scale."""
    mappable = ScalarMappable(norm=Normalize(0.0, 1.0), cmap=_colormap(cmap))
    fig.colorbar(mappable, ax=list(axes), shrink=0.8, aspect=25, pad=0.02,
                 label=COLORBAR_LABEL)


def maps_figure(
    image: np.ndarray,
    maps: Mapping[str, np.ndarray],
    titles: Mapping[str, str] | None = None,
    suptitle: str | None = None,
    *,
    style: str = "overlay",
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    colorbar: bool = True,
    figure: Figure | None = None,
) -> Figure:
    """One row of panels: the image, then each class's map.

    In the ``overlay`` style each map is drawn over the image (:func:`overlay` with ``alpha``
    and ``cmap``, viridis by default) and, with ``colorbar``, one colour bar shows the maps'
    0..1 scale; in the ``paper`` style each map is drawn alone on a fixed 0..1 scale (grey by
    default), without a colour bar. Each map's panel is titled ``titles[name]`` when given (for
    example ``"tabby (0.62)"``), else the class name; the image panel is titled ``"image"``.
    With no maps the figure holds only the image. Each panel is about 3 inches wide.

    Raises:
        DcsmError: if the image or a map has the wrong number of dimensions, or the style,
            colormap or opacity is not known or valid.
    """
    colours = style_colormap(style, cmap)
    alpha = check_opacity(alpha)
    picture = _as_image(image)
    names = list(maps)
    fig, axes = _new_figure(1, 1 + len(names), image_aspect(picture), figure)
    _show_image(axes[0, 0], picture, "image")
    for col, name in enumerate(names, start=1):
        title = titles[name] if titles is not None and name in titles else name
        _show_map(axes[0, col], picture, maps[name], title, style, colours, alpha)
    if names and colorbar and style == "overlay":
        _colorbar(fig, list(axes[0, 1:]), colours)
    if suptitle is not None:
        fig.suptitle(display_text(suptitle))
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
    *,
    style: str = "overlay",
    cmap: str | None = None,
    alpha: float = DEFAULT_OPACITY,
    colorbar: bool = True,
    figure: Figure | None = None,
) -> Figure:
    """Per-layer maps and their fusion, one row per class (like Fig. 2 of Shimoda & Yanai).

    Columns: the image (titled with the class name), one map per layer (titled with the layer
    name) and the fused map (titled ``"average"``), drawn as in :func:`maps_figure` (over the
    image with a colour bar, or alone in grey for the ``paper`` style).
    ``layer_maps[class][layer]`` and ``fused[class]`` are float maps in [0, 1]. A class lacking
    one of the layers other classes have gets an empty panel there. With no classes the figure
    holds only the image.

    Raises:
        DcsmError: if a class in ``layer_maps`` has no fused map, an array has the wrong number
            of dimensions, or the style, colormap or opacity is not known or valid.
    """
    colours = style_colormap(style, cmap)
    alpha = check_opacity(alpha)
    picture = _as_image(image)
    classes = list(layer_maps)
    missing = [name for name in classes if name not in fused]
    if missing:
        raise DcsmError(f"no fused map for class '{missing[0]}'")
    if not classes:
        fig, axes = _new_figure(1, 1, figure=figure)
        _show_image(axes[0, 0], picture, "image")
        return fig
    layers = _layer_names(layer_maps)
    fig, axes = _new_figure(len(classes), 2 + len(layers), image_aspect(picture), figure)
    for row, name in enumerate(classes):
        _show_image(axes[row, 0], picture, name)
        for col, layer in enumerate(layers, start=1):
            if layer in layer_maps[name]:
                _show_map(axes[row, col], picture, layer_maps[name][layer], layer, style,
                          colours, alpha)
            else:
                axes[row, col].set_title(display_text(layer))
                axes[row, col].set_axis_off()
        _show_map(axes[row, -1], picture, fused[name], FUSED_TITLE, style, colours, alpha)
    if colorbar and style == "overlay":
        _colorbar(fig, list(axes[:, 1:].ravel()), colours)
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


def png_bytes(picture: np.ndarray) -> bytes:
    """An ``(H, W, 3)`` (or grey ``(H, W)``) uint8 picture encoded as PNG bytes."""
    array = np.ascontiguousarray(_as_image(picture), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def figure_to_png(fig: Figure) -> bytes:
    """A figure rendered with Agg (:func:`figure_to_array`) as PNG bytes."""
    return png_bytes(figure_to_array(fig))


def data_uri(picture: np.ndarray) -> str:
    """A picture as a ``data:image/png;base64,...`` URI, to embed in HTML."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode("ascii")


def html_gallery(items: Sequence[tuple[str, str, np.ndarray]], title: str | None = None,
                 element_id: str | None = None, width: int = 320) -> str:
    """Pictures side by side as self-contained HTML (each embedded as a PNG data URI).

    ``items`` are ``(name, caption, picture)``: each becomes ``<figure data-name=name>`` with an
    ``<img alt=name>`` ``width`` CSS pixels wide and ``<figcaption>caption</figcaption>``; every
    text is HTML-escaped. ``title`` adds a heading, ``element_id`` an id on the outer ``div``.
    """
    ident = f' id="{html.escape(element_id)}"' if element_id else ""
    parts = [f'<div class="dcsm-gallery"{ident}>']
    if title:
        parts.append(f"<h4 style=\"margin:0.3em 0\">{html.escape(title)}</h4>")
    parts.append('<div style="display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start">')
    for name, caption, picture in items:
        parts.append(
            f'<figure data-name="{html.escape(name)}" style="margin:0;width:{int(width)}px">'
            f'<img alt="{html.escape(name)}" src="{data_uri(picture)}" '
            f'style="width:100%;height:auto;display:block"/>'
            f'<figcaption style="text-align:center;font-size:0.9em">{html.escape(caption)}'
            "</figcaption></figure>")
    parts.append("</div></div>")
    return "".join(parts)
