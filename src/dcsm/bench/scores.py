r"""Localisation metrics for class saliency maps.

* **Grid pointing game** (Rao, Böhle and Schiele, *Towards better understanding attribution
  methods*, CVPR 2022): an ``n x n`` grid of images of distinct classes; for the class of cell
  ``i`` the map over the whole grid, negatives zeroed, scores the share of its mass inside cell
  ``i``:

  .. math:: \mathrm{GPG}_i = \frac{\sum_{p \in \mathrm{cell}_i} A^+_p}{\sum_p A^+_p}

  (0 when :math:`\sum_p A^+_p < 10^{-7}`). Chance is :math:`1/n^2`.
* **Pointing game** (Zhang et al., *Top-down neural attention by excitation backprop*, ECCV
  2016): a hit when the map's maximum lies within 15 pixels of the class's mask. The maximum is
  the first maximal pixel in row-major order; a map with no positive value is a miss.
* **Energy pointing game** (Wang et al., *Score-CAM*, CVPR Workshops 2020): the share of the map's
  positive mass inside the class's mask (or box).
* **Relevance rank accuracy** (Arras, Osman and Samek, 2022), the **ROC AUC** of the map against
  the mask, the **mass on the other classes' masks** and the **SSIM** between two classes' maps
  (Wang et al. 2004): :func:`relevance_rank_accuracy`, :func:`mask_auc`, :func:`mass_on_others`,
  :func:`map_similarity` (used by ``dcsm bench masks``, :mod:`dcsm.bench.masks`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.ndimage import gaussian_filter

GPG_EPSILON = 1e-7


def grid_cells(height: int, width: int, n: int) -> list[tuple[slice, slice]]:
    """Row-major cells of an ``n x n`` grid over a ``height x width`` image (equal integer
    splits; the last row/column takes any remainder)."""
    ys = [round(i * height / n) for i in range(n + 1)]
    xs = [round(j * width / n) for j in range(n + 1)]
    return [(slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])) for i in range(n) for j in range(n)]


def grid_pointing_score(saliency: np.ndarray, cell: tuple[slice, slice]) -> float:
    """Positive mass of ``saliency`` inside ``cell`` over its total positive mass."""
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, None)
    total = positive.sum()
    if total < GPG_EPSILON:
        return 0.0
    return float(positive[cell].sum() / total)


def grid_pointing_game(maps: Sequence[np.ndarray | None], n: int) -> list[float | None]:
    """Scores of each cell of an ``n x n`` grid; ``maps[i]`` is the map of cell i's class over
    the whole grid, or None for a cell that is not evaluated (its class not recognised)."""
    if len(maps) != n * n:
        raise ValueError(f"expected {n * n} maps, got {len(maps)}")
    shape = next((m.shape for m in maps if m is not None), None)
    if shape is None:
        return [None] * len(maps)
    cells = grid_cells(shape[0], shape[1], n)
    return [None if m is None else grid_pointing_score(m, cells[i]) for i, m in enumerate(maps)]


def pointing_game_hit(saliency: np.ndarray, mask: np.ndarray, tolerance: float = 15.0) -> bool:
    """Whether the map's maximum lies within ``tolerance`` pixels of ``mask`` (Zhang et al.)."""
    saliency = np.asarray(saliency, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if saliency.shape != mask.shape:
        raise ValueError(f"map {saliency.shape} and mask {mask.shape} differ in shape")
    if not mask.any() or not (saliency > 0).any():
        return False
    y, x = np.unravel_index(int(np.argmax(saliency)), saliency.shape)
    distance = ndimage.distance_transform_edt(~mask)  # 0 inside the mask
    return bool(distance[y, x] <= tolerance)


def energy_pointing_game(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the map's positive mass inside ``mask`` (0 for a map with no positive mass)."""
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, None)
    mask = np.asarray(mask, dtype=bool)
    if positive.shape != mask.shape:
        raise ValueError(f"map {positive.shape} and mask {mask.shape} differ in shape")
    total = positive.sum()
    return 0.0 if total <= 0 else float(positive[mask].sum() / total)


def box_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Boolean mask of the box ``(x0, y0, x1, y1)`` (end-exclusive) in an image of ``shape``."""
    mask = np.zeros(shape, dtype=bool)
    x0, y0, x1, y1 = box
    mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def summarize(scores: Sequence[float | None]) -> dict[str, float | int]:
    """Mean, median, quartiles and count of the evaluated (non-None) scores."""
    values = np.asarray([s for s in scores if s is not None], dtype=np.float64)
    if values.size == 0:
        return {"n": 0, "mean": float("nan"), "median": float("nan"),
                "q1": float("nan"), "q3": float("nan")}
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return {"n": int(values.size), "mean": float(values.mean()), "median": float(med),
            "q1": float(q1), "q3": float(q3)}


# ------------------------------------------------------------------ maps against object masks
def _kept(values: np.ndarray, void: np.ndarray | None) -> np.ndarray:
    """The pixels of ``values`` outside ``void`` (all of them for None), flattened."""
    values = np.asarray(values)
    return values.ravel() if void is None else values[~np.asarray(void, dtype=bool)]


def _same_shape(saliency: np.ndarray, *masks: np.ndarray | None) -> None:
    for mask in masks:
        if mask is not None and np.shape(mask) != np.shape(saliency):
            raise ValueError(f"map {np.shape(saliency)} and mask {np.shape(mask)} differ in "
                             "shape")


def relevance_rank_accuracy(saliency: np.ndarray, mask: np.ndarray,
                            void: np.ndarray | None = None) -> float | None:
    r"""Relevance rank accuracy (Arras, Osman and Samek, *CLEVR-XAI*, Information Fusion 2022).

    With :math:`K = |M|` the mask's size, the share of the mask among the :math:`K` pixels the
    map ranks highest, void pixels left out:

    .. math:: \mathrm{RRA} = \frac{|M \cap \mathrm{top}_K(A)|}{K}.

    Ties at the :math:`K`-th value are shared out evenly (the expected value when the ties are
    broken at random): with :math:`t` the :math:`K`-th largest value, :math:`G` the pixels above
    it and :math:`E` those equal to it, :math:`|M \cap \mathrm{top}_K| = |M \cap G| + (K -
    |G|)\,|M \cap E| / |E|`. A constant map scores the mask's share of the photo (chance). None
    when the mask has no pixel outside ``void``.
    """
    _same_shape(saliency, mask, void)
    values = _kept(np.asarray(saliency, dtype=np.float64), void)
    inside = _kept(np.asarray(mask, dtype=bool), void)
    k = int(inside.sum())
    if k == 0:
        return None
    t = np.partition(values, values.size - k)[values.size - k]  # the K-th largest value
    above, equal = values > t, values == t
    hits = inside[above].sum() + (k - above.sum()) * inside[equal].sum() / equal.sum()
    return float(hits / k)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    r"""Area under the ROC curve of ``scores`` as a classifier of ``positive``, ties counting
    one half (the Mann-Whitney statistic):

    .. math:: \mathrm{AUC} = \frac{\sum_{i \in P} r_i - |P|(|P| + 1)/2}{|P|\,|N|}

    with :math:`r_i` the average rank (1-based) of score :math:`i` among all. None when either
    class is empty.
    """
    scores = np.asarray(scores).ravel()
    if not np.issubdtype(scores.dtype, np.floating):
        scores = scores.astype(np.float64)
    positive = np.asarray(positive, dtype=bool).ravel()
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores)  # ties are shared out below, whatever their order here
    ordered = scores[order]
    first = np.ones(ordered.size, dtype=bool)          # the first of each run of equal values
    first[1:] = ordered[1:] != ordered[:-1]
    starts = np.flatnonzero(first)
    sizes = np.diff(np.append(starts, ordered.size))
    mean_rank = starts + (sizes + 1) / 2.0              # 1-based average rank of each run
    ranks = np.empty(ordered.size)
    ranks[order] = mean_rank[np.cumsum(first) - 1]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def mask_auc(saliency: np.ndarray, mask: np.ndarray,
             void: np.ndarray | None = None) -> float | None:
    """ROC AUC of the map's values as a score for membership of ``mask`` (:func:`roc_auc`),
    void pixels left out: 1 when every mask pixel outranks every other pixel, 0.5 for a
    constant map. None when the mask covers none or all of the pixels outside ``void``."""
    _same_shape(saliency, mask, void)
    return roc_auc(_kept(np.asarray(saliency), void),
                   _kept(np.asarray(mask, dtype=bool), void))


def mass_on_others(saliency: np.ndarray, own: np.ndarray, others: np.ndarray,
                   void: np.ndarray | None = None) -> float | None:
    r"""Class specificity: the share of the map's positive mass on the other classes' regions,

    .. math:: \frac{\sum_{p \in O \setminus M} A^+_p}{\sum_p A^+_p},

    with :math:`M` the class's own mask, :math:`O` the union of the other present classes'
    masks, sums over the pixels outside ``void``. Lower is better. None when the map has no
    positive mass there (an empty map would otherwise score best) or :math:`O \setminus M` is
    empty (nothing to tell the class from).
    """
    _same_shape(saliency, own, others, void)
    positive = np.clip(np.asarray(saliency, dtype=np.float64), 0.0, None)
    region = np.asarray(others, dtype=bool) & ~np.asarray(own, dtype=bool)
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        positive, region = positive[keep], region[keep]
    total = positive.sum()
    if total <= 0 or not region.any():
        return None
    return float(positive[region].sum() / total)


#: SSIM's constants (Wang et al. 2004): K1, K2, the Gaussian window's sigma and its truncation.
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE = 0.01, 0.03, 1.5, 3.5


def _ssim_window() -> int:
    """Half the side of SSIM's Gaussian window (5: an 11 x 11 window)."""
    return int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)


