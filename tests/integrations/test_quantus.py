"""dcsm under Quantus (dcsm.integrations.quantus): the explain_func, the model Quantus calls, the
candidates, and Quantus's own metrics on hand-built cases whose scores are known exactly.

The tests that need Quantus skip when it is not installed (``pip install
'distinct-saliency[quantus]'``); the ones about its absence always run.

The hand-built model, :class:`MaskedHead`: ``feat`` is a 1 x 1 convolution with one channel per
class, and class c's logit is the spatial mean of ``m_c * feat_c`` for a fixed weight map
``m_c``. The derivative of that score with respect to ``feat`` is ``m_c / (HW)`` on channel c
and 0 elsewhere, whatever the weights, so dcsm's layer map of class c (the maximum of absolute
values over channels) is ``|m_c| / (HW)``; with the paper's fusion at one layer and one scale
the map of c contrasted with d is ``tanh(alpha * D / max D)``, ``D = max(m_c - m_d, 0)``.
"""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcsm
from dcsm.datasets.realphotos import MaskedPhoto
from dcsm.errors import DcsmError
from dcsm.integrations import quantus as dq
from dcsm.pipeline.adapters import as_adapter

SIZE = 64
TOP = 16  # rows of the "top" region
HALF = 32  # columns of the "left" region
NAMES = ["left", "top", "flat"]
# The paper's fusion at one layer and one scale, plain gradients (no rectifier to guide).
SETTINGS = {"preset": "paper", "scales": [1.0], "layers": ["feat"], "backprop": "plain",
            "alpha": 3.0}


@pytest.fixture()
def quantus():
    return pytest.importorskip("quantus")


def weight_maps() -> torch.Tensor:
    m = torch.zeros(3, SIZE, SIZE, dtype=torch.float64)
    m[0] = 0.2
    m[0, :, :HALF] = 1.0  # left: strong on the left half
    m[1] = 0.1
    m[1, :TOP] = 1.0  # top: strong on the top rows
    m[2] = 0.5  # flat: the same everywhere
    return m.float()


class MaskedHead(nn.Module):
    """logit_c = mean over locations of m_c * feat_c (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.feat = nn.Conv2d(3, 3, 1)
        self.register_buffer("masks", weight_maps())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.feat(x)
        m = F.interpolate(self.masks[None], size=f.shape[-2:], mode="nearest")[0]
        return (f * m).mean(dim=(2, 3))


class TwoLayers(nn.Module):
    """A layer after the one dcsm reads, so that randomising it changes the maps; fully
    convolutional (a score map out, as the registry's models and the peers' wrappers have it)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(torch.relu(self.conv1(x)))


def expected_map(c: int, d: int, alpha: float = 3.0) -> np.ndarray:
    """float64: the map of class c contrasted with class d (module docstring)."""
    m = weight_maps().double().numpy()
    diff = np.maximum(m[c] - m[d], 0.0)
    return np.tanh(alpha * diff / diff.max())


def tiny_adapter(net: nn.Module | None = None, layers: tuple[str, ...] = ("feat",)):
    return as_adapter(net or MaskedHead(), layers=list(layers), class_names=NAMES)


def tiny_photo(void_column: bool = False) -> MaskedPhoto:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    labels[TOP:, :HALF] = 1  # left (below the top rows)
    labels[:TOP] = 2  # top
    if void_column:
        labels[TOP:, SIZE - 1] = 255
    return MaskedPhoto("tiny:0", image, labels, ("left", "top"), "tiny")


def batch(adapter, photo: MaskedPhoto, n: int = 1) -> np.ndarray:
    return np.repeat(adapter.preprocess(photo.image).numpy(), n, axis=0)


