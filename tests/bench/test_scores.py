"""Localisation metrics on hand-made maps whose scores are known."""

from __future__ import annotations

import numpy as np
import pytest

from dcsm.bench.scores import (
    box_mask,
    energy_pointing_game,
    grid_cells,
    grid_pointing_game,
    grid_pointing_score,
    pointing_game_hit,
    summarize,
)


def test_grid_cells_cover_the_image_row_major():
    cells = grid_cells(10, 7, 2)
    assert cells == [(slice(0, 5), slice(0, 4)), (slice(0, 5), slice(4, 7)),
                     (slice(5, 10), slice(0, 4)), (slice(5, 10), slice(4, 7))]
    cover = np.zeros((10, 7), dtype=int)
    for c in cells:
        cover[c] += 1
    assert (cover == 1).all()


def test_grid_pointing_game_known_scores():
    m = np.zeros((4, 4))
    m[0, 0], m[0, 3], m[3, 3] = 3.0, 1.0, -5.0  # negatives are ignored
    assert grid_pointing_score(m, grid_cells(4, 4, 2)[0]) == pytest.approx(0.75)
    assert grid_pointing_score(m, grid_cells(4, 4, 2)[1]) == pytest.approx(0.25)
    assert grid_pointing_score(m, grid_cells(4, 4, 2)[3]) == 0.0
    uniform = np.ones((4, 4))
    assert grid_pointing_game([uniform, None, uniform, uniform], 2) == [0.25, None, 0.25, 0.25]
    tiny = np.full((4, 4), 1e-9)  # total mass 1.6e-8 < 1e-7 -> 0
    assert grid_pointing_game([tiny] * 4, 2) == [0.0] * 4
    with pytest.raises(ValueError):
        grid_pointing_game([uniform], 2)


def test_pointing_game_tolerance_and_edge_cases():
    mask = np.zeros((50, 50), dtype=bool)
    mask[10:20, 10:20] = True
    m = np.zeros((50, 50))
    m[19, 34] = 1.0  # 15 px right of the mask's last column (19): distance 15 -> hit
    assert pointing_game_hit(m, mask)
    m[19, 34], m[19, 35] = 0.0, 1.0  # 16 px -> miss
    assert not pointing_game_hit(m, mask)
    assert pointing_game_hit(m, mask, tolerance=16)
    assert not pointing_game_hit(np.zeros((50, 50)), mask)  # no positive value
    assert not pointing_game_hit(m, np.zeros((50, 50), dtype=bool))  # empty mask
    m2 = np.zeros((50, 50))
    m2[12, 12] = 2.0
    assert pointing_game_hit(m2, mask, tolerance=0)


def test_energy_pointing_game_known_values():
    m = np.array([[1.0, 1.0], [2.0, -4.0]])
    mask = np.array([[True, False], [True, False]])
    assert energy_pointing_game(m, mask) == pytest.approx(3.0 / 4.0)
    assert energy_pointing_game(np.zeros((2, 2)), mask) == 0.0
    box = box_mask((4, 6), (1, 2, 4, 4))
    assert box.sum() == 6 and box[2:4, 1:4].all()
    with pytest.raises(ValueError):
        energy_pointing_game(m, np.ones((3, 3), dtype=bool))


def test_summarize():
    s = summarize([0.0, 1.0, None, 0.5, 0.25])
    assert s == {"n": 4, "mean": pytest.approx(0.4375), "median": pytest.approx(0.375),
                 "q1": pytest.approx(0.1875), "q3": pytest.approx(0.625)}
    assert summarize([None])["n"] == 0
