"""Notebook display: ``SaliencyResult`` and ``Segmentation`` show themselves (PNG, HTML,
pyplot), and ``result.overlay(class)`` returns the picture. The outputs are decoded and their
pixels compared with :func:`dcsm.io.viz.overlay` computed independently."""

from __future__ import annotations

import base64
import io
import re

import matplotlib
import numpy as np
import pytest
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io import viz
from dcsm.pipeline.candidates import Candidate
from dcsm.pipeline.result import DISPLAY_SIDE, SaliencyResult
from dcsm.segmentation.common import Segmentation
from dcsm.segmentation.palette import voc_palette

H, W = 16, 24


def _result(height: int = H, width: int = W) -> SaliencyResult:
    """A photo grey on the left, white on the right; "tabby" is 1 on the left half and 0 on the
    right, "espresso" the reverse."""
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    image[:, : width // 2] = 100
    left = np.zeros((height, width), dtype=np.float32)
    left[:, : width // 2] = 1.0
    maps = {"tabby": left, "espresso": 1.0 - left}
    candidates = [Candidate(281, "tabby", 0.625), Candidate(967, "espresso", 0.25)]
    return SaliencyResult(image, maps, candidates, "dcsm", "efficientnet_lite0")


def _viridis(value: float) -> np.ndarray:
    return np.asarray(matplotlib.colormaps["viridis"](value, bytes=True)[:3], dtype=np.float64)


def _decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


# ----------------------------------------------------------------------------- overlay()
def test_overlay_by_name_and_index():
    result = _result()
    by_name = result.overlay("tabby")
    assert by_name.dtype == np.uint8 and by_name.shape == (H, W, 3)
    # Left half: 0.5 * grey 100 + 0.5 * viridis(1); right half: 0.5 * white + 0.5 * viridis(0).
    left = np.rint(0.5 * 100 + 0.5 * _viridis(1.0))
    right = np.rint(0.5 * 255 + 0.5 * _viridis(0.0))
    assert (by_name[:, : W // 2] == left).all() and (by_name[:, W // 2:] == right).all()
    np.testing.assert_array_equal(result.overlay(281), by_name)  # the model's class index
    np.testing.assert_array_equal(result.overlay(np.int64(967)), result.overlay("espresso"))


def test_overlay_options():
    result = _result()
    np.testing.assert_array_equal(result.overlay("espresso", alpha=0.8, cmap="inferno"),
                                  viz.overlay(result.image, result.maps["espresso"], 0.8,
                                              "inferno"))
    np.testing.assert_array_equal(result.overlay("tabby", alpha=0.0), result.image)


@pytest.mark.parametrize(("call", "match"), [
    (lambda r: r.overlay("tiger cat"), "no map of class 'tiger cat'.*tabby, espresso"),
    (lambda r: r.overlay(5), "no map of class 5"),
    (lambda r: r.overlay(True), "no map of class True"),
    (lambda r: r.overlay("tabby", alpha=1.5), "opacity"),
    (lambda r: r.overlay("tabby", cmap="nope"), "unknown colormap 'nope'"),
])
def test_overlay_errors_are_one_line(call, match):
    with pytest.raises(DcsmError, match=match) as exc:
        call(_result())
    assert "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- _repr_html_
def _embedded(page: str) -> list[tuple[str, np.ndarray]]:
    found = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    return [(alt, _decode(base64.b64decode(data))) for alt, data in found]


def test_repr_html_shows_photo_and_each_overlay_with_score():
    result = _result()
    page = result._repr_html_()
    assert "dcsm" in page and "efficientnet_lite0" in page
    assert "tabby 0.625" in page and "espresso 0.250" in page
    pictures = _embedded(page)
    assert [alt for alt, _ in pictures] == ["image", "tabby", "espresso"]
    np.testing.assert_array_equal(pictures[0][1], result.image)
    for alt, picture in pictures[1:]:
        np.testing.assert_array_equal(picture,
                                      viz.overlay(result.image, result.maps[alt], 0.5, "viridis"))
    assert "http" not in page  # self-contained


def test_repr_html_shrinks_large_photos_and_escapes_names():
    result = _result(DISPLAY_SIDE + 160, 2 * DISPLAY_SIDE)
    result.maps = {"<cat & co>": result.maps["tabby"]}
    result.candidates = [Candidate(1, "<cat & co>", 0.5)]
    page = result._repr_html_()
    assert "&lt;cat &amp; co&gt; 0.500" in page and "<cat" not in page
    pictures = _embedded(page)
    assert [p.shape[:2] for _, p in pictures] == [(400, 640)] * 2
    # The map is 1 on the left half: the shrunk overlay there is grey 100 blended with yellow.
    expected = np.rint(0.5 * 100 + 0.5 * _viridis(1.0))
    assert (pictures[1][1][:, :300] == expected).all()


# ----------------------------------------------------------------------------- _repr_png_
def _count(picture: np.ndarray, colour: np.ndarray) -> int:
    return int((picture == colour.astype(np.uint8)).all(axis=2).sum())


def test_repr_png_draws_the_overlays():
    result = _result()
    png = result._repr_png_()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    picture = _decode(png)
    # One row: the photo and two map panels of about 3 inches at 100 dpi, and a colour bar.
    assert picture.shape[1] >= 900 and 150 <= picture.shape[0] <= 400
    # The overlay colours of viz.overlay fill large blocks of the rendered panels.
    tabby_left = np.rint(0.5 * 100 + 0.5 * _viridis(1.0))
    tabby_right = np.rint(0.5 * 255 + 0.5 * _viridis(0.0))
    assert _count(picture, tabby_left) > 4000 and _count(picture, tabby_right) > 4000
    # The paper's grey drawing would not contain them.
    paper = _decode(viz.figure_to_png(result.figure(style="paper")))
    assert _count(paper, tabby_left) == 0


def test_figure_titles_scores_and_styles():
    result = _result()
    fig = result.figure()
    titles = [ax.get_title() for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert titles == ["image", "tabby (0.625)", "espresso (0.250)"]
    assert fig.get_suptitle() == "dcsm (efficientnet_lite0)"
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(), result.overlay("tabby"))
    magma = result.figure(cmap="magma", alpha=0.9)
    np.testing.assert_array_equal(magma.axes[2].images[0].get_array(),
                                  result.overlay("espresso", 0.9, "magma"))


# ----------------------------------------------------------------------------- show()
@pytest.fixture
def shown(monkeypatch):
    """pyplot on Agg, ``plt.show`` recording the figure it would show."""
    import matplotlib.pyplot as plt

    plt.switch_backend("agg")
    figures: list = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: figures.append(plt.gcf()))
    yield figures
    plt.close("all")


def test_show_draws_the_figure_with_pyplot(shown):
    import matplotlib.pyplot as plt

    result = _result()
    assert result.show(alpha=0.3) is None
    [fig] = shown
    assert fig.number in plt.get_fignums()  # a pyplot figure, not a detached one
    panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert [ax.get_title() for ax in panels] == ["image", "tabby (0.625)", "espresso (0.250)"]
    np.testing.assert_array_equal(panels[1].images[0].get_array(), result.overlay("tabby", 0.3))
    expected = viz.figure_to_array(result.figure(alpha=0.3))
    fig.set_dpi(100)
    np.testing.assert_array_equal(viz.figure_to_array(fig), expected)


def test_pyplot_only_inside_show():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from dcsm.pipeline.result import SaliencyResult; "
            "from dcsm.pipeline.candidates import Candidate; "
            "r = SaliencyResult(np.zeros((8, 8, 3), np.uint8), {'a': np.zeros((8, 8))}, "
            "[Candidate(0, 'a', 1.0)], 'dcsm', 'm'); r._repr_png_(); r._repr_html_(); "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- Segmentation
def _segmentation() -> Segmentation:
    labels = np.zeros((H, W), dtype=np.uint8)
    labels[:, : W // 2] = 1
    labels[: H // 2, W // 2:] = 2
    names = ["tabby", "espresso"]
    masks = {n: labels == v for v, n in enumerate(names, 1)}
    return Segmentation(labels, masks, names, "crf", regions=dict(masks))


def test_segmentation_repr_png_shows_label_colours_and_legend():
    seg = _segmentation()
    picture = _decode(seg._repr_png_())
    palette = voc_palette(3)
    for v in (1, 2):  # VOC red and green fill their blocks of the panel
        assert _count(picture, palette[v]) > 2000
    fig = seg.figure()
    [legend] = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["background", "tabby", "espresso"]


def test_segmentation_show_over_the_image(shown):
    from dcsm.segmentation.palette import label_overlay

    result, seg = _result(), _segmentation()
    assert seg.show(result.image) is None
    [fig] = shown
    assert [ax.get_title() for ax in fig.axes] == ["image", "segmentation (crf)"]
    np.testing.assert_array_equal(fig.axes[1].images[0].get_array(),
                                  label_overlay(result.image, seg.labels))
    with pytest.raises(DcsmError, match="does not fit"):
        seg.figure(np.zeros((H + 1, W, 3), dtype=np.uint8))