# --------------------------------------------------------------------------- without quantus
def test_module_imports_without_quantus_and_names_the_extra(monkeypatch):
    code = ("import sys\n"
            "import dcsm.integrations.quantus as q\n"
            "print('quantus' in sys.modules)\n"  # importing the module does not import quantus
            "sys.modules['quantus'] = None\n"
            "try:\n    q.require_quantus()\nexcept Exception as e:\n"
            "    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.splitlines()
    assert len(out) == 2 and out[0] == "False"
    assert out[1].startswith("DcsmError the Quantus integration needs the package 'quantus'")
    assert "pip install 'distinct-saliency[quantus]'" in out[1]
    monkeypatch.setitem(sys.modules, "quantus", None)
    with pytest.raises(DcsmError, match=r"distinct-saliency\[quantus\]"):
        dq.evaluate_photos(tiny_adapter(), [tiny_photo()])


# --------------------------------------------------------------------------- explain_func
def test_explain_func_gives_the_known_map():
    adapter = tiny_adapter()
    model = dq.quantus_model(adapter)
    x = batch(adapter, tiny_photo(), 2)
    a = dq.explain_func(model, x, np.array([0, 1]), candidates=[[1], ["left"]], **SETTINGS)
    assert a.shape == (2, 1, SIZE, SIZE) and a.dtype == np.float32
    np.testing.assert_allclose(a[0, 0], expected_map(0, 1), atol=1e-6)
    np.testing.assert_allclose(a[1, 0], expected_map(1, 0), atol=1e-6)
    # an (N, K) array of indices, numpy's integers
    same = dq.explain_func(model, x, torch.tensor([0, 1]), candidates=np.array([[1], [0]]),
                           **SETTINGS)
    np.testing.assert_array_equal(same, a)
    # a third candidate: the sum over the others (Eq. 2)
    a3 = dq.explain_func(model, x[:1], [0], candidates=[[1, 2]], **SETTINGS)
    m = weight_maps().double().numpy()
    diff = np.maximum(m[0] - m[1], 0) + np.maximum(m[0] - m[2], 0)
    np.testing.assert_allclose(a3[0, 0], np.tanh(3 * diff / diff.max()), atol=1e-6)


def test_explain_func_equals_dcsm_explain_on_tensors_resized_to_the_input():
    adapter = tiny_adapter()
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (80, 700, 3), dtype=np.uint8)  # > 512: a working resolution
    x = adapter.preprocess(image).numpy()
    a = dq.explain_func(dq.quantus_model(adapter), x, [2], candidates=[[0, 1]], preset="paper",
                        backprop="plain")
    out = dcsm.explain(adapter, torch.from_numpy(x), classes=[[2, 0, 1]], preset="paper",
                       backprop="plain")
    assert a.shape == (1, 1, 80, 700)
    np.testing.assert_array_equal(a[0, 0], out.maps[0, 0].numpy())


def test_explain_func_equals_dcsm_explain_on_a_photo(lite0):
    image = dcsm.load_image("src/dcsm/data/chelsea_coffee.png")
    x = lite0.preprocess(image).numpy()
    tabby = lite0.class_index("tabby")
    a = dq.explain_func(dq.quantus_model(lite0), x, [tabby], candidates=[["espresso"]])
    result = dcsm.explain(lite0, image, classes=["tabby", "espresso"])
    assert a.shape == (1, 1, *image.shape[:2])
    np.testing.assert_allclose(a[0, 0], result.maps["tabby"], atol=1e-5)


def test_default_candidates_are_dcsms_automatic_ones_plus_the_target():
    adapter = tiny_adapter()
    x = batch(adapter, tiny_photo())
    for preset in ("paper", "tuned", "released"):
        auto = dcsm.DistinctSaliency(adapter, preset=preset, layers=["feat"],
                                     backprop="plain").explain(
            torch.from_numpy(x), classes="auto")
        chosen = auto.classes[0].tolist()
        probed = dq._automatic(adapter, torch.from_numpy(x), {"preset": preset})
        assert probed == [chosen], preset
    settings = dict(SETTINGS)
    chosen = dq._automatic(adapter, torch.from_numpy(x), settings)[0]
    model = dq.quantus_model(adapter)
    for target in range(3):
        default = dq.explain_func(model, x, [target], **settings)
        given = dq.explain_func(model, x, [target], candidates=[chosen], **settings)
        np.testing.assert_array_equal(default, given)