def _blur(v: np.ndarray) -> np.ndarray:
    return gaussian_filter(v, sigma=SSIM_SIGMA, truncate=SSIM_TRUNCATE, mode="reflect")


def _ssim_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(v, dtype=np.float64) for v in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1 or any(a.ndim != 2 for a in arrays):
        raise ValueError(f"ssim needs 2-D arrays of one shape, got {sorted(shapes)}")
    half = _ssim_window()
    if arrays and min(arrays[0].shape) < 2 * half + 1:
        raise ValueError(f"ssim needs images of at least {2 * half + 1} pixels a side, "
                         f"got {arrays[0].shape}")
    return arrays


def ssim_matrix(images: Sequence[np.ndarray], data_range: float = 1.0) -> np.ndarray:
    r"""Mean structural similarity of every pair of images (Wang, Bovik, Sheikh and Simoncelli,
    IEEE TIP 2004), Gaussian-weighted (sigma 1.5, truncated at 3.5 sigma: an 11 x 11 window):

    .. math:: \mathrm{SSIM}(x, y) = \frac{(2\mu_x\mu_y + C_1)(2\sigma_{xy} + C_2)}
              {(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},

    :math:`C_1 = (0.01 L)^2`, :math:`C_2 = (0.03 L)^2`, :math:`L` the data range; local means,
    variances and covariance are Gaussian-weighted (population, not sample, statistics; edges
    mirrored), and the mean is taken over the pixels at least the window's half-width from the
    border. The same numbers as scikit-image's ``structural_similarity(a, b, data_range=L,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``. Each image's local means
    and variances are computed once, so n images cost n(n - 1)/2 + 2n filterings, not 5 per
    pair.

    Returns:
        (n, n) float64, symmetric, 1 on the diagonal.
    """
    arrays = _ssim_images(images)
    half = _ssim_window()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    means = [_blur(a) for a in arrays]
    variances = [_blur(a * a) - m * m for a, m in zip(arrays, means, strict=True)]
    n = len(arrays)
    out = np.eye(n)
    inner = (slice(half, -half), slice(half, -half))
    for i in range(n):
        for j in range(i + 1, n):
            mx, my = means[i], means[j]
            cxy = _blur(arrays[i] * arrays[j]) - mx * my
            s = ((2 * mx * my + c1) * (2 * cxy + c2)) / (
                (mx * mx + my * my + c1) * (variances[i] + variances[j] + c2))
            out[i, j] = out[j, i] = float(s[inner].mean())
    return out


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean structural similarity of two images (:func:`ssim_matrix`)."""
    return float(ssim_matrix([a, b], data_range)[0, 1])


def _unit(m: np.ndarray) -> np.ndarray:
    v = np.clip(np.asarray(m, dtype=np.float64), 0.0, None)
    top = v.max() if v.size else 0.0
    return v / top if top > 0 else v


def map_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM (:func:`ssim`) of two saliency maps, each first scaled to [0, 1]: negatives set to
    0, divided by its maximum (an empty map stays 0). Two classes' maps of one photo that are
    alike score near 1; distinct maps score low."""
    return ssim(_unit(a), _unit(b), data_range=1.0)


def map_similarities(maps: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`map_similarity` of every pair of ``maps``, as an (n, n) matrix."""
    return ssim_matrix([_unit(m) for m in maps], data_range=1.0)
