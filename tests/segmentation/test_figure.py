"""Overlays in the files the commands write: each map over the photo (viridis, opacity 0.5 by
default), ``--colormap``, ``--opacity`` and ``--style paper``; the arrays never change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.io import viz
from dcsm.outputs import Display, write_explanation
from dcsm.pipeline.candidates import Candidate
from dcsm.pipeline.result import SaliencyResult
from dcsm.segmentation.common import Segmentation
from dcsm.segmentation.figure import figure_one

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "dcsm" / "data" / "chelsea_coffee.png"


def _result(height: int = 20, width: int = 30) -> SaliencyResult:
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    ramp = np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (height, 1))
    maps = {"tabby": ramp, "espresso": (1.0 - ramp).astype(np.float32)}
    candidates = [Candidate(281, "tabby", 0.62), Candidate(967, "espresso", 0.25)]
    return SaliencyResult(image, maps, candidates, "dcsm", "test", {"scales": [1.0]},
                          contrast=list(candidates))


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# ----------------------------------------------------------------------------- the files
def test_default_class_pictures_are_viridis_overlays(tmp_path):
    result = _result()
    write_explanation(result, tmp_path)
    for name, m in result.maps.items():
        picture = _png(tmp_path / f"{name}.png")
        expected = viz.overlay(result.image, m, 0.5, "viridis")
        np.testing.assert_array_equal(picture, expected)
        # Independently: half the photo plus half viridis' byte colour.
        colours = np.asarray([list(viz.matplotlib.colormaps["viridis"](v, bytes=True)[:3])
                              for v in m[0]], dtype=np.float64)
        row = np.rint(0.5 * result.image[0].astype(np.float64) + 0.5 * colours)
        np.testing.assert_array_equal(picture[0], row.astype(np.uint8))
    with np.load(tmp_path / "maps.npz") as npz:
        for name, m in result.maps.items():
            np.testing.assert_array_equal(npz[name], m)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["map_images"] == {"tabby": "tabby.png", "espresso": "espresso.png"}


@pytest.mark.parametrize(("display", "expect"), [
    (Display(colormap="inferno", opacity=0.8), lambda img, m: viz.overlay(img, m, 0.8, "inferno")),
    (Display(opacity=0.0), lambda img, m: img),
    (Display(style="paper"), lambda img, m: viz.colorize(m, "gray")),
    (Display(style="paper", colormap="magma"), lambda img, m: viz.colorize(m, "magma")),
])
def test_display_options_in_class_pictures(tmp_path, display, expect):
    result = _result()
    write_explanation(result, tmp_path, display=display)
    for name, m in result.maps.items():
        np.testing.assert_array_equal(_png(tmp_path / f"{name}.png"), expect(result.image, m))


def test_paper_and_overlay_figures_differ_and_arrays_do_not(tmp_path):
    result = _result()
    write_explanation(result, tmp_path / "a")
    write_explanation(result, tmp_path / "b", display=Display(style="paper"))
    overlay_figure, paper_figure = _png(tmp_path / "a" / "figure.png"), _png(
        tmp_path / "b" / "figure.png")
    # The paper's figure: beside the photo, grey maps only (every pixel R = G = B); the
    # overlay figure's maps are coloured.
    start = int(paper_figure.shape[1] * 0.4)
    assert (np.ptp(paper_figure[:, start:].astype(int), axis=2) == 0).all()
    assert (np.ptp(overlay_figure[:, start:].astype(int), axis=2) > 30).mean() > 0.2
    for name in ("maps.npz", "summary.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"colormap": "nope"}, "unknown colormap 'nope'"),
    ({"opacity": 1.01}, "opacity"),
    ({"opacity": -0.5}, "opacity"),
    ({"style": "poster"}, "unknown style 'poster'"),
])
def test_display_checks(kwargs, match):
    with pytest.raises(DcsmError, match=match) as exc:
        Display(**kwargs)
    assert "\n" not in str(exc.value)


# ----------------------------------------------------------------------------- Fig. 1
def _segmentation(labels: np.ndarray, method: str) -> Segmentation:
    names = ["tabby", "espresso"]
    masks = {n: labels == v for v, n in enumerate(names, 1)}
    return Segmentation(labels, masks, names, method, regions=dict(masks))


def test_figure_one_styles():
    result = _result()
    labels = np.zeros((20, 30), dtype=np.uint8)
    labels[:, :15], labels[:, 15:] = 1, 2
    crf, grabcut = _segmentation(labels, "crf"), _segmentation(labels, "grabcut")
    fig = figure_one(result.image, result.maps, grabcut, result.maps, crf, cmap="cividis",
                     alpha=0.7)
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    panels = [ax for ax in fig.axes if ax not in bars]
    assert len(bars) == 1 and len(panels) == 8
    assert bars[0].collections[-1].get_cmap().name == "cividis"
    # (B) Simonyan's tabby map, scaled to its 99th percentile, over the photo.
    m = result.maps["tabby"].astype(np.float64)
    scaled = np.clip(m / np.quantile(m, 0.99), 0, 1)
    np.testing.assert_array_equal(panels[1].images[0].get_array(),
                                  viz.overlay(result.image, scaled, 0.7, "cividis"))
    paper = figure_one(result.image, result.maps, grabcut, result.maps, crf, style="paper")
    assert not [ax for ax in paper.axes if ax.get_label() == "<colorbar>"]
    grey = paper.axes[1].images[0].get_array()
    np.testing.assert_array_equal(grey, viz.colorize(scaled, "gray"))
    with pytest.raises(DcsmError, match="colormap"):
        figure_one(result.image, result.maps, grabcut, result.maps, crf, cmap="nope")


# ----------------------------------------------------------------------------- the commands
@pytest.mark.parametrize("command", ["explain", "segment", "figure"])
@pytest.mark.parametrize(("option", "value", "says"), [
    ("--colormap", "no-such-map", "unknown colormap 'no-such-map'"),
    ("--opacity", "1.5", "expected an opacity from 0 to 1, got 1.5"),
    ("--opacity", "-0.1", "expected an opacity from 0 to 1"),
    ("--opacity", "nan", "expected a finite number"),
    ("--style", "poster", "invalid choice: 'poster'"),
])
def test_bad_picture_options_are_one_line(tmp_path, capsys, command, option, value, says):
    out = tmp_path / ("fig.png" if command == "figure" else "out")
    code = cli.main([command, str(BUNDLED), "--out", str(out), option, value])
    _, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and says in err and "Traceback" not in err
    assert not out.exists()


def test_explain_command_colormap_and_opacity(tmp_path, capsys):
    code = cli.main(["explain", str(BUNDLED), "--out", str(tmp_path), "--classes",
                     "tabby,espresso", "--scales", "1", "--colormap", "magma",
                     "--opacity", "0.7"])
    _, err = capsys.readouterr()
    assert code == 0, err
    d = tmp_path / "chelsea_coffee"
    image = np.asarray(Image.open(BUNDLED).convert("RGB"))
    with np.load(d / "maps.npz") as npz:
        for name in ("tabby", "espresso"):
            np.testing.assert_array_equal(_png(d / f"{name}.png"),
                                          viz.overlay(image, npz[name], 0.7, "magma"))
