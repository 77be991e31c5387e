"""Segmentation from maps: the dense CRF, the GrabCut baseline, labels and palette, the API.

Synthetic images with known regions give known answers: the CRF recovers blurred regions and
pulls a shifted map back onto a sharp colour edge; GrabCut grows seeds from part of an object
to the whole object and drops a detached look-alike patch.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import dcsm
import dcsm.pipeline.images
from dcsm.errors import DcsmError
from dcsm.io import load_image
from dcsm.pipeline.candidates import Candidate
from dcsm.segmentation import (
    CRFParams,
    GrabCutParams,
    Segmentation,
    background_probability,
    label_overlay,
    segment,
    segment_crf,
    segment_grabcut,
    unary_probabilities,
    voc_palette,
    write_segmentation,
)
from dcsm.segmentation.crf import OTSU_BINS, normalized_maps, otsu_threshold
from dcsm.segmentation.grabcut import largest_component, resolve_overlaps


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def reference_voc_palette() -> list[tuple[int, int, int]]:
    """PASCAL VOC's colour map, written out from its bit-interleaving definition."""
    colours = []
    for label in range(256):
        r = g = b = 0
        c = label
        for j in range(8):
            r |= (c & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colours.append((r, g, b))
    return colours


def blur(mask: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma)


# ------------------------------------------------------------------------------ synthetic scenes
@pytest.fixture(scope="module")
def two_objects():
    """A red rectangle and a blue disk on noisy green, with maps that blur both (sigma 5 px)."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :128]
    rect = (yy >= 20) & (yy < 60) & (xx >= 10) & (xx < 50)
    disk = (yy - 60) ** 2 + (xx - 95) ** 2 < 22 ** 2
    img = np.empty((96, 128, 3))
    img[:] = (60, 140, 60)
    img[rect] = (200, 40, 40)
    img[disk] = (40, 60, 200)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    maps = {"rect": 0.9 * blur(rect, 5), "disk": 0.9 * blur(disk, 5)}
    return img, maps, {"rect": rect, "disk": disk}


def edge_scene(shift: int) -> tuple[np.ndarray, np.ndarray]:
    """Red left of x = 64, blue right; a soft map of 'the red thing' whose edge is at 64 + shift."""
    rng = np.random.default_rng(3)
    img = np.empty((48, 128, 3))
    img[:, :64] = (180, 60, 60)
    img[:, 64:] = (50, 50, 160)
    img = np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8)
    x = np.arange(128)
    edge = 64 + shift
    row = 0.95 / (1.0 + np.exp((x - edge + 0.5) / 3.0))  # 0.475 at the edge, blurred by ~3 px
    return img, np.tile(row, (48, 1)).astype(np.float32)


def grabcut_scene(rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """An orange disk on blue/green stripes, a small orange patch far away, and noise."""
    yy, xx = np.mgrid[:96, :128]
    img = np.empty((96, 128, 3))
    img[:] = (40, 110, 60)
    img[(xx // 16) % 2 == 1] = (60, 90, 150)
    disk = (yy - 48) ** 2 + (xx - 60) ** 2 < 25 ** 2
    patch = (yy >= 6) & (yy < 16) & (xx >= 110) & (xx < 120)
    img[disk | patch] = (220, 120, 30)
    img = np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)
    return img, {"disk": disk, "patch": patch, "xx": xx, "yy": yy}


# ------------------------------------------------------------------------------ CRF
#: dcsm's earlier unary rule, v_0 = 1 - max_c M_c on the maps as they are: the tests of the CRF's
#: mechanics below state their expected borders in terms of it.
POWER1 = dict(background="power", bg_power=1.0, normalize=False, sharpness=1.0)


def test_crf_recovers_blurred_regions(two_objects):
    img, maps, truth = two_objects
    # with the earlier unaries the maps alone are too blurred and the CRF repairs them
    unary_only = segment_crf(maps, img, iterations=0, **POWER1)
    repaired = segment_crf(maps, img, **POWER1)
    for name in ("rect", "disk"):
        assert iou(repaired.masks[name], truth[name]) > 0.9
        assert iou(repaired.masks[name], truth[name]) > iou(unary_only.masks[name], truth[name])
    # the default unaries (Otsu's background on normalised maps) get there too
    seg = segment_crf(maps, img)
    for name in ("rect", "disk"):
        assert iou(seg.masks[name], truth[name]) > 0.9
    assert iou(unary_only.masks["rect"], truth["rect"]) < 0.9  # the maps alone are too blurred
    assert seg.candidates == ["rect", "disk"]
    assert seg.labels.dtype == np.uint8 and set(np.unique(seg.labels)) == {0, 1, 2}
    np.testing.assert_array_equal(seg.masks["rect"], seg.labels == 1)
    np.testing.assert_array_equal(seg.masks["disk"], seg.labels == 2)
    assert seg.probabilities is not None and seg.probabilities.shape == (3, 96, 128)
    np.testing.assert_allclose(seg.probabilities.sum(axis=0), 1.0, atol=1e-4)
    np.testing.assert_array_equal(seg.labels, seg.probabilities.argmax(axis=0))


@pytest.mark.parametrize("shift", [-8, -5, 5, 8])
def test_crf_snaps_shifted_map_to_colour_edge(shift):
    img, m = edge_scene(shift)
    before = segment_crf({"thing": m}, img, iterations=0, **POWER1).masks["thing"]
    after = segment_crf({"thing": m}, img, **POWER1).masks["thing"]
    truth = np.broadcast_to(np.arange(128) < 64, (48, 128))
    # the unaries put the border where the map does, |shift| pixels off the colour edge
    assert set(before.sum(axis=1)) == {64 + shift}
    # the bilateral term pulls it back onto the edge, in every row
    widths = after.sum(axis=1)
    assert widths.min() >= 63 and widths.max() <= 65, (widths.min(), widths.max())
    assert (after != truth).sum() <= 48 < (before != truth).sum()


def test_read_only_inputs(two_objects):
    img, maps, truth = two_objects
    frozen = img.copy()
    frozen.setflags(write=False)
    for m in maps.values():
        m.setflags(write=False)
    for method in ("crf", "grabcut"):
        seg = segment(saliency_result(frozen, maps), segmenter=method)
        assert seg.labels.shape == (96, 128)
    assert iou(segment(maps, frozen).masks["disk"], truth["disk"]) > 0.9


def test_crf_without_pairwise_terms_is_the_unary_argmax(two_objects):
    img, maps, _ = two_objects
    stack = np.stack(list(maps.values()))
    probs = unary_probabilities(stack, 1.0)
    plain = segment_crf(maps, img, gaussian_compat=0, bilateral_compat=0, **POWER1)
    np.testing.assert_array_equal(plain.labels, probs.argmax(axis=0))
    np.testing.assert_array_equal(segment_crf(maps, img, iterations=0, **POWER1).labels,
                                  probs.argmax(axis=0))
    # the default rule: normalised maps against the constant background, any sharpness
    d = CRFParams()
    ours = unary_probabilities(stack, background=d.background, bg_threshold=d.bg_threshold,
                               normalize=d.normalize, sharpness=d.sharpness)
    for sharp in (1.0, 7.0):
        got = segment_crf(maps, img, gaussian_compat=0, bilateral_compat=0, sharpness=sharp)
        np.testing.assert_array_equal(got.labels, ours.argmax(axis=0))


def test_background_rule_values():
    maps = np.array([[[0.0, 0.5, 0.9, 0.2]], [[0.0, 0.1, 0.3, 0.6]]], dtype=np.float32)
    np.testing.assert_allclose(background_probability(maps, 1.0)[0], [1.0, 0.5, 0.1, 0.4],
                               rtol=1e-6)
    np.testing.assert_allclose(background_probability(maps, 2.0)[0], [1.0, 0.25, 0.01, 0.16],
                               rtol=1e-5)
    p = unary_probabilities(maps, 1.0)[:, 0]
    # pixel 1: v = (0.5, 0.5, 0.1) -> (5, 5, 1) / 11; pixel 0: (1, eps, eps) normalised
    np.testing.assert_allclose(p[:, 1], [5 / 11, 5 / 11, 1 / 11], rtol=1e-5)
    np.testing.assert_allclose(p[:, 0], [1 / (1 + 2e-5), 1e-5 / (1 + 2e-5), 1e-5 / (1 + 2e-5)],
                               rtol=1e-5)
    np.testing.assert_allclose(p.sum(axis=0), 1.0, rtol=1e-6)
    # a larger power shrinks the background: fewer background pixels
    assert (unary_probabilities(maps, 3.0).argmax(0) == 0).sum() <= (p.argmax(0) == 0).sum()


def test_bg_power_moves_the_border(two_objects):
    img, maps, truth = two_objects
    sizes = [segment_crf(maps, img, bg_power=p, iterations=0, background="power",
                         normalize=False).masks["disk"].sum() for p in (0.5, 1.0, 2.0)]
    assert sizes[0] < sizes[1] < sizes[2]
    # the constant rule: a higher background score, a smaller object
    sizes = [segment_crf(maps, img, bg_threshold=t, iterations=0, background="constant"
                         ).masks["disk"].sum() for t in (0.6, 0.3, 0.1)]
    assert sizes[0] < sizes[1] < sizes[2]


def test_otsu_background_follows_the_maps():
    from skimage.filters import threshold_otsu

    rng = np.random.default_rng(3)
    for low, high, share in ((0.1, 0.7, 0.3), (0.3, 0.9, 0.6), (0.05, 0.4, 0.1)):
        n = 4000
        values = np.concatenate([rng.normal(low, 0.04, int(n * (1 - share))),
                                 rng.normal(high, 0.06, int(n * share))]).clip(0, 1)
        tau = otsu_threshold(values)
        assert low < tau < high
        # skimage's Otsu over the values' own range: the same cut within two of our bins
        assert abs(tau - threshold_otsu(values, nbins=256)) <= 2 / OTSU_BINS + 1e-9
    assert otsu_threshold(np.full(10, 0.3)) == 0.5 and otsu_threshold(np.zeros(0)) == 0.5
    # the background score is that threshold of max_c M^_c, the same everywhere
    sparse = np.zeros((2, 20, 20), np.float32)
    sparse[0, 2:5, 2:5], sparse[1, 10:12, 10:14] = 1.0, 0.5
    bg = background_probability(normalized_maps(sparse), background="otsu")
    assert np.all(bg == bg[0, 0]) and 0 < bg[0, 0] < 1
    dense = np.clip(sparse + 0.6, 0, 1)
    assert background_probability(normalized_maps(dense), background="otsu")[0, 0] > bg[0, 0]
    # unaries: every pixel above the threshold goes to its class, the rest to the background
    p = unary_probabilities(sparse, background="otsu", normalize=True)
    labels = p.argmax(axis=0)
    assert (labels[2:5, 2:5] == 1).all() and (labels[10:12, 10:14] == 2).all()
    assert (labels[sparse.max(axis=0) == 0] == 0).all()


def test_constant_background_normalisation_and_sharpness_by_hand():
    # class 0 peaks at 0.5, class 1 at 0.8; pixels: (0.5, 0.2), (0.1, 0.8), (0.05, 0.04)
    maps = np.array([[[0.5, 0.1, 0.05]], [[0.2, 0.8, 0.04]]], dtype=np.float32)
    normed = np.array([[[1.0, 0.2, 0.1]], [[0.25, 1.0, 0.05]]])
    np.testing.assert_allclose(normalized_maps(maps), normed, rtol=1e-6)
    np.testing.assert_array_equal(normalized_maps(np.zeros((1, 2, 2), np.float32)), 0.0)
    p = unary_probabilities(maps, background="constant", bg_threshold=0.3, normalize=True)[:, 0]
    v = np.stack([np.full(3, 0.3), normed[0, 0], normed[1, 0]])
    np.testing.assert_allclose(p, v / v.sum(axis=0), rtol=1e-5)
    assert list(p.argmax(axis=0)) == [1, 2, 0]   # the weak class 0 still wins its own pixel
    # without normalisation the weak class loses its pixel to the 0.6 background
    raw = unary_probabilities(maps, background="constant", bg_threshold=0.6)[:, 0]
    assert list(raw.argmax(axis=0)) == [0, 2, 0]
    # sharpness gamma: P proportional to v^gamma
    sharp = unary_probabilities(maps, background="constant", bg_threshold=0.3, normalize=True,
                                sharpness=4.0)[:, 0]
    np.testing.assert_allclose(sharp, v ** 4 / (v ** 4).sum(axis=0), rtol=1e-4)
    # the power rule on normalised maps: v_0 = (1 - max_c M^_c)^beta
    pw = unary_probabilities(maps, 2.0, background="power", normalize=True)[:, 0]
    w = np.stack([(1 - normed.max(axis=0)[0]) ** 2, normed[0, 0], normed[1, 0]])
    w = np.maximum(w, 1e-5)
    np.testing.assert_allclose(pw, w / w.sum(axis=0), rtol=1e-4)


# ------------------------------------------------------------------------------ GrabCut
def test_grabcut_grows_partial_seeds_to_the_object_and_drops_detached_patch():
    rng = np.random.default_rng(1)
    img, scene = grabcut_scene(rng)
    disk, patch = scene["disk"], scene["patch"]
    sal = rng.uniform(0, 0.2, disk.shape)
    hot = disk & (scene["xx"] < 60) & (rng.uniform(size=disk.shape) < 0.8)  # left half only
    sal[hot] = rng.uniform(0.5, 1.0, hot.sum())
    assert hot.sum() > 0.05 * disk.size  # the top 5 % lie in the disk's left half
    seg = segment_grabcut({"disk": sal.astype(np.float32)}, img)
    print("GrabCut IoU with the disk", iou(seg.masks["disk"], disk))
    assert iou(seg.masks["disk"], disk) > 0.97
    assert seg.masks["disk"][:, 62:][disk[:, 62:]].mean() > 0.97  # the unseeded right half too
    assert not seg.masks["disk"][patch].any()
    every = segment_grabcut({"disk": sal.astype(np.float32)}, img, largest_component=False)
    assert every.regions["disk"][patch].mean() > 0.9  # the patch has the object's colour
    assert iou(every.regions["disk"], disk | patch) > 0.97
    again = segment_grabcut({"disk": sal.astype(np.float32)}, img)
    np.testing.assert_array_equal(again.labels, seg.labels)  # seeded: repeatable


def test_grabcut_two_classes_known_answer():
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:80, :160]
    a = (yy - 40) ** 2 + (xx - 40) ** 2 < 22 ** 2
    b = (yy - 40) ** 2 + (xx - 118) ** 2 < 26 ** 2
    img = np.empty((80, 160, 3))
    img[:] = (90, 90, 90)
    img[a] = (230, 200, 40)
    img[b] = (150, 40, 170)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    maps = {}
    for name, obj in (("a", a), ("b", b)):
        m = rng.uniform(0, 0.1, a.shape)
        hot = obj & (rng.uniform(size=a.shape) < 0.5)
        m[hot] = rng.uniform(0.6, 1.0, hot.sum())
        maps[name] = m.astype(np.float32)
    seg = segment_grabcut(maps, img)
    assert iou(seg.masks["a"], a) > 0.95 and iou(seg.masks["b"], b) > 0.95
    assert set(np.unique(seg.labels)) == {0, 1, 2}
    assert seg.probabilities is None and seg.method == "grabcut"
    assert seg.parameters == {"fg_quantile": 0.95, "bg_quantile": 0.3, "iterations": 5,
                              "largest_component": True}


def test_overlaps_go_to_the_more_salient_class():
    regions = np.array([[[1, 1, 0, 1, 0]], [[0, 1, 1, 1, 0]]], dtype=bool)
    maps = np.array([[[0.2, 0.9, 0.9, 0.5, 1.0]], [[0.1, 0.3, 0.1, 0.5, 1.0]]], np.float32)
    labels = resolve_overlaps(regions, maps)
    # only a | both, a higher | only b (its own map lower) | tie -> first | neither
    np.testing.assert_array_equal(labels, [[1, 1, 2, 1, 0]])


def test_largest_component_uses_8_connectivity():
    m = np.zeros((6, 6), bool)
    m[0, 0] = m[1, 1] = m[2, 2] = True  # diagonal: one 8-connected component of 3
    m[4, 4] = m[4, 5] = True
    expected = np.zeros((6, 6), bool)
    expected[0, 0] = expected[1, 1] = expected[2, 2] = True
    np.testing.assert_array_equal(largest_component(m), expected)
    assert not largest_component(np.zeros((4, 4), bool)).any()


def test_flat_map_gives_an_empty_region():
    img = np.full((16, 16, 3), 100, np.uint8)
    seg = segment_grabcut({"x": np.full((16, 16), 0.3, np.float32)}, img)
    assert not seg.masks["x"].any() and (seg.labels == 0).all()


def test_grabcut_on_tiny_image_with_few_seeds():
    """Four foreground seeds, fewer than the colour model's five components: the model is fitted
    on them repeated, and the cut finds the red block they sit on."""
    rng = np.random.default_rng(4)
    img = np.empty((8, 8, 3), np.uint8)
    img[:] = (30, 60, 200)
    img[3:5, 3:5] = (220, 40, 30)
    img = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    m = np.zeros((8, 8), np.float32)
    m[3:5, 3:5] = 1.0  # 4 of 64 pixels: above the 0.95 quantile
    expected = np.zeros((8, 8), np.uint8)
    expected[3:5, 3:5] = 1
    for iterations in (1, 5):
        seg = segment_grabcut({"x": m}, img, iterations=iterations)
        np.testing.assert_array_equal(seg.labels, expected)
    # a single salient pixel is below the 0.95 quantile's reach: no spread, an empty region
    one = np.zeros((8, 8), np.float32)
    one[3, 3] = 1.0
    assert (segment_grabcut({"x": one}, img).labels == 0).all()


# ------------------------------------------------------------------------------ API
def saliency_result(img: np.ndarray, maps: dict[str, np.ndarray]) -> dcsm.SaliencyResult:
    cands = [Candidate(i, name, 0.5) for i, name in enumerate(maps)]
    return dcsm.SaliencyResult(image=img, maps=maps, candidates=cands, method="dcsm",
                               model="synthetic")


def test_segment_takes_a_result_in_candidate_order(two_objects):
    img, maps, truth = two_objects
    result = saliency_result(img, {"disk": maps["disk"], "rect": maps["rect"]})
    result.candidates.reverse()  # candidates rect, disk; maps dict in the other order
    seg = dcsm.segment(result)
    assert seg.candidates == ["rect", "disk"]
    assert iou(seg.labels == 1, truth["rect"]) > 0.9 and iou(seg.labels == 2, truth["disk"]) > 0.9
    assert seg.label_names() == {0: "background", 1: "rect", 2: "disk"}
    summary = seg.summary()
    assert summary["segmenter"] == "crf"
    assert summary["labels"] == {"0": "background", "1": "rect", "2": "disk"}
    assert sum(summary["pixels"].values()) == 96 * 128
    assert summary["parameters"] == CRFParams().as_dict()
    assert CRFParams().as_dict() == {"bg_power": 1.0, "iterations": 10, "gaussian_sxy": 3.0,
                                     "gaussian_compat": 3.0, "bilateral_sxy": 80.0,
                                     "bilateral_srgb": 13.0, "bilateral_compat": 10.0,
                                     "background": "otsu", "bg_threshold": 0.2,
                                     "normalize": True, "sharpness": 10.0}
    gc = dcsm.segment(result, segmenter="grabcut", iterations=2)
    assert gc.method == "grabcut" and gc.parameters["iterations"] == 2


BAD_CALLS = {
    "unknown method": (dict(segmenter="watershed"), "watershed"),
    "unknown parameter": (dict(segmenter="crf", fg_quantile=0.9), "fg_quantile"),
    "zero power": (dict(bg_power=0), "bg_power"),
    "unknown background": (dict(background="mean"), "background rule"),
    "otsu typo": (dict(background="Otsu"), "otsu"),
    "threshold 1": (dict(bg_threshold=1.0), "bg_threshold"),
    "zero sharpness": (dict(sharpness=0), "sharpness"),
    "normalize string": (dict(normalize="yes"), "normalize"),
    "nan sxy": (dict(gaussian_sxy=math.nan), "gaussian_sxy"),
    "negative compat": (dict(bilateral_compat=-1), "bilateral_compat"),
    "negative iterations": (dict(iterations=-1), "iterations"),
    "float iterations": (dict(iterations=2.5), "iterations"),
    "quantile order": (dict(segmenter="grabcut", fg_quantile=0.3, bg_quantile=0.5), "below"),
    "quantile range": (dict(segmenter="grabcut", fg_quantile=1.0), "fg_quantile"),
    "grabcut zero iterations": (dict(segmenter="grabcut", iterations=0), "iterations"),
}


@pytest.mark.parametrize("case", sorted(BAD_CALLS))
def test_bad_parameters_raise_dcsm_error(two_objects, case):
    img, maps, _ = two_objects
    kwargs, needle = BAD_CALLS[case]
    with pytest.raises(dcsm.DcsmError, match=needle):
        segment(maps, img, **kwargs)


def test_the_segmenter_s_old_keyword_still_works_with_a_warning(two_objects):
    img, maps, _ = two_objects
    for name in ("crf", "grabcut"):
        new = segment(maps, img, segmenter=name, max_side=64)
        with pytest.warns(DeprecationWarning, match="segmenter="):
            old = segment(maps, img, method=name, max_side=64)
        assert old.method == new.method == name and old.parameters == new.parameters
        np.testing.assert_array_equal(old.labels, new.labels)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new keyword and the default warn nothing
        assert segment(maps, img, max_side=64).method == "crf"
        assert segment(maps, img, "grabcut", max_side=64).method == "grabcut"
    with pytest.raises(dcsm.DcsmError, match="give the segmenter once"):
        segment(maps, img, segmenter="crf", method="crf")
    with pytest.raises(dcsm.DcsmError, match="unknown segmenter 'watershed'"), \
            pytest.warns(DeprecationWarning):
        segment(maps, img, method="watershed")


def test_bad_maps_raise_dcsm_error(two_objects):
    img, maps, _ = two_objects
    with pytest.raises(dcsm.DcsmError, match="needs the image"):
        segment(maps)
    with pytest.raises(dcsm.DcsmError, match="must match"):
        segment({"x": np.zeros((10, 10), np.float32)}, img)
    with pytest.raises(dcsm.DcsmError, match=r"\[0, 1\]"):
        segment({"x": np.full((96, 128), 3.0, np.float32)}, img)
    with pytest.raises(dcsm.DcsmError, match="NaN"):
        segment({"x": np.full((96, 128), np.nan, np.float32)}, img)
    with pytest.raises(dcsm.DcsmError, match="no class maps"):
        segment({}, img)
    with pytest.raises(dcsm.DcsmError, match="2-D"):
        segment({"x": np.zeros((96, 128, 2), np.float32)}, img)
    with pytest.raises(dcsm.DcsmError, match="SaliencyResult"):
        segment([maps["rect"]], img)  # type: ignore[arg-type]
    result = saliency_result(img, dict(maps))
    result.candidates.append(Candidate(9, "rect", 0.1))
    with pytest.raises(dcsm.DcsmError, match="share a class name"):
        segment(result)


def test_write_segmentation_files(tmp_path, two_objects):
    img, maps, _ = two_objects
    seg = segment_crf(maps, img)
    write_segmentation(seg, img, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.png", "masks.npz",
                                                          "segmentation.png"]
    with Image.open(tmp_path / "labels.png") as im:
        assert im.mode == "P" and im.size == (128, 96)
        np.testing.assert_array_equal(np.asarray(im), seg.labels)
        palette = im.getpalette()
    assert [tuple(palette[3 * i:3 * i + 3]) for i in range(256)] == reference_voc_palette()
    with np.load(tmp_path / "masks.npz") as npz:
        assert npz.files == ["rect", "disk"]
        for v, name in enumerate(["rect", "disk"], 1):
            assert npz[name].dtype == bool
            np.testing.assert_array_equal(npz[name], seg.labels == v)
    with Image.open(tmp_path / "segmentation.png") as im:
        assert im.size[0] > 200


def test_voc_palette_and_overlay():
    assert [tuple(c) for c in voc_palette().tolist()] == reference_voc_palette()
    assert voc_palette(3).tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    img = np.full((2, 2, 3), 100, np.uint8)
    labels = np.array([[0, 1], [2, 0]], np.uint8)
    out = label_overlay(img, labels, alpha=0.5)
    np.testing.assert_array_equal(out[0, 0], [40, 40, 40])
    np.testing.assert_array_equal(out[0, 1], [114, 50, 50])
    np.testing.assert_array_equal(out[1, 0], [50, 114, 50])


def test_params_dataclasses_validate_directly():
    with pytest.raises(dcsm.DcsmError, match="CRF bilateral_srgb must be positive, got 0"):
        CRFParams(bilateral_srgb=0)
    with pytest.raises(dcsm.DcsmError, match="CRF gaussian_compat must not be negative"):
        CRFParams(gaussian_compat=-1.0)
    with pytest.raises(dcsm.DcsmError, match="CRF iterations must be a whole number >= 0"):
        CRFParams(iterations=1.5)  # type: ignore[arg-type]
    with pytest.raises(dcsm.DcsmError, match="GrabCut bg_quantile must be a number, got True"):
        GrabCutParams(bg_quantile=True)  # type: ignore[arg-type]
    with pytest.raises(dcsm.DcsmError, match=r"bg_quantile \(0.9\) must be below fg_quantile"):
        GrabCutParams(bg_quantile=0.9, fg_quantile=0.8)
    assert CRFParams(iterations=0).iterations == 0  # the unaries alone are allowed


def test_segmentation_record_names_and_counts():
    labels = np.array([[0, 1, 1], [2, 2, 2]], np.uint8)
    seg = Segmentation(labels=labels, masks={"cat": labels == 1, "cup": labels == 2},
                       candidates=["cat", "cup"], method="crf", parameters={"iterations": 3})
    assert seg.label_names() == {0: "background", 1: "cat", 2: "cup"}
    assert seg.summary() == {
        "segmenter": "crf", "parameters": {"iterations": 3},
        "labels": {"0": "background", "1": "cat", "2": "cup"},
        "pixels": {"background": 1, "cat": 2, "cup": 3}}


def test_values_that_would_hang_or_crash_the_segmenters_are_refused(two_objects):
    # found by the command-line fuzz (tests/cli/test_fuzz.py): a 1e8-step CRF ran for hours,
    # and pydensecrf's lattice corrupted memory (and crashed) for widths near 0
    with pytest.raises(dcsm.DcsmError, match="CRF iterations must be at most 1000"):
        CRFParams(iterations=100_000_000)
    with pytest.raises(dcsm.DcsmError, match="GrabCut iterations must be at most 100"):
        GrabCutParams(iterations=10**9)
    with pytest.raises(dcsm.DcsmError, match="gaussian_compat must be at most 3.4"):
        CRFParams(gaussian_compat=1e308)
    img, maps, _ = two_objects
    for name in ("gaussian_sxy", "bilateral_sxy", "bilateral_srgb"):
        with pytest.raises(dcsm.DcsmError, match=f"CRF {name} 1e-300 is too small for a "):
            dcsm.segment(maps, img, **{name: 1e-300})
    dcsm.segment(maps, img, gaussian_sxy=1e-3, bilateral_srgb=1e-3)  # small, and still safe


def test_a_thin_strip_is_segmented_at_a_working_size_it_fits():
    rng = np.random.default_rng(0)
    strip = rng.integers(0, 256, (5000, 8, 3), dtype=np.uint8)
    maps = {"a": rng.random((5000, 8)).astype(np.float32)}
    for method in ("crf", "grabcut"):
        seg = dcsm.segment(maps, strip, segmenter=method, max_side=64)  # not squeezed to 1 px
        assert seg.labels.shape == (5000, 8)
    wide = rng.integers(0, 256, (100, 5000, 3), dtype=np.uint8)
    seg = dcsm.segment({"a": rng.random((100, 5000)).astype(np.float32)}, wide, max_side=64)
    assert seg.labels.shape == (100, 5000) and seg.parameters["working_size"] == [8, 400]


@pytest.mark.parametrize("method", ["crf", "grabcut"])
@pytest.mark.parametrize("max_side", [None, 64])
def test_segment_decodes_an_image_path_once(tmp_path, monkeypatch, two_objects, method,
                                            max_side):
    img, maps, _ = two_objects
    path = tmp_path / "scene.png"
    Image.fromarray(img).save(path)
    decoded = []

    def load(source, max_pixels=None):  # noqa: ANN001, ANN202 - counts, then reads as before
        decoded.append(source)
        return load_image(source, max_pixels)

    monkeypatch.setattr(dcsm.pipeline.images, "load_image", load)
    seg = segment(maps, str(path), segmenter=method, max_side=max_side)
    assert decoded == [str(path)]
    want = segment(maps, img, segmenter=method, max_side=max_side)  # the array, never decoded
    assert len(decoded) == 1
    np.testing.assert_array_equal(seg.labels, want.labels)
    assert seg.parameters == want.parameters


# ------------------------------------------------------------------------------ final power
def test_undo_power_inverts_the_explainers_sharpening():
    from dcsm.pipeline.fusion import sharpen
    from dcsm.segmentation.common import undo_power

    rng = np.random.default_rng(3)
    maps = rng.random((3, 7, 9)) * np.array([0.9, 0.2, 0.0])[:, None, None]  # a zero map too
    for gamma in (0.5, 2.0, 3.0):
        sharp = sharpen(torch.from_numpy(maps), gamma).numpy()
        np.testing.assert_allclose(undo_power(sharp, gamma), maps, atol=1e-6)
        # by hand for the first map: its peak kept, the ratio to it raised to 1 / gamma
        peak = sharp[0].max()
        np.testing.assert_allclose(undo_power(sharp, gamma)[0], peak * (sharp[0] / peak)
                                   ** (1 / gamma), rtol=1e-6)
    assert undo_power(maps, 1.0) is maps


def test_the_crf_takes_the_maps_before_the_final_power(two_objects):
    """A result's gamma is undone before the CRF (so squaring the maps changes nothing), a
    mapping's only when map_gamma says so; GrabCut takes the maps as they are."""
    img, maps, _ = two_objects
    plain = {"disk": maps["disk"], "rect": maps["rect"]}
    squared = {k: m.max() * (m / m.max()) ** 2 for k, m in plain.items()}
    result = saliency_result(img, squared)
    result.parameters["gamma"] = 2.0
    reference = dcsm.segment(plain, img)
    assert not np.array_equal(dcsm.segment(squared, img).labels, reference.labels)
    for seg in (dcsm.segment(result), dcsm.segment(squared, img, map_gamma=2.0),
                segment_crf(result), segment_crf(squared, img, map_gamma=2.0)):
        np.testing.assert_array_equal(seg.labels, reference.labels)
    assert np.array_equal(dcsm.segment(result, segmenter="grabcut").labels,
                          dcsm.segment(squared, img, segmenter="grabcut").labels)
    for bad in (0, -1.0, float("nan"), True, "2"):
        with pytest.raises(DcsmError, match="map_gamma must be a number"):
            dcsm.segment(plain, img, map_gamma=bad)
