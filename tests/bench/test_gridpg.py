"""The grid pointing game benchmark: photos and views, grids, scoring, methods, report, CLI.

A hand-built "colour" classifier (:class:`ColourNet`) makes every score known. Its classes are
red, green, blue and dark; on a 2 x 2 grid of a red, a green, a blue and a black cell, the
derivative of class k's score is +15 (per pixel, up to the pooling's 1/(H W)) through the one
active feature of its own cell and -5 through the other cells' features. So Grad-CAM, LayerCAM,
guided back-propagation and dcsm keep only the own cell (score 1), while the plain input
gradient's magnitude is 15 in the own cell and 5 in each other one (score 15 / 30 = 0.5).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import dcsm
from dcsm.bench.gridpg import (
    Grid,
    compose,
    gridpg,
    make_grid,
    plan_runs,
    run_benchmark,
    sample_grids,
    score_maps,
)
from dcsm.bench.methods import METHODS, BenchMethod, contrast_sets, get_methods
from dcsm.bench.photos import (
    Photo,
    View,
    centre_box,
    crop_resize,
    find_views,
    square_boxes,
)
from dcsm.bench.report import box_plot, markdown_table, write_report
from dcsm.cli import main
from dcsm.errors import DcsmError
from dcsm.methods import maps as method_maps
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "dark": (0, 0, 0)}


class ColourNet(nn.Module):
    """features: f = (r, g, b, 1 - r - g - b) (1x1 conv) -> ReLU -> head: logit_k = 20 f_k -
    5 sum_j f_j, at every location (a score map). A red, green, blue or black pixel has exactly
    one active feature, so it scores +15 for its own class and -5 for the others."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 4, 1)
        self.relu = nn.ReLU()
        self.head = nn.Conv2d(4, 4, 1, bias=False)
        with torch.no_grad():
            w = torch.zeros(4, 3)
            w[:3] = torch.eye(3)
            w[3] = -1.0
            self.features.weight.copy_(w[:, :, None, None])
            self.features.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
            self.head.weight.copy_((20 * torch.eye(4) - 5)[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.relu(self.features(x)))


@pytest.fixture(scope="module")
def colour() -> ModelAdapter:
    return ModelAdapter(
        name="colour", model=ColourNet().eval(), class_names=list(COLOURS),
        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0)),
        default_layers=["features"], layer_aliases={}, min_input=8, gradcam_layer="relu")


def plain(rgb: tuple[int, int, int], size: int = 16) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (size, size, 3)).copy()


def view(name: str, index: int, group: str | None = None, size: int = 16) -> View:
    rgb = list(COLOURS.values())[index % 4]
    return View(name, group or name, (0, 0, size), plain(rgb, size), index, f"c{index}", 0.9)


# ----------------------------------------------------------------------------- photos, views
def test_square_boxes_and_centre_box():
    boxes = square_boxes(300, 451)
    assert boxes[:3] == [(0, 0, 300), (0, 75, 300), (0, 151, 300)]  # full height, 3 positions
    assert (0, 0, 225) in boxes and (75, 150, 150) in boxes and (150, 301, 150) in boxes
    assert len(boxes) == len(set(boxes)) == 3 + 9 + 9
    assert square_boxes(10, 10, (1.0,)) == [(0, 0, 10)]
    assert centre_box(300, 451) == (0, 75, 300)
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    assert crop_resize(image, (0, 5, 20), 20).tolist() == image[:, 5:25].tolist()
    assert crop_resize(image, (0, 5, 20), 8).shape == (8, 8, 3)


def test_find_views_keeps_confident_distinct_classes(colour):
    half = np.zeros((16, 32, 3), dtype=np.uint8)
    half[:, :16] = COLOURS["red"]  # left half red, right half dark
    photos = [Photo("p:red", "p:red", plain(COLOURS["red"], 20)), Photo("p:half", "p:half", half),
              Photo("p:grey", "p:grey", plain((128, 128, 128), 20))]
    views = find_views(colour, photos, cell=8, tau=0.9)
    found = {(v.photo, v.class_name) for v in views}
    assert found == {("p:red", "red"), ("p:half", "red"), ("p:half", "dark")}  # grey: unsure
    for v in views:
        assert v.image.shape == (8, 8, 3) and v.confidence >= 0.9
    assert all(v.box[2] == 20 for v in views if v.photo == "p:red")  # best crop kept, once
    whole = find_views(colour, photos, cell=8, tau=0.0, crops=False)
    assert [v.photo for v in whole] == ["p:red", "p:half", "p:grey"]
    assert [v.box for v in whole][1] == (0, 8, 16)  # the centred square
    one = find_views(colour, photos[1:2], cell=8, tau=0.5, per_photo=1)
    assert len(one) == 1
    with pytest.raises(DcsmError):
        find_views(colour, photos, tau=1.5)


