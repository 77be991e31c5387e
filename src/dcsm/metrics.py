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
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

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
