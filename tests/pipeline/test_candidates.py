"""Candidate classes: thresholds, top-k, named classes, the released any-scale rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.candidates import LookAlikes, parse_classes, select, semantic_kinds

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
    from dcsm.pipeline.candidates import map_ranking

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


# ----------------------------------------------------------------------------- look-alikes
#: The hand-built model's classes: two look-alikes of one object, a second object, the rest.
PARTS = ["mountain bike", "tandem", "dog", "ground"]


class _PixelHead(nn.Module):
    """Each location's class scores a fixed linear function of its RGB pixel (1x1 convolutions
    through a ReLU), so an image painted in pure colours has a known score map:

    * red (upper left): mountain bike 3, tandem 2, ground 0.5, dog 0;
    * green (lower left): tandem 3, mountain bike 2, ground 0.5, dog 0;
    * blue (right half): dog 3, ground 1, the bikes 0.
    """

    def __init__(self) -> None:
        super().__init__()
        self.feat = nn.Conv2d(3, 3, 1)
        self.act = nn.ReLU()
        self.head = nn.Conv2d(3, 4, 1)
        with torch.no_grad():
            self.feat.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / 255.0)
            self.feat.bias.zero_()
            self.head.weight.copy_(torch.tensor([[3.0, 2.0, 0.0], [2.0, 3.0, 0.0],
                                                 [0.0, 0.0, 3.0], [0.5, 0.5, 1.0]]
                                                ).view(4, 3, 1, 1))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.feat(x)))


def _parts_adapter() -> ModelAdapter:
    return ModelAdapter(name="parts", model=_PixelHead(), class_names=list(PARTS),
                        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0)), default_layers=["feat"],
                        multilabel=False)


def _parts_image() -> np.ndarray:
    """16 x 32: the bike on the left (9 rows red over 7 green), the dog on the right."""
    image = np.zeros((16, 32, 3), dtype=np.uint8)
    image[:9, :16, 0] = 255
    image[9:, :16, 1] = 255
    image[:, 16:, 2] = 255
    return image


def _parts_location_probs() -> torch.Tensor:
    adapter = _parts_adapter()
    x = adapter.preprocess(_parts_image())
    with torch.no_grad():
        return torch.softmax(adapter.model(x)[0], dim=0)


def test_runner_up_share_on_the_hand_built_score_map():
    loc = _parts_location_probs()
    same = LookAlikes(_parts_adapter(), loc)
    assert same.kinds is None  # not ImageNet's classes: the spatial signal alone
    # the bikes: each wins part of the left half and is second where the other wins
    assert same.share(0, 1) == pytest.approx(1.0)
    # the dog wins the right half, where "ground" is second; the bikes are never second to it
    assert same.share(0, 2) == 0.0 and same.share(1, 2) == 0.0
    assert same.share(2, 3) == pytest.approx(1.0)  # the dog and the ground it stands on
    assert same(0, 1) and same(1, 0) and not same(0, 2) and not same(0, 0)
    assert not LookAlikes(_parts_adapter(), None)(0, 1)  # no map, no spatial signal
    # a score map of one location (a flattening head) says nothing about places; nor do three
    # locations, fewer than the four two classes must win together
    assert LookAlikes(_parts_adapter(), loc[:, :1, :1]).share(0, 1) == 0.0
    small = LookAlikes(_parts_adapter(), loc[:, 7:10, :1])  # bike rows 7, 8 red, 9 green
    assert small.share(0, 1) == 0.0
    assert LookAlikes(_parts_adapter(), loc[:, 7:11, :1]).share(0, 1) == pytest.approx(1.0)


def test_lookalikes_merged_distinct_object_kept():
    adapter = _parts_adapter()
    loc = _parts_location_probs()
    probs = loc.mean(dim=(1, 2))[None]
    # the ranking by won locations: the dog (256), mountain bike (144), tandem (112)
    plain = select(adapter, probs, 0, top_k=2, rule="score_map", location_probs=loc)
    assert [c.name for c in plain.selected] == ["dog", "mountain bike"]
    plain3 = select(adapter, probs, 0, top_k=3, rule="score_map", location_probs=loc)
    assert [c.name for c in plain3.selected] == ["dog", "mountain bike", "tandem"]
    assert all(c.merged == () for c in plain3.selected)
    merged = select(adapter, probs, 0, top_k=3, rule="score_map", location_probs=loc,
                    merge_lookalikes=True)
    # "tandem" goes into "mountain bike" (which wins more locations); "ground", second to the dog
    # wherever the dog wins, goes into the dog; no other class is left to take
    assert [c.name for c in merged.selected] == ["dog", "mountain bike"]
    assert [c.merged for c in merged.selected] == [("ground",), ("tandem",)]
    assert merged.selected[1].as_dict()["merged"] == ["tandem"]
    assert plain3.selected[2].as_dict() == {"index": 1, "name": "tandem",
                                            "score": pytest.approx(float(probs[0, 1]))}
    assert merged.contrast == merged.selected


def test_named_lookalikes_never_dropped_and_top_up_skips_them():
    adapter = _parts_adapter()
    loc = _parts_location_probs()
    probs = loc.mean(dim=(1, 2))[None]
    kw = {"rule": "score_map", "location_probs": loc, "merge_lookalikes": True}
    both = select(adapter, probs, 0, classes=["tandem", "mountain bike"], **kw)
    assert [c.name for c in both.selected] == ["tandem", "mountain bike"]
    assert all(c.merged == () for c in both.selected)
    # the top-up of a named bike takes the dog, skips the other bike (and the dog's ground), and
    # stops short of three classes: every class left is a look-alike of one taken
    sel = select(adapter, probs, 0, classes=["tandem"], min_contrast=3, **kw)
    assert [c.name for c in sel.contrast] == ["tandem", "dog"]
    assert [c.merged for c in sel.contrast] == [("mountain bike",), ("ground",)]
    assert sel.selected == sel.contrast[:1]
    off = select(adapter, probs, 0, classes=["tandem"], min_contrast=3, rule="score_map",
                 location_probs=loc)
    assert [c.name for c in off.contrast] == ["tandem", "dog", "mountain bike"]
    # the rules that read pooled scores merge too when asked, with the map given
    pooled = select(adapter, probs, 0, top_k=3, rule="reference_scale", location_probs=loc,
                    merge_lookalikes=True)
    assert len({"mountain bike", "tandem"} & {c.name for c in pooled.selected}) == 1


def test_explainer_merges_in_tuned_only_and_records_it():
    import dcsm

    adapter = _parts_adapter()
    image = _parts_image()
    tuned = dcsm.DistinctSaliency(adapter, preset="tuned")
    result = tuned.explain(image, top_k=3)
    assert [c.name for c in result.candidates] == ["dog", "mountain bike"]
    summary = result.summary()
    assert [c["merged"] for c in summary["candidates"]] == [["ground"], ["tandem"]]
    assert summary["parameters"]["merge_lookalikes"] is True
    kept = dcsm.DistinctSaliency(adapter, preset="tuned", merge_lookalikes=False).explain(
        image, top_k=3)
    assert [c.name for c in kept.candidates] == ["dog", "mountain bike", "tandem"]
    assert kept.parameters["merge_lookalikes"] is False
    paper = dcsm.DistinctSaliency(adapter, preset="paper")
    assert paper.merge_lookalikes is False and "merge_lookalikes" not in paper.parameters()
    assert dcsm.DistinctSaliency(adapter, preset="paper", merge_lookalikes=True).parameters()[
        "merge_lookalikes"] is True
    assert len(paper.explain(image, top_k=3).candidates) == 3
    # a tensor batch carries the merged names into its per-image results
    batch = tuned.explain(adapter.preprocess(image).repeat(2, 1, 1, 1), top_k=3)
    assert batch.merged == [[("ground",), ("tandem",)]] * 2
    (first, _) = batch.results([image, image])
    assert [c.merged for c in first.candidates] == [("ground",), ("tandem",)]
    with pytest.raises(DcsmError, match="merge_lookalikes"):
        dcsm.DistinctSaliency(adapter, merge_lookalikes="yes")  # type: ignore[arg-type]


def _imagenet_adapter(names: list[str] | None = None) -> ModelAdapter:
    return ModelAdapter(name="in1k", model=nn.Identity(),
                        class_names=names or list(imagenet_class_names()),
                        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0)), default_layers=[],
                        multilabel=False)


def test_semantic_signal_on_imagenet_indices():
    adapter = _imagenet_adapter()
    same = LookAlikes(adapter, None)
    assert same(444, 671)  # bicycle-built-for-two, mountain bike: VOC/COCO's bicycle
    assert same(281, 282) and same(151, 268)  # tabby and tiger cat; Chihuahua, Mexican hairless
    assert same(654, 779) and same(675, 717)  # minibus, school bus; moving van, pickup (trucks)
    assert not same(281, 967)  # tabby, espresso
    assert not same(281, 286)  # tabby, cougar: a wild cat is not VOC's cat
    assert not same(436, 717)  # beach wagon (car), pickup (truck)
    assert same(21, 22)  # kite (the bird), bald eagle: both VOC/COCO birds
    kinds = semantic_kinds(adapter)
    assert kinds is not None and kinds[444] == frozenset({"bicycle"})
    # other names (or another class count) carry no ImageNet meaning
    other = _imagenet_adapter([f"c{i}" for i in range(1000)])
    assert semantic_kinds(other) is None and not LookAlikes(other, None)(444, 671)


def test_semantic_merge_in_select():
    adapter = _imagenet_adapter()
    logits = torch.full((1000,), -5.0)
    for i, v in ((671, 4.0), (444, 3.5), (248, 3.0), (870, 2.8), (967, 2.5)):
        logits[i] = v  # mountain bike, bicycle-built-for-two, malamute, tricycle, espresso
    probs = torch.softmax(logits, dim=0)[None]
    plain = select(adapter, probs, 0, top_k=3)
    assert [c.index for c in plain.selected] == [671, 444, 248]
    sel = select(adapter, probs, 0, top_k=3, merge_lookalikes=True)
    assert [c.index for c in sel.selected] == [671, 248, 967]
    assert sel.selected[0].merged == ("bicycle-built-for-two", "tricycle")
    named = select(adapter, probs, 0, classes=[444, 671], merge_lookalikes=True)
    assert [c.index for c in named.selected] == [444, 671]


# ----------------------------------------------------------------------------- bundled image
BUNDLED = Path(__file__).resolve().parents[2] / "src" / "dcsm" / "data" / "chelsea_coffee.png"


def test_bundled_image_keeps_its_two_objects_and_merges_the_cats(tmp_path, capsys):
    """EfficientNet-Lite0 on chelsea (left) and coffee (right): the cat and the cup stay two
    candidates; with four, the cat's look-alike "tiger cat" goes into "Egyptian cat"; the
    command's ``--no-merge-lookalikes`` keeps it."""
    import json
    import re

    import dcsm
    from dcsm import cli

    adapter = dcsm.load_model("efficientnet_lite0")
    explainer = dcsm.DistinctSaliency(adapter)
    two = explainer.explain(str(BUNDLED))
    assert [c.name for c in two.candidates] == ["espresso", "Egyptian cat"]
    four = explainer.explain(str(BUNDLED), top_k=4)
    names = [c.name for c in four.candidates]
    assert names[:2] == ["espresso", "Egyptian cat"] and "tiger cat" not in names
    assert four.candidates[1].merged == ("tiger cat",)
    cat = four.maps["Egyptian cat"]
    assert cat[:, :224].sum() > 0.9 * cat.sum()  # on the cat's half

    assert cli.main(["explain", str(BUNDLED), "--out", str(tmp_path), "--top-k", "4",
                     "--no-merge-lookalikes", "--no-pictures"]) == 0
    summary = json.loads((tmp_path / "chelsea_coffee" / "summary.json").read_text())
    assert [c["name"] for c in summary["candidates"]][:3] == ["espresso", "Egyptian cat",
                                                              "tiger cat"]
    assert all("merged" not in c for c in summary["candidates"])
    assert summary["parameters"]["merge_lookalikes"] is False
    assert cli.main(["explain", str(BUNDLED), "--out", str(tmp_path / "m"), "--top-k", "4",
                     "--no-pictures"]) == 0
    assert re.search(r"Egyptian cat 0\.\d{3} \(merged: tiger cat\), ", capsys.readouterr().out)
    summary = json.loads((tmp_path / "m" / "chelsea_coffee" / "summary.json").read_text())
    assert summary["candidates"][1]["merged"] == ["tiger cat"]
    assert summary["parameters"]["merge_lookalikes"] is True
    assert cli.main(["explain", str(BUNDLED), "--out", str(tmp_path / "g"), "--method",
                     "gradcam", "--merge-lookalikes"]) == 2
    assert "dcsm method only" in capsys.readouterr().err