# ----------------------------------------------------------------------------- grids
def test_compose_and_make_grid_bookkeeping():
    views = [view(f"p{i}", i) for i in range(4)]
    grid = make_grid(views, 2)
    assert grid.image.shape == (32, 32, 3)
    assert grid.classes == [0, 1, 2, 3]
    assert (grid.image[:16, :16] == COLOURS["red"]).all()
    assert (grid.image[:16, 16:] == COLOURS["green"]).all()
    assert (grid.image[16:, :16] == COLOURS["blue"]).all()
    assert (grid.image[16:, 16:] == 0).all()
    assert grid.as_dict()["cells"][1]["class"] == "c1"
    with pytest.raises(DcsmError, match="distinct classes"):
        make_grid([view("a", 0), view("b", 0), view("c", 1), view("d", 2)], 2)
    with pytest.raises(DcsmError, match="different photos"):
        make_grid([view("a", 0, "g"), view("b", 1, "g"), view("c", 2), view("d", 3)], 2)
    with pytest.raises(DcsmError):
        compose(views[:3], 2)


def test_sample_grids_is_seeded_and_keeps_cells_distinct():
    views = [view(f"p{i}", i % 5, group=f"g{i // 2}") for i in range(12)]  # 6 groups, 5 classes
    grids = sample_grids(views, 2, 10, seed=3)
    assert grids and len(grids) <= 10
    keys = set()
    for g in grids:
        assert len(set(g.classes)) == 4 and len({v.group for v in g.views}) == 4
        keys.add(frozenset((v.photo, v.box) for v in g.views))
    assert len(keys) == len(grids)
    again = sample_grids(views, 2, 10, seed=3)
    assert [[v.photo for v in g.views] for g in again] == [[v.photo for v in g.views]
                                                           for g in grids]
    with pytest.raises(DcsmError, match="needs 9 photos"):
        sample_grids(views, 3, 1)


# ----------------------------------------------------------------------------- scoring
def test_score_maps_known_scores_and_missing_classes():
    m = np.zeros((4, 4))
    m[:2, :2] = 1.0
    m[2:, 2:] = -7.0  # negatives do not count
    maps = {10: m, 11: np.ones((4, 4)), 13: np.zeros((4, 4))}
    assert score_maps(maps, [10, 11, 12, 13], 2, (4, 4)) == [1.0, 0.25, 0.0, 0.0]
    with pytest.raises(DcsmError):
        score_maps({10: np.ones((3, 4))}, [10], 1, (4, 4))


def fake_spec(key: str, contrastive: bool, maker) -> BenchMethod:
    return BenchMethod(key, key.upper(), "test", contrastive, "numpy", lambda adapter, mode:
                      maker(mode))