def test_candidate_table_follows_the_image_not_the_batch_position():
    adapter = tiny_adapter()
    model = dq.quantus_model(adapter)
    photo = tiny_photo()
    other = MaskedPhoto("tiny:1", 255 - photo.image, photo.labels, photo.class_names, "tiny")
    x = np.concatenate([batch(adapter, photo), batch(adapter, other)])
    table = dq.candidate_table(x, [[1], [2]])
    swapped = dq.explain_func(model, x[::-1].copy(), [0, 0], candidates=table, **SETTINGS)
    np.testing.assert_allclose(swapped[1, 0], expected_map(0, 1), atol=1e-6)
    np.testing.assert_allclose(swapped[0, 0], expected_map(0, 2), atol=1e-6)
    with pytest.raises(DcsmError, match="two different candidate lists"):
        dq.candidate_table(np.concatenate([x[:1], x[:1]]), [[1], [2]])
    with pytest.raises(DcsmError, match="1 candidate lists given for 2 images"):
        dq.explain_func(model, x, [0, 0], candidates=[[1]], **SETTINGS)


def test_explain_func_follows_the_module_it_is_handed():
    # A deep copy with other weights (as Quantus's MPRT makes) is explained with its weights.
    adapter = tiny_adapter(TwoLayers(), layers=("conv1",))
    model = dq.quantus_model(adapter)
    x = batch(adapter, tiny_photo())
    first = dq.explain_func(model, x, [0], candidates=[[1]])
    copied = __import__("copy").deepcopy(model)
    assert dq.explain_func(copied, x, [0], candidates=[[1]]).tolist() == first.tolist()
    with torch.no_grad():
        copied.net.conv2.weight.mul_(-1.0)
    changed = dq.explain_func(copied, x, [0], candidates=[[1]])
    reference = dcsm.explain(copied.adapter, torch.from_numpy(x), classes=[[0, 1]]).maps
    assert copied.adapter.model is copied.net and copied.adapter is not adapter
    np.testing.assert_array_equal(changed[0, 0], reference[0, 0].numpy())
    assert not np.allclose(changed, first)
    np.testing.assert_array_equal(dq.explain_func(model, x, [0], candidates=[[1]]), first)


def test_baselines_and_peers_through_explain_func():
    adapter = tiny_adapter(TwoLayers(), layers=("conv1",))
    model = dq.quantus_model(adapter)
    x = batch(adapter, tiny_photo(), 2)
    for method in ("simonyan", "guided", "gradcam"):
        a = dq.explain_func(model, x, [0, 2], method=method)
        out = dcsm.explain(adapter, torch.from_numpy(x), method=method, classes=[[0], [2]])
        np.testing.assert_array_equal(a[:, 0], out.maps[:, 0].numpy())
    pytest.importorskip("pytorch_grad_cam")
    from dcsm.bench.methods import get_methods

    run = get_methods(["pgc-gradcam"])[0].build(adapter, "oracle")
    a = dq.explain_func(model, x, [1, 2], method="pgc-gradcam")
    photo = tiny_photo().image
    np.testing.assert_allclose(a[0, 0], run(photo, [1])[1], atol=1e-6)
    np.testing.assert_allclose(a[1, 0], run(photo, [2])[2], atol=1e-6)


def test_pixels_invert_the_preprocessing_exactly():
    adapter = tiny_adapter()
    image = tiny_photo().image
    assert (dq._pixels(adapter, adapter.preprocess(image)[0].numpy()) == image).all()


def test_bad_explain_func_input_is_one_clear_error():
    model = dq.quantus_model(tiny_adapter())
    x = batch(tiny_adapter(), tiny_photo())
    with pytest.raises(DcsmError, match=r"images \(N, 3, H, W\)"):
        dq.explain_func(model, x[:, :2], [0])
    with pytest.raises(DcsmError, match="2 targets given for 1 images"):
        dq.explain_func(model, x, [0, 1])
    with pytest.raises(DcsmError, match="unknown explain_func option.*colour"):
        dq.explain_func(model, x, [0], colour=True)
    with pytest.raises(DcsmError, match="unknown method"):
        dq.explain_func(model, x, [0], method="nonesuch")
    with pytest.raises(DcsmError, match="unknown class 'dog'"):
        dq.explain_func(model, x, [0], candidates=[["dog"]])


