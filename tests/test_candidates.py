"""Candidate classes: thresholds, top-k, named classes, the released any-scale rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dcsm.adapters.base import ModelAdapter, Preprocessing
from dcsm.candidates import parse_classes, select
from dcsm.errors import DcsmError

NAMES = ["alpha", "Beta", "gamma", "delta", "epsilon", "zeta"]


def _adapter(multilabel: bool, names: list[str] = NAMES) -> ModelAdapter:
    return ModelAdapter(name="dummy", model=nn.Identity(), class_names=list(names),
                        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0)), default_layers=[],
                        multilabel=multilabel)


def _probs(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


def _idx(cands) -> list[int]:
    return [c.index for c in cands]


# ----------------------------------------------------------------------------- multi-label
def test_multilabel_default_threshold_half():
    probs = _probs([0.9, 0.2, 0.6, 0.51, 0.5, 0.49])
    sel = select(_adapter(True), probs, 0)
    assert _idx(sel.selected) == [0, 2, 3, 4]  # >= 0.5, by decreasing score
    assert _idx(sel.contrast) == [0, 2, 3, 4]
    assert [c.name for c in sel.selected] == ["alpha", "gamma", "delta", "epsilon"]
    assert [c.score for c in sel.selected] == pytest.approx([0.9, 0.6, 0.51, 0.5])
    assert sel.active.shape == (1, 4) and sel.active.all()


def test_multilabel_threshold_and_top_k():
    probs = _probs([0.9, 0.2, 0.6, 0.51, 0.5, 0.49])
    assert _idx(select(_adapter(True), probs, 0, threshold=0.55).selected) == [0, 2]
    assert _idx(select(_adapter(True), probs, 0, top_k=3).selected) == [0, 2, 3]
    assert _idx(select(_adapter(True), probs, 0, threshold=0.3, top_k=10).selected) == [
        0, 2, 3, 4, 5]


def test_multilabel_none_passing_selects_the_best():
    probs = _probs([0.1, 0.3, 0.2, 0.05, 0.0, 0.01])
    assert _idx(select(_adapter(True), probs, 0).selected) == [1]
    assert _idx(select(_adapter(True), probs, 0, threshold=1.0).selected) == [1]


def test_scores_reported_from_the_reference_row():
    probs = _probs([0.1, 0.9, 0.2, 0.0, 0.0, 0.0], [0.8, 0.7, 0.6, 0.0, 0.0, 0.0])
    sel = select(_adapter(True), probs, 1)
    assert _idx(sel.selected) == [0, 1, 2]
    assert [c.score for c in sel.selected] == pytest.approx([0.8, 0.7, 0.6])
    sel0 = select(_adapter(True), probs, 0)
    assert _idx(sel0.selected) == [1]


# ----------------------------------------------------------------------------- softmax
def test_softmax_default_top_two():
    probs = torch.softmax(torch.tensor([[1.0, 3.0, 0.5, 2.5, -1.0, 0.0]]), dim=1)
    sel = select(_adapter(False), probs, 0)
    assert _idx(sel.selected) == [1, 3]
    assert sel.selected[0].score == pytest.approx(float(probs[0, 1]))


def test_softmax_top_k_and_threshold():
    probs = _probs([0.05, 0.4, 0.1, 0.3, 0.15, 0.0])
    assert _idx(select(_adapter(False), probs, 0, top_k=4).selected) == [1, 3, 4, 2]
    assert _idx(select(_adapter(False), probs, 0, threshold=0.35).selected) == [1]
    assert _idx(select(_adapter(False), probs, 0, threshold=0.12, top_k=5).selected) == [1, 3, 4]
    # threshold 0 still excludes classes of probability exactly 0
    assert _idx(select(_adapter(False), probs, 0, top_k=6).selected) == [1, 3, 4, 2, 0]
    # nothing reaches the threshold: still one class
    assert _idx(select(_adapter(False), probs, 0, threshold=0.9).selected) == [1]


@pytest.mark.parametrize("bad", [{"top_k": 0}, {"top_k": -2}, {"threshold": -0.1},
                                 {"threshold": 1.5}])
def test_bad_top_k_or_threshold(bad):
    with pytest.raises(DcsmError):
        select(_adapter(False), _probs([0.5, 0.5, 0, 0, 0, 0]), 0, **bad)


# ----------------------------------------------------------------------------- named classes
@pytest.mark.parametrize("classes,expected", [
    (["gamma", "alpha"], [2, 0]),
    ("gamma,alpha", [2, 0]),
    (" gamma , alpha ", [2, 0]),
    ([4, "Beta"], [4, 1]),
    (["beta", "GAMMA", "Zeta"], [1, 2, 5]),
    (["3", 0], [3, 0]),
    ("5", [5]),
])
def test_named_classes(classes, expected):
    probs = _probs([0.1, 0.2, 0.3, 0.15, 0.05, 0.2])
    for multilabel in (False, True):
        sel = select(_adapter(multilabel), probs, 0, classes=classes, top_k=1, threshold=0.9)
        assert _idx(sel.selected) == expected  # names override top_k and threshold
        assert [c.score for c in sel.selected] == pytest.approx([float(probs[0, i])
                                                                 for i in expected])
        assert sel.active.all()


@pytest.mark.parametrize("classes,match", [
    (["alpha", "omega"], "unknown class 'omega'"),
    ([6], "out of range"),
    (["-1"], "out of range"),
    (["alpha", "ALPHA"], "named twice"),
    ([0, "alpha"], "named twice"),
    ([], "empty class list"),
    (",", "empty class list"),
])
def test_bad_named_classes(classes, match):
    with pytest.raises(DcsmError, match=match):
        select(_adapter(False), _probs([0.1] * 6), 0, classes=classes)


def test_parse_classes_auto():
    assert parse_classes(None) is None
    assert parse_classes("auto") is None and parse_classes(" AUTO ") is None
    assert parse_classes("a, b") == ["a", "b"]
    probs = _probs([0.1, 0.5, 0.4, 0, 0, 0])
    assert _idx(select(_adapter(False), probs, 0, classes="auto").selected) == [1, 2]


# ----------------------------------------------------------------------------- any_scale rule
def test_any_scale_rule_and_active_mask():
    probs = _probs(
        [0.7, 0.1, 0.2, 0.3, 0.0, 0.4],   # scale 0
        [0.6, 0.55, 0.1, 0.2, 0.0, 0.3],  # scale 1 (reference)
        [0.4, 0.2, 0.1, 0.45, 0.0, 0.52],  # scale 2
    )
    adapter = _adapter(True)
    ref_only = select(adapter, probs, 1)
    assert _idx(ref_only.selected) == [0, 1]
    sel = select(adapter, probs, 1, rule="any_scale", min_contrast=4)
    # passing at any scale, ordered by the best score over scales: 0 (0.7), 1 (0.55), 5 (0.52)
    assert _idx(sel.selected) == [0, 1, 5]
    assert [c.score for c in sel.selected] == pytest.approx([0.6, 0.55, 0.3])
    # topped up to four by the score summed over scales: 3 (0.95) beats 2 (0.4)
    assert _idx(sel.contrast) == [0, 1, 5, 3]
    expected_active = torch.tensor([[True, False, False, False],
                                    [True, True, False, False],
                                    [False, False, True, False]])
    assert torch.equal(sel.active, expected_active)


def test_any_scale_top_up_bounded_by_class_count_and_softmax_active():
    names = ["a", "b", "c"]
    probs = _probs([0.2, 0.5, 0.3], [0.1, 0.2, 0.7])
    sel = select(_adapter(False, names), probs, 1, rule="any_scale", min_contrast=4)
    assert _idx(sel.selected) == [2, 1]  # max over scales: c 0.7, b 0.5, a 0.2; top 2
    assert _idx(sel.contrast) == [2, 1, 0]  # all three classes, no more
    # for a softmax model every selected class counts at every scale; padding never does
    assert torch.equal(sel.active, torch.tensor([[True, True, False], [True, True, False]]))


def test_top_up_with_named_classes_and_single_class():
    probs = _probs([0.05, 0.3, 0.1, 0.35, 0.15, 0.05], [0.0, 0.1, 0.35, 0.4, 0.1, 0.05])
    sel = select(_adapter(False), probs, 0, classes=["epsilon"], min_contrast=3)
    assert _idx(sel.selected) == [4]
    assert _idx(sel.contrast) == [4, 3, 2]  # summed: delta .75, gamma .45, Beta .4
    assert torch.equal(sel.active, torch.tensor([[True, False, False], [True, False, False]]))
    one = select(_adapter(False), probs, 0, top_k=1)
    assert len(one.selected) == 1 and len(one.contrast) == 1


# ----------------------------------------------------------------------------- score map rule
def _location_probs() -> torch.Tensor:
    """(6 classes, 2, 3 locations): gamma is the most probable at 3 locations, epsilon at 2,
    alpha at 1; Beta and delta win none, Beta peaks higher (0.4) than delta (0.3)."""
    winners = [[2, 2, 4], [0, 2, 4]]
    peaks = {1: 0.4, 3: 0.3}
    p = torch.full((6, 2, 3), 0.02)
    for i in range(2):
        for j in range(3):
            p[winners[i][j], i, j] = 0.5
    for c, v in peaks.items():
        p[c, 0, 0] = v
    return p


def test_map_ranking_by_wins_then_peak():
    from dcsm.candidates import map_ranking

    assert map_ranking(_location_probs()) == [2, 4, 0, 1, 3, 5]
    tie = torch.zeros(3, 1, 2)
    tie[1] = 0.9  # class 1 wins both locations; 0 and 2 tie at no wins and peak 0: by index
    assert map_ranking(tie) == [1, 0, 2]


def test_score_map_rule_selects_and_tops_up_by_the_map():
    # pooled scores rank delta and Beta first; the map's winners are gamma, epsilon, alpha
    pooled = _probs([0.1, 0.3, 0.15, 0.35, 0.05, 0.05])
    loc = _location_probs()
    sel = select(_adapter(False), pooled, 0, top_k=2, rule="score_map", location_probs=loc)
    assert _idx(sel.selected) == [2, 4]
    assert [c.score for c in sel.selected] == pytest.approx([0.15, 0.05])  # pooled, reported
    assert _idx(select(_adapter(False), pooled, 0, rule="reference_scale").selected) == [3, 1]
    # the threshold applies to the highest probability anywhere: only the winners reach 0.45
    sel = select(_adapter(False), pooled, 0, top_k=5, threshold=0.45, rule="score_map",
                 location_probs=loc)
    assert _idx(sel.selected) == [2, 4, 0]
    # a named class's contrast set is topped up by the map's ranking, not the pooled one
    sel = select(_adapter(False), pooled, 0, classes=["delta"], rule="score_map",
                 min_contrast=3, location_probs=loc)
    assert _idx(sel.selected) == [3] and _idx(sel.contrast) == [3, 2, 4]
    assert sel.active.tolist() == [[True, False, False]]


def test_score_map_rule_errors():
    pooled = _probs([0.1, 0.3, 0.15, 0.35, 0.05, 0.05])
    with pytest.raises(DcsmError, match="per location"):
        select(_adapter(False), pooled, 0, rule="score_map")
    with pytest.raises(DcsmError, match="unknown candidate rule"):
        select(_adapter(False), pooled, 0, rule="nope")  # type: ignore[arg-type]
    with pytest.raises(DcsmError, match="at least 1 class"):
        select(_adapter(False), pooled, 0, min_contrast=0)
