"""Tests for dcsm.viz: colouring, overlays and figure layouts."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from matplotlib.figure import Figure

from dcsm import viz
from dcsm.errors import DcsmError
from dcsm.viz import colorize, figure_to_array, layers_figure, maps_figure, overlay


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
    out = colorize(np.array([[0.0, 1.0]]))
    assert tuple(out[0, 0]) == (0, 0, 127)  # dark blue
    assert tuple(out[0, 1]) == (127, 0, 0)  # dark red
    gray = colorize(np.array([[0.0, 1.0]]), "gray")
    assert tuple(gray[0, 0]) == (0, 0, 0) and tuple(gray[0, 1]) == (255, 255, 255)


def test_colorize_clips_and_handles_nan() -> None:
    out = colorize(np.array([[-3.0, 0.0, 7.0, 1.0, np.nan]]))
    assert tuple(out[0, 0]) == tuple(out[0, 1])
    assert tuple(out[0, 2]) == tuple(out[0, 3])
    assert tuple(out[0, 4]) == tuple(out[0, 1])


def test_colorize_middle_matches_colormap() -> None:
    m = _ramp()
    expected = matplotlib.colormaps["jet"](m, bytes=True)[..., :3]
    np.testing.assert_array_equal(colorize(m), expected)


def test_colorize_errors() -> None:
    with pytest.raises(DcsmError, match="colormap 'no-such-map'"):
        colorize(np.zeros((3, 3)), "no-such-map")
    with pytest.raises(DcsmError):
        colorize(np.zeros((3, 3, 3)))


# ------------------------------------------------------------------ overlay


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_overlay_matches_float64(alpha: float) -> None:
    image = _image()
    m = _ramp()
    colours = matplotlib.colormaps["jet"](m, bytes=True)[..., :3].astype(np.float64)
    expected = np.round((1.0 - alpha) * image.astype(np.float64) + alpha * colours)
    out = overlay(image, m, alpha=alpha)
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


def test_overlay_bad_alpha() -> None:
    with pytest.raises(DcsmError, match="alpha"):
        overlay(_image(), _ramp(), alpha=1.5)


# ------------------------------------------------------------------ figures


def test_maps_figure_axes_and_titles() -> None:
    maps = {"tabby": _ramp(), "Egyptian cat": 1.0 - _ramp(), "coffee mug": np.full((12, 16), 0.5)}
    fig = maps_figure(_image(), maps, titles={"tabby": "tabby 0.62"}, suptitle="three classes")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4
    assert _titles(fig) == ["image", "tabby 0.62", "Egyptian cat", "coffee mug"]
    assert all(not ax.axison for ax in fig.axes)
    assert fig.get_suptitle() == "three classes"
    width, height = fig.get_size_inches()
    assert width == pytest.approx(12.0)
    assert height == pytest.approx(3.0 * 12 / 16 + viz.TITLE_INCHES)  # rows hug the image
    # The image panel shows the image itself; map panels use jet on a fixed 0..1 scale.
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), _image())
    for ax in fig.axes[1:]:
        shown = ax.images[0]
        assert shown.get_clim() == (0.0, 1.0)
        assert shown.get_cmap().name == "jet"
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), maps["tabby"])


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
    assert len(fig.axes) == 2 * cols
    assert _titles(fig) == [
        "dog", "conv3", "conv4", "conv5", "average",
        "cat", "conv3", "conv4", "conv5", "average",
    ]  # fmt: skip
    for ax in fig.axes:
        assert not ax.axison
    spec = fig.axes[0].get_subplotspec().get_gridspec()
    assert (spec.nrows, spec.ncols) == (2, cols)
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), layer_maps["dog"]["conv4"])
    np.testing.assert_array_equal(fig.axes[4].images[0].get_array(), fused["dog"])
    np.testing.assert_array_equal(fig.axes[9].images[0].get_array(), fused["cat"])


def test_layers_figure_missing_fused() -> None:
    with pytest.raises(DcsmError, match="'cat'"):
        layers_figure(_image(), {"cat": {"conv5": _ramp()}}, {})


def test_layers_figure_uneven_layers() -> None:
    layer_maps = {"a": {"l1": _ramp()}, "b": {"l2": _ramp()}}
    fig = layers_figure(_image(), layer_maps, {"a": _ramp(), "b": _ramp()})
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
    # The background is white and the jet map adds saturated colours.
    assert tuple(pixels[0, 0]) == (255, 255, 255)
    assert (pixels[..., 2].astype(int) - pixels[..., 0].astype(int) > 100).any()


def test_figure_to_array_plain_figure() -> None:
    fig = Figure(figsize=(2.0, 1.0), dpi=40)
    pixels = figure_to_array(fig)
    assert pixels.shape == (40, 80, 3)
    assert (pixels == 255).all()
