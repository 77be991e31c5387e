"""The real-photo benchmark's metrics against hand-computed values and independent references
(scikit-learn's ROC AUC, scikit-image's SSIM, a plain top-K count)."""

from __future__ import annotations

import numpy as np
import pytest

from dcsm.bench.masks import score_photo
from dcsm.bench.scores import (
    map_similarity,
    mask_auc,
    mass_on_others,
    relevance_rank_accuracy,
    roc_auc,
    ssim,
    ssim_matrix,
)
from dcsm.datasets.realphotos import VOID, MaskedPhoto


def test_rank_accuracy_by_hand():
    saliency = np.arange(16, dtype=float).reshape(4, 4)
    mask = np.zeros(16, bool)
    mask[12:] = True
    assert relevance_rank_accuracy(saliency, mask.reshape(4, 4)) == 1.0
    mask = np.zeros(16, bool)
    mask[[15, 14, 0, 1]] = True                  # the top 4 are 12..15: two of the mask's four
    assert relevance_rank_accuracy(saliency, mask.reshape(4, 4)) == 0.5
    # ties: one pixel 1, the rest 0; mask {0, 5}: pixel 0 is first, then one of the 15 zeros,
    # which is pixel 5 with chance 1/15
    tied = np.zeros(16)
    tied[0] = 1.0
    mask = np.zeros(16, bool)
    mask[[0, 5]] = True
    assert relevance_rank_accuracy(tied.reshape(4, 4), mask.reshape(4, 4)) == pytest.approx(
        (1 + 1 / 15) / 2)
    # a constant map scores chance: the mask's share
    assert relevance_rank_accuracy(np.ones((4, 4)), mask.reshape(4, 4)) == pytest.approx(2 / 16)
    # void pixels are not ranked: the 100 would take the top place
    void = np.zeros(16, bool)
    void[3] = True
    s = tied.copy()
    s[3] = 100.0
    assert relevance_rank_accuracy(s.reshape(4, 4), mask.reshape(4, 4),
                                   void.reshape(4, 4)) == pytest.approx((1 + 1 / 14) / 2)
    assert relevance_rank_accuracy(s.reshape(4, 4), np.zeros((4, 4), bool)) is None


def test_rank_accuracy_matches_top_k_without_ties():
    rng = np.random.default_rng(1)
    for _ in range(20):
        saliency = rng.normal(size=(9, 11))
        mask = rng.random((9, 11)) < rng.uniform(0.05, 0.6)
        k = int(mask.sum())
        top = np.argsort(saliency.ravel())[::-1][:k]
        want = mask.ravel()[top].sum() / k
        assert relevance_rank_accuracy(saliency, mask) == pytest.approx(want)


def test_auc_matches_scikit_learn_with_ties_and_void():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(2)
    for _ in range(20):
        saliency = rng.integers(0, 5, size=(8, 10)).astype(np.float32)  # many ties
        mask = rng.random((8, 10)) < 0.3
        void = rng.random((8, 10)) < 0.2
        keep = ~void
        want = metrics.roc_auc_score(mask[keep], saliency[keep])
        assert mask_auc(saliency, mask, void) == pytest.approx(want, abs=1e-12)
        assert roc_auc(saliency.ravel(), mask.ravel()) == pytest.approx(
            metrics.roc_auc_score(mask.ravel(), saliency.ravel()), abs=1e-12)
    assert mask_auc(np.ones((3, 3)), np.eye(3, dtype=bool)) == 0.5
    assert mask_auc(np.eye(3), np.eye(3, dtype=bool)) == 1.0
    assert mask_auc(np.eye(3), ~np.eye(3, dtype=bool)) == 0.0
    assert mask_auc(np.eye(3), np.ones((3, 3), bool)) is None


def test_mass_on_others_by_hand():
    saliency = np.zeros((3, 4))
    saliency[0, 0] = 3.0        # own
    saliency[0, 1] = 4.0        # own and other: counts as own
    saliency[1, 1] = 5.0        # other
    saliency[2, 3] = 2.0        # background
    saliency[2, 0] = -7.0       # negative: ignored
    saliency[2, 2] = 50.0       # void: ignored
    own = np.zeros((3, 4), bool)
    own[0, :2] = True
    others = np.zeros((3, 4), bool)
    others[0:2, 1] = True
    void = np.zeros((3, 4), bool)
    void[2, 2] = True
    assert mass_on_others(saliency, own, others, void) == pytest.approx(5 / 14)
    assert mass_on_others(saliency, own, others) == pytest.approx(5 / 64)
    assert mass_on_others(-np.abs(saliency), own, others, void) is None  # no positive mass
    assert mass_on_others(saliency, own, np.zeros_like(own), void) is None  # no other region


