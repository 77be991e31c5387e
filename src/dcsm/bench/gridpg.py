r"""The grid pointing game (Rao, Böhle and Schiele, CVPR 2022) on real photos.

An ``n x n`` grid holds ``n^2`` views of different photos (see :mod:`dcsm.bench.photos`), each
recognised alone by the model with probability at least ``tau`` and all of different classes.
For the class of each cell, a method's map over the whole grid is scored by
:func:`dcsm.bench.scores.grid_pointing_game`: the share of its positive mass inside that cell
(chance
:math:`1/n^2`). A method that gives no map for a cell's class (dcsm with automatically chosen
candidates that miss it) scores 0 there.

Grids are drawn with a seeded generator: ``n^2`` different photo groups, one view of each, all
classes distinct, no two grids with the same set of views.

``run_benchmark`` runs every method on every grid and returns a JSON-friendly dict (every cell's
score, summaries, seconds per grid); :mod:`dcsm.bench.report` writes it out.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from dcsm.bench.methods import (
    CANDIDATE_MODES,
    DEFAULT_MODES,
    DEFAULT_MODES_3X3,
    BenchMethod,
    Candidates,
    MapFunction,
    get_methods,
)
from dcsm.bench.photos import Photo, View, find_views
from dcsm.bench.scores import grid_pointing_game, summarize
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter


@dataclass(frozen=True)
class Grid:
    """An ``n x n`` grid of views, row-major, and its pixels."""

    n: int
    views: tuple[View, ...]
    image: np.ndarray

    @property
    def classes(self) -> list[int]:
        """The class index of each cell, row-major."""
        return [v.class_index for v in self.views]

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly description (without the pixels)."""
        return {"n": self.n, "cells": [v.as_dict() for v in self.views]}


