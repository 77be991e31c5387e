"""Candidate classes: the classes whose maps are computed and contrasted.

* Multi-label (sigmoid) model: every class whose score passes ``threshold`` (default 0.5), as in
  the paper; at most ``top_k`` of them when given.
* Single-label (softmax) model: the ``top_k`` most probable classes (default 2) among those whose
  probability is at least ``threshold`` (default 0).
* Or classes the user names, by name or index.

At least one class is always selected (the best one if none passes). Scores come from one scale
(the one closest to 1, i.e. the image as given) for the paper's preset. The released code's rule
(``any_scale``) reads each scale's class score map by its spatial maximum (the highest
per-location probability, :func:`image_scores`) rather than the pooled score, takes a class if
it passes at any scale, and tops its contrast set up to at least four classes by that score
summed over scales.

The ``score_map`` rule (the ``tuned`` preset's) reads the class score map of the image as given
instead of its pooled scores: classes are ranked by the number of locations at which they are
the most probable class, ties broken by their highest probability anywhere on the map, and a
class passes the threshold if its probability does somewhere. On an image of several objects a
softmax classifier's pooled scores favour one object's look-alike classes (tabby, tiger cat,
Egyptian cat), while each object wins the locations that see it: on 2x2 grids of photos of four
classes, the four most probable pooled classes held 36% (EfficientNet-Lite0) and 18%
(SqueezeNet 1.1) of the cells' classes, the four that won the most locations 71% and 34%
(``docs/RESULTS.md``).

A contrast set shorter than ``min_contrast`` is topped up by the same ranking (the score map's
for ``score_map``, the score summed over scales otherwise), whether the classes were named or
chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from dcsm.adapters.base import ModelAdapter, check_class_key
from dcsm.errors import DcsmError

CandidateRule = Literal["reference_scale", "any_scale", "score_map"]
CANDIDATE_RULES: tuple[str, ...] = ("reference_scale", "any_scale", "score_map")


@dataclass(frozen=True)
class Candidate:
    """A selected class: its index, name and score (probability) on the image."""

    index: int
    name: str
    score: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """The classes to output maps for, and the (larger or equal) set they are contrasted with.

    ``active[s, k]`` says whether contrast class k counts at scale s (released code only).
    """

    selected: list[Candidate]
    contrast: list[Candidate]
    active: torch.Tensor


def parse_classes(classes: str | Sequence[str | int] | None) -> list[str | int] | None:
    """``"auto"``/None -> None; ``"tabby,espresso"`` or a list -> list of names/indices (a bool,
    a float or another type in the list is a :class:`DcsmError`)."""
    if classes is None:
        return None
    if isinstance(classes, str):
        if classes.strip().lower() == "auto":
            return None
        items: list[str | int] = [c.strip() for c in classes.split(",") if c.strip()]
    else:
        try:
            items = [check_class_key(c) for c in classes]
        except TypeError:
            raise DcsmError(f"classes are 'auto', a name, or a list of names (str) or indices "
                            f"(int), got {classes!r}") from None
    if not items:
        raise DcsmError("empty class list")
    return items


def default_threshold(adapter: ModelAdapter) -> float:
    """0.5 for sigmoid scores, 0 for softmax probabilities."""
    return 0.5 if adapter.multilabel else 0.0


def default_top_k(adapter: ModelAdapter) -> int | None:
    """Unlimited for a multi-label model, 2 for a softmax one."""
    return None if adapter.multilabel else 2


def image_scores(adapter: ModelAdapter, score_map: torch.Tensor,
                 rule: CandidateRule = "reference_scale") -> torch.Tensor:
    """``(N, C)`` class probabilities of the ``(N, C, h, w)`` score map of one scale, as a rule
    reads them: the adapter's pooled scores, or for ``any_scale`` (the released code's) the
    highest probability of each class at any location of the map.

    ``dcsm.m`` (``shimoda-uec/mat_dcsm``, lines 51-58) takes each class's spatial maximum of its
    sigmoid score map, thresholds it at 0.5 (lines 59-61) and sums it over scales for the top-up
    (lines 62, 68-73). For a sigmoid model the maximum of the per-location probabilities is the
    sigmoid of the map's maximum; for a softmax model each location's softmax is taken first.
    """
    scores = score_map.detach().float()
    if rule == "any_scale":
        return adapter.probabilities(scores.movedim(1, -1)).movedim(-1, 1).amax(dim=(-2, -1))
    return adapter.probabilities(adapter.pool(scores))


def map_ranking(location_probs: torch.Tensor) -> list[int]:
    """Every class, ranked by the number of locations of ``location_probs`` (C, h, w) where it
    is the most probable class, ties broken by its highest probability anywhere."""
    probs = location_probs.detach().float().cpu()
    c = probs.shape[0]
    wins = torch.bincount(probs.argmax(dim=0).flatten(), minlength=c).tolist()
    peak = probs.flatten(1).amax(dim=1).tolist()
    return sorted(range(c), key=lambda i: (-wins[i], -peak[i], i))


def select(
    adapter: ModelAdapter,
    probs: torch.Tensor,
    reference: int,
    classes: str | Sequence[str | int] | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    rule: CandidateRule = "reference_scale",
    min_contrast: int = 1,
    location_probs: torch.Tensor | None = None,
) -> Selection:
    """Choose candidates from per-scale probabilities ``probs`` of shape (scales, C).

    ``reference`` is the row used for reported scores (the scale closest to 1).
    ``location_probs`` (C, h, w), the class probabilities at each location of the reference
    scale's score map, is needed by the ``score_map`` rule.
    """
    if rule not in CANDIDATE_RULES:
        raise DcsmError(f"unknown candidate rule '{rule}'; known: {', '.join(CANDIDATE_RULES)}")
    if rule == "score_map" and location_probs is None:
        raise DcsmError("the score_map candidate rule needs the class probabilities per location")
    if min_contrast < 1:
        raise DcsmError(f"the contrast set must hold at least 1 class, got {min_contrast}")
    if top_k is not None and top_k < 1:
        raise DcsmError(f"--top-k must be at least 1, got {top_k}")
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise DcsmError(f"--threshold must lie in [0, 1], got {threshold}")
    probs = probs.detach().float().cpu()
    thr = default_threshold(adapter) if threshold is None else threshold
    k = default_top_k(adapter) if top_k is None else top_k
    ref = probs[reference]
    # The score map's ranking, for choosing and for topping up (``score_map`` rule only).
    map_order = map_ranking(location_probs) if location_probs is not None and \
        rule == "score_map" else None

    def cand(i: int) -> Candidate:
        return Candidate(i, adapter.class_names[i], float(ref[i]))

    named = parse_classes(classes)
    if named is not None:
        idx = [adapter.class_index(c) for c in named]
        if len(set(idx)) != len(idx):
            raise DcsmError("a class is named twice")
        chosen = idx
        active = torch.ones(probs.shape[0], len(idx), dtype=torch.bool)
    else:
        if map_order is not None:
            assert location_probs is not None
            level = location_probs.detach().float().cpu().flatten(1).amax(dim=1)
            order = map_order
        else:
            level = probs.amax(dim=0) if rule == "any_scale" else ref
            order = torch.argsort(level, descending=True).tolist()
        chosen = [i for i in order if level[i] >= thr and (thr > 0 or level[i] > 0)]
        if k is not None:
            chosen = chosen[:k]
        if not chosen:
            chosen = order[:1]
        if rule == "any_scale" and adapter.multilabel:
            active = probs[:, chosen] >= thr
        else:
            active = torch.ones(probs.shape[0], len(chosen), dtype=torch.bool)
    contrast = list(chosen)
    if len(contrast) < min_contrast:
        ranking = map_order if map_order is not None else \
            torch.argsort(probs.sum(dim=0), descending=True).tolist()
        for i in ranking:
            if len(contrast) >= min(min_contrast, adapter.num_classes):
                break
            if i not in contrast:
                contrast.append(i)
    pad = torch.zeros(probs.shape[0], len(contrast) - len(chosen), dtype=torch.bool)
    return Selection([cand(i) for i in chosen], [cand(i) for i in contrast],
                     torch.cat([active, pad], dim=1))


ClassSpec = str | Sequence[str | int] | Sequence[Sequence[str | int]] | torch.Tensor | None
"""Classes for a batch: ``"auto"``/None, one list for every image, a list per image, or an
(N, K) index tensor."""


def per_image_classes(classes: ClassSpec, n: int) -> list[str | Sequence[str | int] | None]:
    """``classes`` for a batch of ``n`` images as one entry per image."""
    if isinstance(classes, torch.Tensor):
        if classes.dtype == torch.bool or classes.is_floating_point() or classes.is_complex():
            raise DcsmError(f"a class tensor holds indices (an integer dtype), got {classes.dtype}")
        if classes.ndim == 1:
            classes = classes.unsqueeze(0).expand(n, -1)
        if classes.ndim != 2 or classes.shape[0] != n:
            raise DcsmError(f"a class tensor for {n} images must be ({n}, K), got "
                            f"{tuple(classes.shape)}")
        return [[int(i) for i in row] for row in classes.tolist()]
    if classes is None or isinstance(classes, str):
        return [classes] * n
    if not isinstance(classes, Iterable):  # one index; a float or a bool is an error
        return [[check_class_key(classes)]] * n
    items = list(classes)
    if items and all(isinstance(c, Sequence) and not isinstance(c, str | bytes) for c in items):
        if len(items) != n:
            raise DcsmError(f"{len(items)} class lists given for {n} images")
        lengths = {len(c) for c in items}  # type: ignore[arg-type]
        if len(lengths) != 1:
            raise DcsmError("every image of a batch needs the same number of classes, got "
                            + ", ".join(str(len(c)) for c in items))  # type: ignore[arg-type]
        return [list(c) for c in items]  # type: ignore[arg-type]
    if any(isinstance(c, Sequence) and not isinstance(c, str | bytes) for c in items):
        raise DcsmError("classes mix names with lists: give one list for every image or a "
                        "list per image")
    return [items] * n  # type: ignore[list-item]


class UnevenCandidates(DcsmError):
    """The images of a batch got different numbers of automatic candidates."""


def uniform(selections: Sequence[Selection]) -> None:
    """:class:`UnevenCandidates` unless every image's selection has the same numbers of
    classes."""
    sizes = {(len(s.selected), len(s.contrast)) for s in selections}
    if len(sizes) > 1:
        counts = ", ".join(str(len(s.selected)) for s in selections)
        raise UnevenCandidates(f"the automatic candidates differ in number between the images "
                               f"of the batch ({counts}); give top_k, or name the classes")
