"""PASCAL VOC's and COCO's classes as groups of ImageNet classes (dcsm.pipeline.adapters.groups).

The tables are checked as data (indices in range, no empty group, disjoint groups, the names and
WordNet ids their comments give); the grouped score map, pooling and probabilities against
values computed independently in float64 from the base model's own outputs; a hand-built
1 x 1-convolution model against the formulas written out in numpy; and the command line.
"""

from __future__ import annotations

import json
import re
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import dcsm
from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters import as_adapter, load_model
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.groups import (
    COCO_CLASSES,
    LABEL_SETS,
    VOC_CLASSES,
    GroupedAdapter,
    describe,
    grouped_adapter,
    label_set,
)
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.candidates import image_scores
from dcsm.pipeline.images import as_rgb_array, image_input, working_size

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "src" / "dcsm" / "data" / "chelsea_coffee.png"
GROUPS_SOURCE = ROOT / "src" / "dcsm" / "pipeline" / "adapters" / "groups.py"


# ----------------------------------------------------------------------------- the tables
@pytest.mark.parametrize("name", list(LABEL_SETS))
def test_groups_are_in_range_nonempty_and_disjoint(name):
    chosen = LABEL_SETS[name]
    seen: dict[int, str] = {}
    for cls, members in chosen.groups.items():
        assert members, cls
        assert len(set(members)) == len(members), cls
        for i in members:
            assert isinstance(i, int) and 0 <= i < 1000, (cls, i)
            assert i not in seen, f"ImageNet class {i} is in {seen.get(i)} and {cls}"
            seen[i] = cls
    for a, b in combinations(chosen.groups.values(), 2):
        assert not set(a) & set(b)


def test_label_sets_follow_the_data_sets_class_order():
    voc = LABEL_SETS["voc"]
    assert list(voc.groups) == [c for c in VOC_CLASSES if c != "person"]
    assert list(voc.unnameable) == ["person"] and len(VOC_CLASSES) == 20
    coco = LABEL_SETS["coco"]
    assert len(COCO_CLASSES) == 80 == len(coco.groups) + len(coco.unnameable)
    assert list(coco.groups) == [c for c in COCO_CLASSES if c not in coco.unnameable]
    assert "person" in coco.unnameable and "kite" in coco.unnameable


def test_groups_hold_the_wordnet_classes():
    names = imagenet_class_names()
    voc = LABEL_SETS["voc"].groups
    assert voc["dog"] == tuple(range(151, 269)) and len(voc["dog"]) == 118
    assert [names[i] for i in voc["cat"]] == ["tabby", "tiger cat", "Persian cat",
                                              "Siamese cat", "Egyptian cat"]
    assert not {"lion", "tiger", "cougar"} & {names[i] for i in voc["cat"]}  # big cats out
    assert len(voc["bird"]) == 59 and {"ostrich", "king penguin", "black swan"} <= {
        names[i] for i in voc["bird"]}
    assert sorted(names[i] for i in voc["bus"]) == ["minibus", "school bus", "trolleybus"]
    assert {names[i] for i in voc["car"]} >= {"sports car", "cab", "jeep", "minivan"}
    assert "streetcar" not in {names[i] for g in voc.values() for i in g}  # VOC: no trams


def test_table_comments_name_the_classes_they_list():
    """Every ``index name wnid`` of the tables' comments names the class at that index (and its
    WordNet id, where timm's copy of the ImageNet synsets is installed)."""
    names = imagenet_class_names()
    text = GROUPS_SOURCE.read_text(encoding="utf-8")
    entries = re.findall(r"(\d{1,3}) ([A-Za-z][A-Za-z' -]*?) (n\d{8})", text)
    assert len(entries) > 130
    for index, name, _ in entries:
        assert names[int(index)] == name, (index, name)
    timm_info = pytest.importorskip("timm").__file__
    synsets_file = Path(timm_info).parent / "data" / "_info" / "imagenet_synsets.txt"
    if not synsets_file.exists():
        pytest.skip("timm has no ImageNet synset list")
    synsets = synsets_file.read_text().split()
    for index, name, wnid in entries:
        assert synsets[int(index)] == wnid, (index, name, wnid)
    # every listed member of a group is named somewhere in the comments, or inside a range
    listed = {int(i) for i, _, _ in entries}
    for cls, members in LABEL_SETS["coco"].groups.items():
        if cls not in ("bird", "dog"):
            assert set(members) <= listed, cls


def test_label_set_errors_and_describe():
    with pytest.raises(DcsmError, match="unknown label set 'pascal'; known: imagenet, voc, coco"):
        label_set("pascal")
    rows = dict(describe("voc"))
    assert rows["bus"] == "minibus, school bus, trolleybus"
    assert "118 classes" in rows["dog"] and rows["person"].startswith("not nameable")