def compose(views: Sequence[View], n: int) -> np.ndarray:
    """The ``n x n`` grid image of equally sized square views, row-major."""
    if len(views) != n * n:
        raise DcsmError(f"a {n}x{n} grid needs {n * n} views, got {len(views)}")
    cell = views[0].image.shape[0]
    if any(v.image.shape != (cell, cell, 3) for v in views):
        raise DcsmError("grid views must all be square RGB images of one size")
    rows = [np.concatenate([v.image for v in views[r * n:(r + 1) * n]], axis=1) for r in range(n)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def make_grid(views: Sequence[View], n: int) -> Grid:
    """A :class:`Grid`; DcsmError if two cells share a class or a photo group."""
    if len({v.class_index for v in views}) != len(views):
        raise DcsmError("grid cells must have distinct classes")
    if len({v.group for v in views}) != len(views):
        raise DcsmError("grid cells must come from different photos")
    return Grid(n, tuple(views), compose(views, n))


def sample_grids(views: Sequence[View], n: int, count: int, seed: int = 0,
                 max_tries: int = 200) -> list[Grid]:
    """Up to ``count`` distinct random grids (deterministic for a seed).

    Each grid takes ``n^2`` different photo groups, one view of each, with distinct classes.
    Raises DcsmError if fewer than ``n^2`` groups have a view.
    """
    if n < 1 or count < 1:
        raise DcsmError("grid size and grid count must be at least 1")
    groups: dict[str, list[View]] = {}
    for v in views:
        groups.setdefault(v.group, []).append(v)
    names = sorted(groups)
    if len(names) < n * n:
        raise DcsmError(f"a {n}x{n} grid needs {n * n} photos with a confidently recognised view; "
                        f"only {len(names)} have one (lower --tau or add --images)")
    rng = np.random.default_rng(seed)
    seen: set[frozenset[tuple[str, tuple[int, int, int]]]] = set()
    grids: list[Grid] = []
    for _ in range(max_tries * count):
        if len(grids) >= count:
            break
        chosen = [names[i] for i in rng.choice(len(names), size=n * n, replace=False)]
        cells = [groups[g][int(rng.integers(len(groups[g])))] for g in chosen]
        key = frozenset((v.photo, v.box) for v in cells)
        if key in seen or len({v.class_index for v in cells}) != len(cells):
            continue
        seen.add(key)
        grids.append(make_grid(cells, n))
    return grids


def score_maps(maps: dict[int, np.ndarray], classes: Sequence[int], n: int,
               shape: tuple[int, int]) -> list[float]:
    """Grid pointing game score of each cell; a class without a map scores 0."""
    full = [maps.get(c) for c in classes]
    for m in full:
        if m is not None and tuple(m.shape) != tuple(shape):
            raise DcsmError(f"a map has shape {tuple(m.shape)}, expected {tuple(shape)}")
    scores = grid_pointing_game([np.zeros(shape) if m is None else m for m in full], n)
    return [0.0 if m is None or s is None else float(s)
            for m, s in zip(full, scores, strict=True)]


@dataclass
class Run:
    """One row of the results: a method with one candidate mode (None: it does not matter)."""

    spec: BenchMethod
    mode: Candidates | None
    function: MapFunction | None = None

    @property
    def key(self) -> str:
        """``method`` or ``method@mode``."""
        return self.spec.key if self.mode is None else f"{self.spec.key}@{self.mode}"

    @property
    def label(self) -> str:
        """Table label."""
        return self.spec.label if self.mode is None else f"{self.spec.label}, {self.mode}"


_MODES: dict[str, Candidates] = {"oracle": "oracle", "target": "target", "auto": "auto"}


def _mode(name: str) -> Candidates:
    if name in _MODES:
        return _MODES[name]
    raise DcsmError(f"candidate modes must be among {', '.join(CANDIDATE_MODES)}")


def plan_runs(methods: Sequence[BenchMethod], modes: Sequence[str] = DEFAULT_MODES) -> list[Run]:
    """One run per method, or per method and candidate mode for contrastive methods."""
    bad = [m for m in modes if m not in CANDIDATE_MODES]
    if bad or not modes:
        raise DcsmError(f"candidate modes must be among {', '.join(CANDIDATE_MODES)}")
    runs: list[Run] = []
    for spec in methods:
        if spec.contrastive:
            runs.extend(Run(spec, _mode(mode)) for mode in modes)
        else:
            runs.append(Run(spec, None))
    return runs


def run_benchmark(
    adapter: ModelAdapter,
    grids: Sequence[Grid],
    methods: Sequence[BenchMethod],
    modes: Sequence[str] = DEFAULT_MODES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, dict[str, object]]:
    """Every method on every grid.

    Returns, per run key: its label, library, candidate mode, every cell's score (one list per
    grid), the summary (mean, median, quartiles, n), ``seconds_per_grid`` (the median over the
    grids, which leaves out the first call's imports and allocations) and, for automatic
    candidates, the share of cells whose class got a map (``candidate_recall``).
    The methods take turns on each grid, so that a load that comes and goes on a shared
    machine slows them alike.
    """
    if not grids:
        raise DcsmError("no grids to run")
    runs = plan_runs(methods, modes)
    for run in runs:
        run.function = run.spec.build(adapter, run.mode or "oracle")
    scores: dict[str, list[list[float]]] = {run.key: [] for run in runs}
    seconds: dict[str, list[float]] = {run.key: [] for run in runs}
    found = dict.fromkeys(scores, 0)
    for g, grid in enumerate(grids):
        for run in runs:
            assert run.function is not None
            start = time.perf_counter()
            maps = run.function(grid.image, grid.classes)
            seconds[run.key].append(time.perf_counter() - start)
            found[run.key] += sum(c in maps for c in grid.classes)
            scores[run.key].append(score_maps(maps, grid.classes, grid.n, grid.image.shape[:2]))
        if progress is not None:
            progress(f"grid {g + 1}/{len(grids)}: " + ", ".join(
                f"{v.class_name}" for v in grid.views))
    results: dict[str, dict[str, object]] = {}
    for run in runs:
        flat = [s for row in scores[run.key] for s in row]
        entry: dict[str, object] = {
            "label": run.label, "method": run.spec.key, "source": run.spec.source,
            "candidates": run.mode or "n/a", "scores": scores[run.key],
            "summary": summarize(flat), "seconds_per_grid": float(np.median(seconds[run.key])),
        }
        if run.mode not in (None, "oracle"):
            entry["candidate_recall"] = found[run.key] / len(flat)
        results[run.key] = entry
    return results


#: Grids drawn by default, per grid size (keeps a run on two CPU cores to about 10 minutes).
DEFAULT_GRIDS = {2: 24, 3: 8}


def gridpg(
    adapter: ModelAdapter,
    photos: Sequence[Photo],
    n: int = 2,
    count: int | None = None,
    tau: float = 0.5,
    cell: int = 224,
    seed: int = 0,
    crops: bool = True,
    methods: Sequence[BenchMethod] | None = None,
    modes: Sequence[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, object]:
    """The whole benchmark: views, grids, every method; returns the report (JSON-friendly).

    ``modes`` defaults to oracle, target and auto on 2x2 grids, oracle and auto on larger ones.
    """
    if n < 2:
        raise DcsmError(f"--grid must be at least 2, got {n}")
    if cell < adapter.min_input:
        raise DcsmError(f"--cell must be at least {adapter.min_input} for {adapter.name}")
    count = DEFAULT_GRIDS.get(n, 8) if count is None else count
    if modes is None:
        modes = DEFAULT_MODES if n == 2 else DEFAULT_MODES_3X3
    methods = get_methods() if methods is None else list(methods)
    views = find_views(adapter, photos, cell, tau, crops)
    grids = sample_grids(views, n, count, seed)
    if progress is not None:
        progress(f"{len(photos)} photos, {len(views)} views with confidence >= {tau}, "
                 f"{len(grids)} {n}x{n} grids")
    results = run_benchmark(adapter, grids, methods, modes, progress)
    return {
        "benchmark": "grid pointing game (Rao, Böhle and Schiele, CVPR 2022)",
        "definition": "for the class of each cell, the map over the whole grid with negatives "
                      "zeroed; score = positive mass inside the cell / total positive mass "
                      "(0 when the total is below 1e-7, or when the method gives no map for the "
                      "class); chance = 1/n^2",
        "model": adapter.name, "grid": n, "cell": cell, "tau": tau, "seed": seed,
        "crops": crops, "candidate_modes": list(modes),
        "cells_scored": sum(len(g.views) for g in grids),
        "photos": [p.name for p in photos],
        "views": [v.as_dict() for v in views],
        "grids": [g.as_dict() for g in grids],
        "methods": results,
    }
