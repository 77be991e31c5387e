"""The one shrinking rule: the long side at most max_side, each side rounded and at least 1, the
short side kept at min_short pixels where asked; the previews, figures and the segmentation's
working size all follow it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dcsm.pipeline.images import resize_image, resize_map, shrink_image, shrink_map, working_size


@pytest.mark.parametrize(("size", "max_side", "min_short", "want"), [
    ((1000, 500), 512, 0, (512, 256)),
    ((500, 1000), 512, 0, (256, 512)),
    ((375, 500), 512, 0, (375, 500)),  # already small enough
    ((3000, 4000), None, 0, (3000, 4000)),  # None: the full size
    ((100, 5000), 64, 0, (1, 64)),  # 1.28 rounds to 1
    ((100, 5000), 64, 8, (8, 400)),  # the short side kept at 8: long = ceil(5000 * 8 / 100)
    ((5000, 8), 64, 8, (5000, 8)),  # 8 pixels wide already: not shrunk at all
    ((5000, 6), 64, 8, (5000, 6)),  # narrower than min_short: kept as it is
    ((1001, 999), 100, 8, (100, 100)),
    ((0, 600), 512, 8, (1, 512)),  # no division by a zero short side
])
def test_working_size_known_answers(size, max_side, min_short, want):
    assert working_size(*size, max_side, min_short=min_short) == want


def _old_shrunk(height: int, width: int, side: int | None, min_short: int) -> tuple[int, int]:
    """The three copies the one rule replaced: the explainer's working size and the display
    sizes (min_short 0) and the segmentation's working side (min_short 8), written out."""
    long, short = max(height, width), min(height, width)
    if side is None or long <= side:
        return height, width
    if min_short:
        side = max(side, math.ceil(long * min(short, min_short) / short))
        if side >= long:
            return height, width
    f = side / long
    return max(1, round(height * f)), max(1, round(width * f))


def test_working_size_agrees_with_the_copies_it_replaced():
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 6000, size=(2000, 2)):
        for side in (32, 64, 512, 1024, 2048):
            for min_short in (0, 8):
                assert working_size(int(height), int(width), side, min_short) == \
                    _old_shrunk(int(height), int(width), side, min_short)


def test_shrink_and_resize():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    m = rng.random((300, 200)).astype(np.float32)
    assert shrink_image(image, 150).shape == (150, 100, 3)
    assert shrink_map(m, 150).shape == (150, 100) and shrink_map(m, 150).dtype == np.float32
    assert shrink_image(image, 300) is image and shrink_map(m, 400) is m
    assert resize_image(image, (300, 200)) is image and resize_map(m, (300, 200)) is m
    np.testing.assert_array_equal(shrink_image(image, 150), resize_image(image, (150, 100)))
    flat = np.full((300, 200), 0.25, np.float32)
    np.testing.assert_allclose(resize_map(flat, (31, 17)), 0.25, rtol=1e-6)