def test_run_benchmark_on_hand_built_maps():
    grids = [make_grid([view(f"p{i}", i) for i in range(4)], 2)]

    def own_cell(mode):  # all mass in the class's own cell; 'auto' misses class 3
        def run(image, classes):
            out = {}
            for k, c in enumerate(classes):
                m = np.zeros(image.shape[:2])
                m[(k // 2) * 16:(k // 2 + 1) * 16, (k % 2) * 16:(k % 2 + 1) * 16] = 2.0
                out[c] = m
            if mode == "auto":
                out.pop(classes[3])
            return out
        return run

    def uniform(mode):
        return lambda image, classes: {c: np.ones(image.shape[:2]) for c in classes}

    specs = [fake_spec("own", True, own_cell), fake_spec("flat", False, uniform)]
    assert [r.key for r in plan_runs(specs, ["oracle", "auto"])] == ["own@oracle", "own@auto",
                                                                     "flat"]
    results = run_benchmark(None, grids, specs, ["oracle", "auto"])  # type: ignore[arg-type]
    assert results["own@oracle"]["scores"] == [[1.0, 1.0, 1.0, 1.0]]
    assert results["own@auto"]["scores"] == [[1.0, 1.0, 1.0, 0.0]]
    assert results["own@auto"]["candidate_recall"] == 0.75
    assert results["flat"]["scores"] == [[0.25] * 4]
    assert results["flat"]["candidates"] == "n/a"
    s = results["own@auto"]["summary"]
    assert s["mean"] == pytest.approx(0.75) and s["median"] == 1.0 and s["n"] == 4
    assert results["own@oracle"]["seconds_per_grid"] >= 0
    with pytest.raises(DcsmError):
        plan_runs(specs, ["psychic"])


def test_report_files(tmp_path):
    report = {"model": "m", "grid": 2, "cell": 16, "tau": 0.5, "cells_scored": 4,
              "grids": [{}], "methods": {
                  "a@auto": {"label": "A, auto", "source": "dcsm", "candidates": "auto",
                             "scores": [[1.0, 0.5, 0.0, 1.0]], "candidate_recall": 0.75,
                             "summary": {"mean": 0.625, "median": 0.75, "q1": 0.375, "q3": 1.0,
                                         "n": 4}, "seconds_per_grid": 0.5}}}
    table = markdown_table(report)
    assert "| A, auto | dcsm | auto (map for 75 % of cells) | 0.625 | 0.750 | 0.375-1.000 | " \
           "0.50 |" in table
    assert box_plot(report).axes[0].get_xlim() == (-0.02, 1.02)
    paths = write_report(report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["methods"]["a@auto"]["summary"]["mean"] == 0.625
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"
    assert paths["table"].read_text() == table
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


# ----------------------------------------------------------------------------- methods
@pytest.fixture(scope="module")
def colour_grid() -> Grid:
    return make_grid([View(n, n, (0, 0, 16), plain(rgb), k, n, 1.0)
                      for k, (n, rgb) in enumerate(COLOURS.items())], 2)


def scores_of(spec: BenchMethod, adapter, grid, mode="oracle"):
    maps = spec.build(adapter, mode)(grid.image, grid.classes)
    for m in maps.values():
        assert m.shape == grid.image.shape[:2]
    return score_maps(maps, grid.classes, 2, grid.image.shape[:2])


def test_dcsm_methods_on_the_colour_model(colour, colour_grid):
    by_key = {m.key: m for m in METHODS}
    for key in ("dcsm-tuned", "gradcam"):  # (the paper's scales > 1 blur the cell borders)
        assert scores_of(by_key[key], colour, colour_grid) == pytest.approx([1.0] * 4, abs=1e-6)
    assert min(scores_of(by_key["dcsm-paper"], colour, colour_grid)) > 0.9
    assert scores_of(by_key["guided"], colour, colour_grid) == pytest.approx([1.0] * 4)
    assert scores_of(by_key["simonyan"], colour, colour_grid) == pytest.approx([0.5] * 4)
    # The tuned preset's score-map candidates find all four cells' classes by themselves.
    assert scores_of(by_key["dcsm-tuned"], colour, colour_grid, "auto") == pytest.approx(
        [1.0] * 4, abs=1e-6)


def test_contrast_sets_per_candidate_mode(monkeypatch, colour):
    monkeypatch.setattr(method_maps, "pooled_ranking", lambda adapter, image, k: [9, 1, 2, 8, 3])
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    classes = [1, 2, 3, 4]
    assert contrast_sets(colour, image, classes, "oracle") == {
        1: [2, 3, 4], 2: [1, 3, 4], 3: [1, 2, 4], 4: [1, 2, 3]}
    assert contrast_sets(colour, image, classes, "target") == {
        1: [9, 2, 8], 2: [9, 1, 8], 3: [9, 1, 2], 4: [9, 1, 2]}
    assert contrast_sets(colour, image, classes, "auto") == {
        1: [9, 2, 8], 2: [9, 1, 8], 3: None, 4: None}


def test_dcsm_target_mode_names_one_class_and_tops_up(monkeypatch, colour, colour_grid):
    calls = []
    explain = dcsm.DistinctSaliency.explain

    def counted(self, image, classes=None, *args, **kwargs):
        result = explain(self, image, classes, *args, **kwargs)
        calls.append((classes, self.min_contrast, [c.index for c in result.contrast]))
        return result

    monkeypatch.setattr(dcsm.DistinctSaliency, "explain", counted)
    spec = {m.key: m for m in METHODS}["dcsm-tuned"]
    maps = spec.build(colour, "target")(colour_grid.image, colour_grid.classes)
    # one call per cell, naming its class alone; the score map's ranking adds the other three
    assert [(c, m) for c, m, _ in calls] == [([k], 4) for k in range(4)]
    assert all(sorted(contrast) == [0, 1, 2, 3] and contrast[0] == k
               for k, (_, _, contrast) in enumerate(calls))
    assert score_maps(maps, colour_grid.classes, 2, (32, 32)) == pytest.approx([1.0] * 4)
    calls.clear()
    released = {m.key: m for m in METHODS}["dcsm-released"]
    released.build(colour, "target")(colour_grid.image, [0, 3])
    assert [m for _, m, _ in calls] == [4, 4]  # the released preset's own top-up to 4 stays


@pytest.mark.parametrize("key,expected", [
    ("captum-saliency", 0.5), ("captum-guided", 1.0), ("pgc-gradcam", 1.0),
    ("pgc-gradcam-layers", 1.0), ("pgc-layercam-layers", 1.0), ("pgc-finercam", 1.0),
    ("torchcam-gradcam", 1.0), ("torchcam-layercam", 1.0)])
def test_peer_wrappers_on_the_colour_model(colour, colour_grid, key, expected):
    spec = {m.key: m for m in METHODS}[key]
    pytest.importorskip(spec.requires)
    assert scores_of(spec, colour, colour_grid) == pytest.approx([expected] * 4, abs=1e-4)


def test_get_methods_checks_names():
    assert [m.key for m in get_methods(["gradcam", "dcsm-paper", "gradcam"])] == [
        "gradcam", "dcsm-paper"]
    with pytest.raises(DcsmError, match="unknown method"):
        get_methods(["nope"])


def test_tuned_preset_layers_per_model(colour):
    tuned = dcsm.PRESETS["tuned"]
    assert tuned.layers_for("efficientnet_lite0") == [f"block{i}" for i in range(5, 16)]
    assert tuned.layers_for("efficientnet_lite2") == [f"block{i}" for i in range(7, 21)]
    assert tuned.layers_for("colour") is None
    assert dcsm.PRESETS["paper"].layers_for("efficientnet_lite0") is None
    assert dcsm.DistinctSaliency(colour, preset="tuned").layers == ["features"]
    assert dcsm.DistinctSaliency(colour, preset="tuned", layers=["relu"]).layers == ["relu"]


# ----------------------------------------------------------------------------- end to end
def test_gridpg_end_to_end_on_the_colour_model(colour):
    photos = [Photo(n, n, plain(rgb, 24)) for n, rgb in COLOURS.items()]
    photos.append(Photo("grey", "grey", plain((128, 128, 128), 24)))
    spec = {m.key: m for m in METHODS}["gradcam"]
    report = gridpg(colour, photos, n=2, count=3, cell=16, tau=0.9, methods=[spec])
    assert report["cells_scored"] == 4 and len(report["grids"]) == 1  # one set of 4 views
    assert report["methods"]["gradcam"]["summary"]["mean"] == pytest.approx(1.0)
    with pytest.raises(DcsmError, match="needs 9 photos"):
        gridpg(colour, photos, n=3, cell=16, methods=[spec])


def test_cli_errors_are_one_line(capsys, tmp_path):
    for argv in (["--tau", "2"], ["--methods", "nope"], ["--candidates", "psychic"],
                 ["--images", str(tmp_path / "missing.png")]):
        assert main(["bench", "gridpg", "--out", str(tmp_path / "o"), "--methods",
                     "gradcam", *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err
    assert not (tmp_path / "o").exists()


def test_cli_runs_on_given_photos(tmp_path, capsys):
    skd = pytest.importorskip("skimage.data")
    from dcsm.io import save_png

    paths = []
    for name in ("coffee", "chelsea", "camera", "rocket"):
        image = getattr(skd, name)()
        image = np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image
        paths.append(tmp_path / f"{name}.png")
        save_png(paths[-1], image)
    out = tmp_path / "bench"
    assert main(["bench", "gridpg", "--out", str(out), "--model", "squeezenet1_1",
                 "--images", *map(str, paths), "--tau", "0", "--no-crops", "--grids", "1",
                 "--methods", "gradcam,dcsm-tuned", "--candidates", "oracle", "--cell",
                 "96"]) == 0
    report = json.loads((out / "gridpg.json").read_text())
    assert set(report["methods"]) == {"gradcam", "dcsm-tuned@oracle"}
    assert report["cells_scored"] == 4 and len(report["grids"]) == 1
    table = (out / "gridpg.md").read_text()
    for entry in report["methods"].values():
        (scores,) = entry["scores"]  # one grid of four cells, each a share of the map's mass
        assert len(scores) == 4 and all(0.0 <= s <= 1.0 for s in scores)
        summary = entry["summary"]
        assert summary["mean"] == pytest.approx(np.mean(scores))
        assert summary["median"] == pytest.approx(np.median(scores))
        assert f"| {entry['label']} |" in table and f"| {summary['mean']:.3f} |" in table
    assert (out / "gridpg.png").is_file()
    printed = capsys.readouterr().out
    assert all(row in printed for row in table.splitlines() if row.startswith("| "))