# --------------------------------------------------------------------------- Quantus's metrics
def test_quantus_relevance_mass_matches_the_hand_computation(quantus):
    adapter = tiny_adapter()
    model = dq.quantus_model(adapter)
    photo = tiny_photo()
    x = batch(adapter, photo)
    s = photo.mask("left")[None, None].astype(np.uint8)
    metric = quantus.RelevanceMassAccuracy(disable_warnings=True)
    score = metric(model=model, x_batch=x, y_batch=np.array([0]), a_batch=None, s_batch=s,
                   explain_func=dq.explain_func,
                   explain_func_kwargs={"candidates": [[1]], **SETTINGS})
    expected = expected_map(0, 1)
    mine = float((expected * s[0, 0]).sum() / expected.sum())
    # the strong region is the mask; the rest of the map is tanh(3 * 0.1 / 0.9)
    assert mine == pytest.approx(math.tanh(3) / (math.tanh(3) + math.tanh(1 / 3)), rel=1e-7)
    assert score[0] == pytest.approx(mine, rel=1e-6)


def test_evaluate_photos_known_scores(quantus):
    photo = tiny_photo(void_column=True)
    report = dq.evaluate_photos(tiny_adapter(), [photo], settings=SETTINGS,
                                metrics=[*dq.LOCALISATION_METRICS, "MPRT", "RandomLogit"])
    items = {item["class"]: item for item in report["items"]}
    assert list(items) == ["left", "top"]
    t3, t13 = math.tanh(3), math.tanh(1 / 3)
    left, top = items["left"], items["top"]
    # left: tanh(3) on its mask (48 x 32), tanh(1/3) on the right half below the top rows, of
    # which the void column (48 pixels) is left out
    assert left["RelevanceMassAccuracy"] == pytest.approx(
        48 * 32 * t3 / (48 * 32 * t3 + 48 * 31 * t13), rel=1e-6)
    assert left["RelevanceRankAccuracy"] == 1.0 and left["AUC"] == 1.0
    assert left["PointingGame"] == 1.0
    # top: tanh(3) on its right half, 0 elsewhere; half its pixels tie with the background
    assert top["RelevanceMassAccuracy"] == pytest.approx(1.0, rel=1e-6)
    assert top["AUC"] == pytest.approx(0.75, abs=1e-12)
    assert top["PointingGame"] == 1.0
    assert left["pixels"] == 48 * 32 and top["pixels"] == TOP * SIZE
    # The layer maps do not depend on any weight of this model: randomising every layer leaves
    # the maps as they are (Spearman correlation 1)
    assert left["MPRT"] == pytest.approx(1.0) and top["MPRT"] == pytest.approx(1.0)
    assert all(-1.0 <= it["RandomLogit"] <= 1.0 for it in items.values())
    summary = report["metrics"]
    assert summary["AUC"] == {"mean": pytest.approx(0.875), "count": 2, "undefined": 0}
    # without ignoring the void column, the left map's mass there counts outside the mask
    kept = dq.evaluate_photos(tiny_adapter(), [(photo, ["left"])], settings=SETTINGS,
                              metrics=["RelevanceMassAccuracy"], ignore_void=False)
    assert kept["items"][0]["RelevanceMassAccuracy"] == pytest.approx(t3 / (t3 + t13), rel=1e-6)
    assert set(report["seconds"]) == {"explain", *summary}