def test_ssim_matches_scikit_image():
    skm = pytest.importorskip("skimage.metrics")
    rng = np.random.default_rng(4)
    for shape, scale in (((11, 11), 1.0), ((30, 47), 1.0), ((64, 40), 5.0)):
        a = rng.random(shape) * scale
        b = 0.6 * a + 0.4 * rng.random(shape) * scale
        want = skm.structural_similarity(a, b, data_range=scale, gaussian_weights=True,
                                         sigma=1.5, use_sample_covariance=False)
        assert ssim(a, b, data_range=scale) == pytest.approx(want, abs=1e-10)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(np.zeros((10, 20)), np.zeros((10, 20)))
    images = [rng.random((16, 18)) for _ in range(3)]
    matrix = ssim_matrix(images)
    for i in range(3):
        for j in range(3):
            want = 1.0 if i == j else skm.structural_similarity(
                images[i], images[j], data_range=1.0, gaussian_weights=True, sigma=1.5,
                use_sample_covariance=False)
            assert matrix[i, j] == pytest.approx(want, abs=1e-10)


def test_map_similarity_scales_and_clips():
    rng = np.random.default_rng(5)
    a = rng.random((20, 20))
    assert map_similarity(a, 3.0 * a) == pytest.approx(1.0)
    assert map_similarity(a - 2.0, np.zeros_like(a)) == pytest.approx(1.0)  # both empty
    b = np.zeros((20, 20))
    b[:10] = 1.0
    c = np.zeros((20, 20))
    c[10:] = 1.0
    assert map_similarity(b, c) < 0.2 < map_similarity(b, b + 0.1 * a)


def _photo() -> MaskedPhoto:
    labels = np.zeros((12, 12), np.uint8)
    labels[0:6, 0:6] = 1        # bus: 36 pixels
    labels[6:12, 6:12] = 2      # car: 36 pixels
    labels[11, 0] = 3           # cat: 1 pixel (under 1 %)
    labels[0, 11] = VOID
    return MaskedPhoto("x", np.zeros((12, 12, 3), np.uint8), labels, ("bus", "car", "cat"))


def test_score_photo_by_hand():
    photo = _photo()
    bus = np.zeros((12, 12))
    bus[0:6, 0:6] = 1.0
    bus[6:12, 6:12] = 0.5       # a third of its mass on the car
    bus[0, 11] = 9.0            # void: left out
    car = (photo.labels == 2).astype(float)
    masks = {"bus": photo.labels == 1, "car": np.zeros((12, 12), bool)}
    rows = {r["class"]: r for r in score_photo({"bus": bus, "car": car}, photo, masks,
                                               ["bus", "car", "cat"])}
    b, c, cat = rows["bus"], rows["car"], rows["cat"]
    assert b["pixels"] == 36 and b["share"] == 36 / 144 and not b["small"]
    assert cat["pixels"] == 1 and cat["small"]
    assert b["energy"] == pytest.approx(36 / 54) and b["hit"]
    assert b["rank"] == 1.0 and b["auc"] == 1.0
    assert b["other"] == pytest.approx(18 / 54)
    assert b["iou"] == 1.0 and c["iou"] == 0.0
    assert c["energy"] == 1.0 and c["other"] == 0.0
    assert b["ssim"] == pytest.approx(map_similarity(bus, car))
    assert b["ssim"] == c["ssim"]
    # the cat has no map: scored as an all-zero map
    assert cat["energy"] == 0.0 and not cat["hit"] and cat["auc"] == 0.5
    assert cat["rank"] == pytest.approx(1 / 143) and cat["other"] is None
    assert cat["ssim"] is None and cat["iou"] == 0.0
    only = score_photo({"car": car}, photo)
    assert [r["class"] for r in only] == ["car"] and only[0]["ssim"] is None
    assert only[0]["iou"] is None
    with pytest.raises(ValueError, match="no class 'dog'"):
        score_photo({}, photo, None, ["dog"])
    with pytest.raises(ValueError, match="is \\(3, 3\\)"):
        score_photo({"car": np.zeros((3, 3))}, photo)


def test_class_masks_override_labels():
    photo = _photo()
    overlap = photo.labels == 1
    overlap[6, 6] = True        # the bus reaches under the car
    covered = MaskedPhoto("y", photo.image, photo.labels, photo.class_names, "voc",
                          {"bus": overlap, "car": photo.labels == 2,
                           "cat": np.zeros((12, 12), bool)})
    assert covered.classes == ["bus", "car"]
    assert covered.mask("bus").sum() == 37 and covered.mask("cat").sum() == 0
    with pytest.raises(ValueError):
        covered.mask("dog")
