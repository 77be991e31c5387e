r"""Candidate classes: the classes whose maps are computed and contrasted.

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

**Look-alikes** (``merge_lookalikes``, on in the ``tuned`` preset only). An ImageNet classifier
names one object with several classes (a bicycle is a "mountain bike" at some locations and a
"bicycle-built-for-two" at others); two such candidates split one object's map between them and
leave no room for the other objects. With ``merge_lookalikes`` two classes are look-alikes when

* *(semantic)* both are ImageNet-1k classes of one PASCAL VOC or COCO class with several
  members (:data:`dcsm.pipeline.adapters.groups.LABEL_SETS`: their WordNet synsets share that
  class's synset as hypernym: bicycles, dogs, domestic cats, cars, buses, ...), for a model whose
  classes are ImageNet-1k's; or
* *(spatial, any model)* they contest the same locations of the class score map: with
  :math:`W_c` the locations where class :math:`c` is the most probable and :math:`T_2(x)` the
  two most probable classes at :math:`x` (none where several tie for second), their runner-up
  share

  .. math::

      r(a, b) = \frac{|\{x : T_2(x) = \{a, b\}\}|}{|W_a| + |W_b|} \ge 0.5,

  i.e. at half or more of the locations either class wins, the other is second
  (:data:`LOOKALIKE_SHARE`), counted where the two win at least four locations together
  (:data:`LOOKALIKE_MIN_WINS`; never on a score map of one location). Two different objects
  meet only along their border, so their share stays small: on 56 grids of four or nine photos
  (``dcsm bench gridpg``, both offline models, the eight best-ranked classes of each grid) no
  two classes whose maps lie on different photos reached 0.5, while "Egyptian cat" and "tiger
  cat" on the bundled image share 0.64 (``docs/RESULTS.md``).

Classes are taken in ranking order and a class that is a look-alike of one already chosen is
skipped and recorded in that candidate's :attr:`Candidate.merged`: the survivor is the one ranked
first (for ``score_map``: the one that wins more locations). The contrast top-up skips the
look-alikes of the classes already in the contrast set likewise (under the ``tuned`` preset's
strongest-other contrast, a look-alike on the same object would leave a class no map at all).
Named classes are never merged or dropped, whatever they resemble.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, cast

import torch

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter, check_class_key
from dcsm.pipeline.adapters.groups import LABEL_SETS
from dcsm.pipeline.adapters.imagenet import imagenet_class_names

CandidateRule = Literal["reference_scale", "any_scale", "score_map"]
CANDIDATE_RULES: tuple[str, ...] = ("reference_scale", "any_scale", "score_map")

#: The runner-up share at or above which two classes are look-alikes of one object (module
#: docstring).
LOOKALIKE_SHARE = 0.5
#: The fewest locations two classes must win together for the spatial signal to count: on a
#: score map of one location (a model whose head flattens its features) the second class is
#: "second wherever the first wins" without any sign of a shared object.
LOOKALIKE_MIN_WINS = 4


@dataclass(frozen=True)
class Candidate:
    """A selected class: its index, name and score (probability) on the image, and the names of
    the look-alike classes merged into it (``merge_lookalikes``; empty otherwise)."""

    index: int
    name: str
    score: float
    merged: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form; ``merged`` only where something was merged."""
        out = asdict(self)
        out.pop("merged")
        if self.merged:
            out["merged"] = list(self.merged)
        return out


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


@functools.cache
def _imagenet_kinds() -> dict[int, frozenset[str]]:
    """ImageNet-1k index -> the VOC and COCO classes of several members whose group holds it."""
    kinds: dict[int, set[str]] = {}
    for labels in LABEL_SETS.values():
        for name, members in labels.groups.items():
            if len(members) > 1:
                for m in members:
                    kinds.setdefault(m, set()).add(name)
    return {i: frozenset(k) for i, k in kinds.items()}


def semantic_kinds(adapter: ModelAdapter) -> Mapping[int, frozenset[str]] | None:
    """For a model whose classes are ImageNet-1k's (by name), each class index -> the PASCAL VOC
    and COCO classes (of several ImageNet members) that hold it
    (:mod:`dcsm.pipeline.adapters.groups`); None for any other label set."""
    if adapter.num_classes != 1000 or tuple(adapter.class_names) != imagenet_class_names():
        return None
    return _imagenet_kinds()