def test_mprt_and_random_logit_on_a_model_whose_maps_depend_on_the_weights(quantus):
    adapter = tiny_adapter(TwoLayers(), layers=("conv1",))
    photo = tiny_photo()
    # the paper's fusion at one scale (the default preset's random walk on every map of every
    # randomised copy costs minutes and is not what is tested here)
    settings = {**SETTINGS, "layers": ["conv1"]}
    report = dq.evaluate_photos(adapter, [photo], metrics=["MPRT", "RandomLogit"],
                                candidates="auto", batch_size=1, settings=settings)
    for item in report["items"]:
        assert math.isfinite(item["MPRT"]) and abs(item["MPRT"]) < 0.99
        assert math.isfinite(item["RandomLogit"]) and -1 <= item["RandomLogit"] <= 1
    assert report["metrics"]["MPRT"]["count"] == 2
    # Quantus's metric object directly, on the module dcsm wraps
    model = dq.quantus_model(adapter)
    x = batch(adapter, photo)
    mprt = quantus.MPRT(disable_warnings=True, return_last_correlation=True, skip_layers=True)
    score = mprt(model=model, x_batch=x, y_batch=np.array([0]), a_batch=None, s_batch=None,
                 explain_func=dq.explain_func,
                 explain_func_kwargs={"candidates": [[1]], **settings})
    assert len(score) == 1 and math.isfinite(score[0]) and score[0] < 0.99
    assert sum(p.numel() for p in model.parameters()) > 0  # the original kept its weights
    np.testing.assert_array_equal(
        dq.explain_func(model, x, [0], candidates=[[1]], **settings),
        dcsm.explain(adapter, torch.from_numpy(x), classes=[[0, 1]],
                     **settings).maps[:, :1].numpy())


def test_degenerate_maps_are_undefined_not_fatal(quantus):
    adapter = tiny_adapter()
    photo = tiny_photo()
    x = np.concatenate([batch(adapter, photo)] * 2)
    s = np.stack([photo.mask("left")[None]] * 2).astype(np.uint8)
    zero, good = np.zeros((1, SIZE, SIZE)), expected_map(0, 1)[None]

    def run(a):
        return dq._run_metric(quantus.RelevanceMassAccuracy, {"disable_warnings": True},
                              dq.quantus_model(adapter), x, np.array([0, 0]),
                              a.astype(np.float32), s, {}, "RelevanceMassAccuracy")

    # Quantus refuses a batch whose maps are all zero: its items are undefined, with the reason
    values, errors = run(np.stack([zero, zero]))
    assert all(math.isnan(v) for v in values)
    assert all("equal to zero" in e for e in errors)
    # one zero map among others: Quantus's 0 / 0, undefined too, the other scored
    values, errors = run(np.stack([zero, good]))
    assert math.isnan(values[0]) and errors == ["", ""]
    assert values[1] == pytest.approx(math.tanh(3) / (math.tanh(3) + math.tanh(1 / 3)), rel=1e-6)


def test_evaluate_photos_limits_and_bad_input(quantus):
    adapter = tiny_adapter()
    photos = [tiny_photo(), tiny_photo()]
    report = dq.evaluate_photos(adapter, photos, metrics=["PointingGame"], max_pairs=3,
                                settings=SETTINGS)
    assert [(i["photo"], i["class"]) for i in report["items"]] == [
        ("tiny:0", "left"), ("tiny:0", "top"), ("tiny:0", "left")]
    # photos of two sizes, interleaved: batched by size, reported in the input's order
    small = MaskedPhoto("small", photos[0].image[::2, ::2], photos[0].labels[::2, ::2],
                        ("left", "top"), "tiny")
    lines = []
    mixed = dq.evaluate_photos(adapter, [photos[0], small, photos[1]], batch_size=2,
                               metrics=["PointingGame"], settings=SETTINGS, progress=lines.append)
    assert [(i["photo"], i["class"]) for i in mixed["items"]] == [
        ("tiny:0", "left"), ("tiny:0", "top"), ("small", "left"), ("small", "top"),
        ("tiny:0", "left"), ("tiny:0", "top")]
    assert len(lines) == 3 and lines[-1].endswith("6 pairs in all")
    with pytest.raises(DcsmError, match="unknown metric 'Faithfulness'"):
        dq.evaluate_photos(adapter, photos, metrics=["Faithfulness"])
    with pytest.raises(DcsmError, match="class 'flat' is not in photo tiny:0"):
        dq.evaluate_photos(adapter, [(tiny_photo(), ["flat"])], metrics=["AUC"])
    with pytest.raises(DcsmError, match="unknown explain_func option"):
        dq.evaluate_photos(adapter, photos, settings={"colour": 1})
    with pytest.raises(DcsmError, match="metric_kwargs for metric"):
        dq.evaluate_photos(adapter, photos, metrics=["AUC"], metric_kwargs={"MPRT": {}})
    table = dq.markdown_table({"dcsm": report})
    assert table.splitlines()[2] == "| PointingGame | 1.000 |"