# ----------------------------------------------------------------------------- a hand-built model
class Linear1x1(nn.Module):
    """conv 1x1 (3 -> 4) then conv 1x1 (4 -> 1000): the score map is linear in the input."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.feat = nn.Conv2d(3, 4, 1)
        self.head = nn.Conv2d(4, 1000, 1)
        with torch.no_grad():
            self.feat.weight.copy_(torch.randn(4, 3, 1, 1, generator=g))
            self.feat.bias.copy_(torch.randn(4, generator=g))
            self.head.weight.copy_(torch.randn(1000, 4, 1, 1, generator=g) * 2)
            self.head.bias.copy_(torch.randn(1000, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.feat(x))


def linear_adapter(multilabel: bool = False) -> ModelAdapter:
    return ModelAdapter(name="linear", model=Linear1x1().eval(),
                        class_names=list(imagenet_class_names()),
                        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0)),
                        default_layers=["feat"], layer_aliases={"f": "feat"},
                        multilabel=multilabel, gradcam_layer="feat", min_input=4)


def numpy_logits(net: Linear1x1, x: torch.Tensor) -> np.ndarray:
    """(N, 1000, h, w) float64 logits, written out."""
    wf = net.feat.weight.detach().double().numpy()[:, :, 0, 0]
    bf = net.feat.bias.detach().double().numpy()
    wh = net.head.weight.detach().double().numpy()[:, :, 0, 0]
    bh = net.head.bias.detach().double().numpy()
    xs = x.detach().double().numpy()
    h = np.einsum("fc,nchw->nfhw", wf, xs) + bf[None, :, None, None]
    return np.einsum("kf,nfhw->nkhw", wh, h) + bh[None, :, None, None]


def np_logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    top = a.max(axis=axis, keepdims=True)
    return np.squeeze(top, axis) + np.log(np.exp(a - top).sum(axis=axis))


@pytest.mark.parametrize("labels", ["voc", "coco"])
def test_hand_built_model_maps_pool_and_probabilities(labels):
    base = linear_adapter()
    adapter = grouped_adapter(base, labels)
    groups = list(LABEL_SETS[labels].groups.values())
    x = torch.randn(2, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    z = numpy_logits(base.model, x)  # type: ignore[arg-type]
    with torch.no_grad():
        out = adapter.model(x)
    g = len(groups)
    assert out.shape == (2, g + 1000, 5, 6) and adapter.score_channels == g + 1000
    expected = np.stack([np_logsumexp(z[:, list(m)], axis=1) for m in groups], axis=1)
    np.testing.assert_allclose(out[:, :g].double().numpy(), expected, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(out[:, g:].double().numpy(), z, rtol=1e-5, atol=1e-4)
    # image level: softmax of the mean-pooled logits, summed over each group's members
    zbar = z.mean(axis=(2, 3))
    p = np.exp(zbar - np_logsumexp(zbar, axis=1)[:, None])
    want = np.stack([p[:, list(m)].sum(axis=1) for m in groups], axis=1)
    got = adapter.probabilities(adapter.pool(out)).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)
    # per location: each location's softmax, summed over the members
    pl = np.exp(z - np_logsumexp(z, axis=1)[:, None])
    want_loc = np.stack([pl[:, list(m)].sum(axis=1) for m in groups], axis=1)
    got_loc = adapter.probabilities(out.movedim(1, -1)).movedim(-1, 1).double().numpy()
    np.testing.assert_allclose(got_loc, want_loc, rtol=1e-4, atol=1e-7)


def test_hand_built_model_gradient_is_the_members_weighted_by_their_share():
    """d s_G(x) / d input(x) = sum_m p(m | G, x) W_m, W = W_head W_feat (a 1x1 linear model)."""
    base = linear_adapter()
    adapter = grouped_adapter(base, "voc")
    net = base.model
    x = torch.randn(1, 3, 3, 4, generator=torch.Generator().manual_seed(2), requires_grad=True)
    k = adapter.class_index("bus")
    (grad,) = torch.autograd.grad(adapter.model(x)[0, k].sum(), x)
    z = numpy_logits(net, x)[0]  # type: ignore[arg-type]
    members = list(LABEL_SETS["voc"].groups["bus"])
    share = np.exp(z[members] - np_logsumexp(z[members], axis=0)[None])  # (M, h, w)
    w = (net.head.weight.detach().double()[:, :, 0, 0]  # type: ignore[union-attr]
         @ net.feat.weight.detach().double()[:, :, 0, 0]).numpy()  # type: ignore[union-attr]
    want = np.einsum("mhw,mc->chw", share, w[members])
    np.testing.assert_allclose(grad[0].double().numpy(), want, rtol=1e-4, atol=1e-5)


def test_hand_built_multilabel_group_is_present_when_any_member_is():
    base = linear_adapter(multilabel=True)
    adapter = grouped_adapter(base, "voc")
    x = torch.randn(1, 3, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.1
    with torch.no_grad():
        out = adapter.model(x)
    zbar = numpy_logits(base.model, x).mean(axis=(2, 3))[0]  # type: ignore[arg-type]
    sig = 1.0 / (1.0 + np.exp(-zbar))
    want = [1.0 - np.prod(1.0 - sig[list(m)]) for m in LABEL_SETS["voc"].groups.values()]
    got = adapter.probabilities(adapter.pool(out))[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.filterwarnings("ignore::dcsm.errors.DcsmWarning")  # a linear model: no rectifier
def test_hand_built_model_explains_by_group_names_and_base_layers():
    base = linear_adapter()
    adapter = grouped_adapter(base, "voc")
    assert adapter.layer_path("f") == "net.feat" and adapter.layer_path("feat") == "net.feat"
    assert adapter.layer_path(base.model.feat) == "net.feat"  # type: ignore[arg-type]
    image = np.random.default_rng(0).integers(0, 256, (16, 20, 3)).astype(np.uint8)
    for method in ("dcsm", "gradcam", "simonyan"):
        result = dcsm.explain(adapter, image, method=method, classes=["bus", "dog"],
                              **({"scales": [1.0]} if method == "dcsm" else {}))
        assert list(result.maps) == ["bus", "dog"], method
    auto = dcsm.explain(adapter, image, scales=[1.0])
    assert {c.name for c in auto.candidates} <= set(adapter.class_names)


@pytest.mark.filterwarnings("ignore::dcsm.errors.DcsmWarning")
def test_hand_built_model_vmap_backward_matches_the_loop():
    adapter = grouped_adapter(linear_adapter(), "coco")
    image = np.random.default_rng(1).integers(0, 256, (12, 16, 3)).astype(np.uint8)
    maps = {mode: dcsm.DistinctSaliency(adapter, batch=mode, scales=[1.0, 1.4],
                                        backprop="plain").explain(image,
                                                                  classes=["cup", "dog", "car"])
            for mode in ("loop", "vmap")}
    for name in ("cup", "dog", "car"):
        np.testing.assert_allclose(maps["vmap"].maps[name], maps["loop"].maps[name], atol=1e-5)


def test_errors():
    tiny = ModelAdapter(name="tiny", model=nn.Conv2d(3, 5, 1),
                        class_names=[f"c{i}" for i in range(5)],
                        preprocess=Preprocessing(mean=(0.0, 0.0, 0.0)), default_layers=[])
    with pytest.raises(DcsmError, match="groups ImageNet-1k's 1000 classes; model tiny has 5"):
        grouped_adapter(tiny, "voc")
    with pytest.raises(DcsmError, match="unknown label set 'vocc'"):
        load_model("efficientnet_lite0", labels="vocc")
    adapter = grouped_adapter(linear_adapter(), "voc")
    with pytest.raises(DcsmError, match="class 'person' of PASCAL VOC cannot be explained with "
                                        "an ImageNet model: ImageNet-1k has no class for a "
                                        "person") as info:
        adapter.class_index("Person")
    assert "\n" not in str(info.value)
    with pytest.raises(DcsmError, match="unknown class 'tabby' for model linear with --labels "
                                        "voc; its classes: aeroplane, bicycle"):
        adapter.class_index("tabby")
    with pytest.raises(DcsmError, match="out of range"):
        adapter.class_index(19)
    assert adapter.class_index("TVMonitor") == 18 and adapter.class_index(0) == 0


def test_regrouping_and_ungrouping():
    base = linear_adapter()
    voc = grouped_adapter(base, "voc")
    assert grouped_adapter(voc, "voc") is voc
    assert grouped_adapter(voc, "imagenet") is base
    coco = grouped_adapter(voc, "coco")
    assert isinstance(coco, GroupedAdapter) and coco.base is base and coco.num_classes == 62
    assert as_adapter(base, labels="voc").class_names == voc.class_names
    assert as_adapter(voc, labels="imagenet") is base


# ----------------------------------------------------------------------------- the ImageNet models
@pytest.fixture(scope="module")
def lite0_voc(lite0) -> GroupedAdapter:
    adapter = grouped_adapter(lite0, "voc")
    assert isinstance(adapter, GroupedAdapter)
    return adapter


@pytest.fixture(scope="module")
def bundled_input(lite0) -> torch.Tensor:
    image = as_rgb_array(BUNDLED)
    return image_input(lite0, image, working_size(*image.shape[:2], 512))


def test_real_model_group_maps_are_logsumexp_of_the_base_maps(lite0, lite0_voc, bundled_input):
    with torch.no_grad():
        base = lite0.model(bundled_input).double()  # the base model, run on its own
        grouped = lite0_voc.model(bundled_input).double()
    groups = list(lite0_voc.labels.groups.values())
    g = len(groups)
    for k, members in enumerate(groups):
        want = torch.logsumexp(base[:, list(members)], dim=1)
        torch.testing.assert_close(grouped[:, k], want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(grouped[:, g:], base)


@pytest.mark.parametrize("rule", ["reference_scale", "any_scale", "score_map"])
def test_real_model_probabilities_are_the_members_summed(lite0, lite0_voc, bundled_input, rule):
    with torch.no_grad():
        base = lite0.model(bundled_input).double()
        grouped = lite0_voc.model(bundled_input)
    groups = list(lite0_voc.labels.groups.values())
    if rule != "any_scale":  # the classifier's own softmax, of the mean-pooled logits
        p = torch.softmax(base.mean(dim=(2, 3)), dim=1)
        want = torch.stack([p[:, list(m)].sum(dim=1) for m in groups], dim=1)
    else:  # the highest probability at any location
        p = torch.softmax(base, dim=1)
        loc = torch.stack([p[:, list(m)].sum(dim=1) for m in groups], dim=1)
        want = loc.amax(dim=(2, 3))
        got_loc = lite0_voc.probabilities(grouped.movedim(1, -1)).movedim(-1, 1)
        torch.testing.assert_close(got_loc.double(), loc, rtol=1e-4, atol=1e-6)
    got = image_scores(lite0_voc, grouped, rule)  # type: ignore[arg-type]
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)
    assert float(got.sum()) <= 1.0 + 1e-5 or rule == "any_scale"


def test_one_class_group_gives_the_classes_map(lite0, lite0_voc):
    """VOC's cow is ImageNet's ox alone and sofa its studio couch: the log-sum-exp of one logit
    is that logit, so maps and probabilities are the ImageNet classes'."""
    base = dcsm.explain(lite0, BUNDLED, classes=["ox", "studio couch"], scales=[1.0])
    grouped = dcsm.explain(lite0_voc, BUNDLED, classes=["cow", "sofa"], scales=[1.0])
    for a, b in (("ox", "cow"), ("studio couch", "sofa")):
        np.testing.assert_allclose(grouped.maps[b], base.maps[a], atol=1e-5)
    for a, b in zip(base.candidates, grouped.candidates, strict=True):
        assert b.score == pytest.approx(a.score, rel=1e-4, abs=1e-9)


