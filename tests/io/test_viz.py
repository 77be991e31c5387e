"""Tests for dcsm.io.viz: colouring, overlays and figure layouts."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from dcsm.errors import DcsmError
from dcsm.io import viz
from dcsm.io.viz import colorize, figure_to_array, layers_figure, maps_figure, overlay


def _image(height: int = 12, width: int = 16) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _ramp(height: int = 12, width: int = 16) -> np.ndarray:
    return np.tile(np.linspace(0.0, 1.0, width), (height, 1))


def _titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes]


# ------------------------------------------------------------------ colorize


@pytest.mark.parametrize("cmap", ["jet", "viridis", "gray"])
def test_colorize_ends_are_colormap_ends(cmap: str) -> None:
    colormap = matplotlib.colormaps[cmap]
    low = np.asarray(colormap(0.0, bytes=True))[:3]
    high = np.asarray(colormap(1.0, bytes=True))[:3]
    out0 = colorize(np.zeros((4, 5)), cmap)
    out1 = colorize(np.ones((4, 5)), cmap)
    assert out0.dtype == np.uint8 and out0.shape == (4, 5, 3)
    assert (out0 == low).all()
    assert (out1 == high).all()


def test_colorize_jet_known_colours() -> None:
    out = colorize(np.array([[0.0, 1.0]]), "jet")
    assert tuple(out[0, 0]) == (0, 0, 127)  # dark blue
    assert tuple(out[0, 1]) == (127, 0, 0)  # dark red
    gray = colorize(np.array([[0.0, 1.0]]), "gray")
    assert tuple(gray[0, 0]) == (0, 0, 0) and tuple(gray[0, 1]) == (255, 255, 255)


def test_colorize_default_is_viridis() -> None:
    out = colorize(np.array([[0.0, 1.0]]))
    assert viz.DEFAULT_COLORMAP == "viridis"
    assert tuple(out[0, 0]) == (68, 1, 84)  # viridis' dark purple
    assert tuple(out[0, 1]) == (253, 231, 36)  # and its yellow


def test_colorize_clips_and_handles_nan() -> None:
    out = colorize(np.array([[-3.0, 0.0, 7.0, 1.0, np.nan]]))
    assert tuple(out[0, 0]) == tuple(out[0, 1])
    assert tuple(out[0, 2]) == tuple(out[0, 3])
    assert tuple(out[0, 4]) == tuple(out[0, 1])


@pytest.mark.parametrize("cmap", ["jet", "viridis", "inferno"])
def test_colorize_middle_matches_colormap(cmap: str) -> None:
    m = _ramp()
    expected = matplotlib.colormaps[cmap](m, bytes=True)[..., :3]
    np.testing.assert_array_equal(colorize(m, cmap), expected)


def test_colorize_errors() -> None:
    with pytest.raises(DcsmError, match="colormap 'no-such-map'") as exc:
        colorize(np.zeros((3, 3)), "no-such-map")
    assert "\n" not in str(exc.value) and "viridis" in str(exc.value)
    with pytest.raises(DcsmError):
        colorize(np.zeros((3, 3, 3)))


# ------------------------------------------------------------------ overlay


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("cmap", [None, "jet", "magma"])
def test_overlay_matches_float64(alpha: float, cmap: str | None) -> None:
    image = _image()
    m = _ramp()
    name = cmap or "viridis"  # the default
    colours = matplotlib.colormaps[name](m, bytes=True)[..., :3].astype(np.float64)
    expected = np.round((1.0 - alpha) * image.astype(np.float64) + alpha * colours)
    out = overlay(image, m, alpha=alpha) if cmap is None else overlay(image, m, alpha, cmap)
    assert out.dtype == np.uint8 and out.shape == image.shape
    np.testing.assert_array_equal(out, expected.astype(np.uint8))


def test_overlay_extremes() -> None:
    image = _image()
    m = _ramp()
    np.testing.assert_array_equal(overlay(image, m, alpha=0.0), image)
    np.testing.assert_array_equal(overlay(image, m, alpha=1.0), colorize(m))


def test_overlay_shape_mismatch() -> None:
    with pytest.raises(DcsmError) as exc:
        overlay(_image(12, 16), np.zeros((12, 15)))
    assert "\n" not in str(exc.value)
    assert "15x12" in str(exc.value) and "16x12" in str(exc.value)


@pytest.mark.parametrize("alpha", [1.5, -0.1, float("nan"), "half"])
def test_overlay_bad_alpha(alpha) -> None:
    with pytest.raises(DcsmError, match="opacity") as exc:
        overlay(_image(), _ramp(), alpha=alpha)
    assert "\n" not in str(exc.value)


def test_overlay_unknown_colormap() -> None:
    with pytest.raises(DcsmError, match="unknown colormap 'nope'"):
        overlay(_image(), _ramp(), cmap="nope")


def test_map_picture_styles() -> None:
    image, m = _image(), _ramp()
    np.testing.assert_array_equal(viz.map_picture(image, m), overlay(image, m))
    np.testing.assert_array_equal(viz.map_picture(image, m, "overlay", "inferno", 0.8),
                                  overlay(image, m, 0.8, "inferno"))
    grey = viz.map_picture(image, m, "paper")
    np.testing.assert_array_equal(grey, colorize(m, "gray"))
    assert (grey[..., 0] == grey[..., 1]).all() and (grey[..., 1] == grey[..., 2]).all()
    with pytest.raises(DcsmError, match="unknown style 'fancy'"):
        viz.map_picture(image, m, "fancy")


def test_style_colormap() -> None:
    assert viz.style_colormap("overlay", None) == "viridis"
    assert viz.style_colormap("paper", None) == "gray"
    assert viz.style_colormap("paper", "magma") == "magma"
    with pytest.raises(DcsmError):
        viz.style_colormap("overlay", "nope")


# ------------------------------------------------------------------ figures


def _colorbars(fig: Figure) -> list:
    return [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]


def test_maps_figure_axes_and_titles() -> None:
    maps = {"tabby": _ramp(), "Egyptian cat": 1.0 - _ramp(), "coffee mug": np.full((12, 16), 0.5)}
    fig = maps_figure(_image(), maps, titles={"tabby": "tabby 0.62"}, suptitle="three classes")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 5  # the image, three maps and the colour bar
    panels = [ax for ax in fig.axes if ax not in _colorbars(fig)]
    assert [ax.get_title() for ax in panels] == ["image", "tabby 0.62", "Egyptian cat",
                                                "coffee mug"]
    assert all(not ax.axison for ax in panels)
    assert fig.get_suptitle() == "three classes"
    width, height = fig.get_size_inches()
    assert width == pytest.approx(12.0)
    assert height == pytest.approx(3.0 * 12 / 16 + viz.TITLE_INCHES)  # rows hug the image
    # The image panel shows the image itself; map panels show the map over it (viridis, 0.5).
    np.testing.assert_array_equal(panels[0].images[0].get_array(), _image())
    for ax, name in zip(panels[1:], maps, strict=True):
        np.testing.assert_array_equal(ax.images[0].get_array(), overlay(_image(), maps[name]))
    # One colour bar: viridis over the maps' 0..1 scale.
    [bar] = _colorbars(fig)
    assert bar.get_ylabel() == viz.COLORBAR_LABEL
    assert bar.get_ylim() == (0.0, 1.0)
    assert bar.collections[-1].get_cmap().name == "viridis"


def test_maps_figure_overlay_options() -> None:
    maps = {"a": _ramp()}
    fig = maps_figure(_image(), maps, cmap="inferno", alpha=0.8)
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(),
                                  overlay(_image(), maps["a"], 0.8, "inferno"))
    [bar] = _colorbars(fig)
    assert bar.collections[-1].get_cmap().name == "inferno"
    assert len(_colorbars(maps_figure(_image(), maps, colorbar=False))) == 0


def test_maps_figure_paper_style() -> None:
    maps = {"tabby": _ramp(), "espresso": 1.0 - _ramp()}
    fig = maps_figure(_image(), maps, style="paper")
    assert len(fig.axes) == 3 and _colorbars(fig) == []  # grey maps side by side, no bar
    for ax, name in zip(fig.axes[1:], maps, strict=True):
        shown = ax.images[0]
        assert shown.get_clim() == (0.0, 1.0)
        assert shown.get_cmap().name == "gray"
        np.testing.assert_array_equal(shown.get_array(), maps[name])
    # Rendered, the map panels hold only greys.
    pixels = figure_to_array(fig)
    assert (np.ptp(pixels.astype(int), axis=2) == 0).mean() > 0.99 - 1 / 3


def test_figure_bad_options() -> None:
    with pytest.raises(DcsmError, match="colormap"):
        maps_figure(_image(), {"a": _ramp()}, cmap="nope")
    with pytest.raises(DcsmError, match="opacity"):
        layers_figure(_image(), {"a": {"l": _ramp()}}, {"a": _ramp()}, alpha=2)
    with pytest.raises(DcsmError, match="style"):
        maps_figure(_image(), {"a": _ramp()}, style="poster")


def test_maps_figure_without_maps() -> None:
    fig = maps_figure(_image(), {})
    assert len(fig.axes) == 1
    assert _titles(fig) == ["image"]
    pixels = figure_to_array(fig)
    assert pixels.shape[2] == 3 and pixels.size > 0


def test_layers_figure_grid() -> None:
    layers = ["conv3", "conv4", "conv5"]
    layer_maps = {
        "dog": {name: _ramp() * (i + 1) / 3 for i, name in enumerate(layers)},
        "cat": {name: 1.0 - _ramp() for name in layers},
    }
    fused = {"dog": _ramp(), "cat": 1.0 - _ramp()}
    fig = layers_figure(_image(), layer_maps, fused)
    cols = 2 + len(layers)
    assert len(fig.axes) == 2 * cols + 1  # and one colour bar
    assert len(_colorbars(fig)) == 1
    assert _titles(fig)[:-1] == [
        "dog", "conv3", "conv4", "conv5", "average",
        "cat", "conv3", "conv4", "conv5", "average",
    ]  # fmt: skip
    for ax in fig.axes[:-1]:
        assert not ax.axison
    spec = fig.axes[0].get_subplotspec().get_gridspec()
    assert (spec.nrows, spec.ncols) == (2, cols)
    image = _image()
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(),
                                  overlay(image, layer_maps["dog"]["conv4"]))
    np.testing.assert_array_equal(fig.axes[4].images[0].get_array(), overlay(image, fused["dog"]))
    np.testing.assert_array_equal(fig.axes[9].images[0].get_array(), overlay(image, fused["cat"]))
    paper = layers_figure(image, layer_maps, fused, style="paper")
    assert len(paper.axes) == 2 * cols and _colorbars(paper) == []
    np.testing.assert_array_equal(paper.axes[2].images[0].get_array(), layer_maps["dog"]["conv4"])
    assert paper.axes[2].images[0].get_cmap().name == "gray"


def test_layers_figure_missing_fused() -> None:
    with pytest.raises(DcsmError, match="'cat'"):
        layers_figure(_image(), {"cat": {"conv5": _ramp()}}, {})


def test_layers_figure_uneven_layers() -> None:
    layer_maps = {"a": {"l1": _ramp()}, "b": {"l2": _ramp()}}
    fig = layers_figure(_image(), layer_maps, {"a": _ramp(), "b": _ramp()}, colorbar=False)
    assert len(fig.axes) == 2 * 4
    assert _titles(fig) == ["a", "l1", "l2", "average", "b", "l1", "l2", "average"]
    assert len(fig.axes[2].images) == 0  # class "a" has no "l2" map
    assert len(fig.axes[5].images) == 0  # class "b" has no "l1" map


def test_figure_to_array_size() -> None:
    fig = maps_figure(_image(), {"x": _ramp()})
    fig.set_dpi(50)
    width, height = fig.get_size_inches()
    pixels = figure_to_array(fig)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (round(height * 50), round(width * 50), 3)
    # The background is white and the viridis map adds its yellow.
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert ((pixels[..., 0] > 200) & (pixels[..., 2] < 80)).any()


def test_figure_to_array_plain_figure() -> None:
    fig = Figure(figsize=(2.0, 1.0), dpi=40)
    pixels = figure_to_array(fig)
    assert pixels.shape == (40, 80, 3)
    assert (pixels == 255).all()


def test_figure_into_given_figure() -> None:
    given = Figure()
    fig = maps_figure(_image(), {"a": _ramp()}, figure=given)
    assert fig is given and len(given.axes) == 3
    assert tuple(given.get_size_inches()) == pytest.approx((6.0, 3.0 * 12 / 16 + 0.4))


def test_png_bytes_and_data_uri_round_trip() -> None:
    import base64
    import io

    from PIL import Image

    picture = _image()
    decoded = np.asarray(Image.open(io.BytesIO(viz.png_bytes(picture))))
    np.testing.assert_array_equal(decoded, picture)
    uri = viz.data_uri(picture)
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw))), picture)


def test_html_gallery_escapes_and_embeds() -> None:
    import re

    page = viz.html_gallery([("a<b", "a<b 0.500", _image()), ("cat", "cat 0.25", _image())],
                            title="maps & more", element_id="g1")
    assert '<div class="dcsm-gallery" id="g1">' in page
    assert "maps &amp; more" in page
    assert re.findall(r'alt="([^"]*)"', page) == ["a&lt;b", "cat"]
    assert "<figcaption" in page and "a&lt;b 0.500" in page and "cat 0.25" in page
    assert page.count("data:image/png;base64,") == 2
    assert "http" not in page  # nothing loaded from elsewhere