class LookAlikes:
    """Whether two classes of one image are look-alikes of one object (module docstring).

    Args:
        adapter: the model; its classes give the semantic signal where they are ImageNet-1k's.
        location_probs: ``(C, h, w)`` class probabilities at each location of the score map, for
            the spatial signal (None: the semantic signal alone).
        share: the runner-up share from which two classes are look-alikes.
    """

    def __init__(self, adapter: ModelAdapter, location_probs: torch.Tensor | None,
                 share: float = LOOKALIKE_SHARE) -> None:
        self.kinds = semantic_kinds(adapter)
        self.threshold = share
        self._first: torch.Tensor | None = None
        self._second: torch.Tensor | None = None
        if location_probs is not None and location_probs.shape[0] >= 2:
            probs = location_probs.detach().float().cpu().flatten(1)  # (C, hw)
            values, top = probs.topk(min(3, probs.shape[0]), dim=0)
            self._first, self._second = top[0], top[1].clone()
            if values.shape[0] == 3:  # a second place shared by several classes is no one's
                self._second[values[1] <= values[2]] = -1
            self._wins = torch.bincount(self._first, minlength=probs.shape[0])

    def same_kind(self, a: int, b: int) -> bool:
        """Whether a and b are ImageNet classes of one VOC/COCO class."""
        if self.kinds is None:
            return False
        return bool(self.kinds.get(a, frozenset()) & self.kinds.get(b, frozenset()))

    def share(self, a: int, b: int) -> float:
        """The runner-up share :math:`r(a, b)`; 0 without a score map, or where the two win
        fewer than :data:`LOOKALIKE_MIN_WINS` locations together."""
        if self._first is None or self._second is None or a == b:
            return 0.0
        wins = int(self._wins[a]) + int(self._wins[b])
        if wins < LOOKALIKE_MIN_WINS:
            return 0.0
        f, s = self._first, self._second
        both = int((((f == a) & (s == b)) | ((f == b) & (s == a))).sum())
        return both / wins

    def __call__(self, a: int, b: int) -> bool:
        """Whether a and b are look-alikes: of one VOC/COCO class, or sharing locations."""
        return a != b and (self.same_kind(a, b) or self.share(a, b) >= self.threshold)


def _first_lookalike(i: int, kept: Sequence[int], same: Callable[[int, int], bool]
                     ) -> int | None:
    """The first class of ``kept`` that ``i`` is a look-alike of, or None."""
    return next((j for j in kept if same(i, j)), None)


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
    merge_lookalikes: bool = False,
) -> Selection:
    """Choose candidates from per-scale probabilities ``probs`` of shape (scales, C).

    ``reference`` is the row used for reported scores (the scale closest to 1).
    ``location_probs`` (C, h, w), the class probabilities at each location of the reference
    scale's score map, is needed by the ``score_map`` rule, and by ``merge_lookalikes`` for its
    spatial signal (without it, the semantic one alone). ``merge_lookalikes``: skip the
    automatic candidates and top-up classes that are look-alikes of a class already taken,
    recording them in its :attr:`Candidate.merged` (module docstring).
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

    same = LookAlikes(adapter, location_probs) if merge_lookalikes else None
    merged: dict[int, list[int]] = {}

    def cand(i: int) -> Candidate:
        return Candidate(i, adapter.class_names[i], float(ref[i]),
                         tuple(adapter.class_names[m] for m in merged.get(i, ())))

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
        passing = [i for i in order if level[i] >= thr and (thr > 0 or level[i] > 0)]
        if same is None:
            chosen = passing if k is None else passing[:k]
        else:
            chosen = []
            for i in passing:
                if k is not None and len(chosen) >= k:
                    break
                twin = _first_lookalike(i, chosen, same)
                if twin is None:
                    chosen.append(i)
                else:
                    merged.setdefault(twin, []).append(i)
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
            if i in contrast:
                continue
            twin = None if same is None else _first_lookalike(i, contrast, same)
            if twin is None:
                contrast.append(i)
            else:
                merged.setdefault(twin, []).append(i)
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
    lists = [c for c in items if isinstance(c, Sequence) and not isinstance(c, str | bytes)]
    if items and len(lists) == len(items):
        if len(lists) != n:
            raise DcsmError(f"{len(lists)} class lists given for {n} images")
        lengths = {len(c) for c in lists}
        if len(lengths) != 1:
            raise DcsmError("every image of a batch needs the same number of classes, got "
                            + ", ".join(str(len(c)) for c in lists))
        return [list(c) for c in lists]
    if lists:
        raise DcsmError("classes mix names with lists: give one list for every image or a "
                        "list per image")
    # No list among the entries: one list of class keys (each checked where it is resolved).
    return [cast("list[str | int]", items)] * n


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