def test_layer_names_are_the_base_models(lite0, lite0_voc):
    for name in ("block7", "head", "stem"):
        assert lite0_voc.layer_path(name) == "net." + lite0.layer_path(name)
    assert lite0_voc.default_layers == lite0.default_layers
    assert lite0_voc.gradcam_layer == lite0.gradcam_layer and lite0_voc.name == lite0.name


# ----------------------------------------------------------------------------- command line
def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_explains_voc_classes(tmp_path, capsys):
    code, out, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--labels", "voc",
                          "--classes", "bus,car", "--scales", "1"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "chelsea_coffee" / "summary.json").read_text())
    assert [c["name"] for c in summary["candidates"]] == ["bus", "car"]
    assert [c["index"] for c in summary["candidates"]] == [5, 6]
    with np.load(tmp_path / "chelsea_coffee" / "maps.npz") as npz:
        assert sorted(npz.files) == ["bus", "car"]
        assert npz["bus"].shape == (224, 448)


def test_cli_auto_candidates_by_threshold(tmp_path, capsys):
    code, out, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--labels", "voc",
                          "--preset", "tuned", "--threshold", "0.5", "--top-k", "19"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "chelsea_coffee" / "summary.json").read_text())
    assert [c["name"] for c in summary["candidates"]] == ["cat"]


@pytest.mark.parametrize(("classes", "message"), [
    ("person", "dcsm: error: class 'person' of PASCAL VOC cannot be explained with an ImageNet "
               "model"),
    ("bus,tabby", "dcsm: error: unknown class 'tabby' for model efficientnet_lite0 with "
                  "--labels voc; its classes: aeroplane,"),
])
def test_cli_unknown_or_unnameable_class_is_one_line_exit_2(tmp_path, capsys, classes, message):
    code, out, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--labels", "voc",
                          "--classes", classes, "--scales", "1"], capsys)
    assert code == 2
    assert err.startswith(message) and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


def test_cli_bad_label_set_and_models_listing(tmp_path, capsys):
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--labels", "pascal"],
                       capsys)
    assert code == 2 and "invalid choice: 'pascal'" in err and err.count("\n") == 1
    code, out, _ = run(["models", "--labels", "voc"], capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()}
    assert list(rows) == [*LABEL_SETS["voc"].groups, "person"]
    assert "minibus, school bus, trolleybus" in rows["bus"] and "118 classes" in rows["dog"]
