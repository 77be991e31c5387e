r"""Quantus (the XAI evaluation toolkit, 0.6) as an outside judge of dcsm's maps.

Quantus evaluates an explanation method through a function it calls itself,
``explain_func(model, inputs, targets, **explain_func_kwargs)``, with ``inputs`` a batch of
preprocessed images ``(N, 3, H, W)`` (numpy), ``targets`` their classes ``(N,)`` and ``model`` the
``torch.nn.Module`` it was given, or, for the model parameter randomisation test (MPRT), a deep
copy of it whose layers it randomises one after the other. :func:`explain_func` is that function
for dcsm: it returns ``(N, 1, H, W)`` float32 attributions, each image's map of its target class
at the input's size.

* **The model**: :func:`quantus_model` turns a dcsm model (adapter, registry name) into the
  module Quantus calls, :class:`ClassScores`: ``(N, 3, H, W) -> (N, C)`` image-level scores (the
  adapter's pooled score map: logits for the ImageNet models, the groups' log probabilities for
  a label set such as ``labels="voc"``). :func:`explain_func` builds its explainer around the
  module it is handed, so an MPRT copy is explained with its randomised weights; explainers are
  kept for the last few modules (by identity, with the settings). A plain classifier module
  (``(N, C)`` logits) works too, described as for :func:`dcsm.pipeline.adapters.as_adapter`
  (``layers`` as names or dotted paths: a module object would name a layer of the original,
  not of Quantus's copy).
* **The method**: ``method="dcsm"`` (default) with dcsm's settings (``preset``, ``scales``,
  ``layers``, ``alpha``, ``subtract``, ``backprop``, ``upsample``, ``min_contrast``,
  ``max_side``, ``precision``, ``batch``...); dcsm's baselines ``"simonyan"``, ``"guided"`` and
  ``"gradcam"`` (``layers``, ``max_side``, ``precision``, ``batch``): each registered method
  with an explainer takes the settings of its :class:`dcsm.methods.registry.MethodSpec`, and
  ``layers``; or any peer of the benchmarks by its
  key in :data:`dcsm.bench.methods.METHODS` (``"pgc-gradcam"``, ``"captum-saliency"``,
  ``"torchcam-layercam"``...), run through the same wrapper as ``dcsm bench``. The peers'
  wrappers take 8-bit photos: the inputs are turned back into pixels by inverting the adapter's
  preprocessing and rounding (exact for inputs made from 8-bit photos, within half a grey level
  otherwise), and are explained at the input's size; dcsm and its baselines take the tensors
  as they are, at dcsm's working resolution (``max_side``), the maps returned at the input size.
* **The candidates**: dcsm contrasts the target with the other candidates, so its map depends on
  them. ``candidates`` in the keyword arguments gives them: None (default), each image's
  automatic candidates as dcsm chooses them (its preset's rule: forward passes only, no backward)
  with the target added; a list of class lists aligned with ``inputs`` (for direct calls:
  Quantus splits its data into batches of ``batch_size``, so for a metric use the next form); or
  a table made by :func:`candidate_table`, keyed by the image's pixels, so that it holds however
  Quantus batches the data (an image not in the table, such as a perturbed one, falls back to the
  default). Classes are indices or names; the target is put first and never repeated. Baselines
  and non-contrastive peers ignore the candidates; FinerCAM contrasts the target with them.

:func:`evaluate_photos` runs a chosen set of Quantus metrics on photos with class masks
(:class:`dcsm.datasets.realphotos.MaskedPhoto`), one item per (photo, class) pair, the segment
``s_batch`` being the class's mask:

* localisation: ``RelevanceMassAccuracy`` (the share of the map's mass inside the mask),
  ``RelevanceRankAccuracy`` (the share of the mask's |mask| highest-ranked pixels inside it),
  ``AUC`` (the ROC area of the map as a detector of the mask) and ``PointingGame`` (the maximum
  inside the mask);
* class sensitivity: ``RandomLogit`` (SSIM between the target's map and the map of a random other
  class, Sixt et al. 2020; lower is better);
* randomisation: ``MPRT`` (Spearman correlation between the map and the map after randomising the
  model's layers top-down, Adebayo et al. 2018; near zero is better). By default Quantus
  randomises every layer and the map is recomputed once, at the end (``skip_layers=True``,
  ``return_last_correlation=True``); ``metric_kwargs={"MPRT": {"skip_layers": False,
  "return_last_correlation": False, "return_average_correlation": True}}`` averages over the
  whole cascade instead, at one explanation per layer with parameters. The correlation is
  :func:`spearman` (Quantus's own fails on any batch that holds a constant map).

**Costs**, in explanations of one (photo, class) pair: the four localisation metrics share one
(computed once, passed to Quantus as ``a_batch``); ``RandomLogit`` adds one; ``MPRT`` adds two
(Quantus recomputes the original map as a check, then the randomised one) plus a deep copy of the
model per batch, or 1 + the number of layers with parameters with the whole cascade
(EfficientNet-Lite0: 100 or so). With ``candidates="auto"`` each explanation of dcsm also runs
the forward passes that choose the candidates. ``max_pairs`` caps the pairs; pairs of photos of
one size go to Quantus in batches of ``batch_size`` (dcsm explains a batch in one forward per
scale). Maps already at hand (``maps``: ``dcsm bench masks --quantus`` hands in the maps it has
just scored) spare the localisation metrics' explanation.

Void pixels (the outlines of VOC's masks) have their attributions set to zero for the
localisation metrics (``ignore_void``), so the mass there counts neither in nor out of the mask;
for rank accuracy and AUC they rank last. The metrics' own defaults are kept (each map divided by
its maximum, no absolute value).
"""

from __future__ import annotations

import copy
import hashlib
import math
import operator
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, SupportsIndex

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import nn

from dcsm import optional
from dcsm.datasets.realphotos import MaskedPhoto, name_classes
from dcsm.errors import DcsmError, first_line
from dcsm.methods.benchmarked import get_methods
from dcsm.methods.registry import MethodSpec, find
from dcsm.pipeline.adapters import as_adapter
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.adapters.groups import (
    IMAGENET_CLASSES,
    GroupedAdapter,
    GroupedScoreMap,
    grouped_adapter,
)
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import UnevenCandidates
from dcsm.pipeline.explainer import DistinctSaliency
from dcsm.pipeline.images import reference_scale
from dcsm.pipeline.presets import DEFAULT_PRESET, get_preset

__all__ = [
    "DEFAULT_METRICS",
    "LOCALISATION_METRICS",
    "ClassScores",
    "candidate_table",
    "check_metrics",
    "clear_cache",
    "evaluate_photos",
    "explain_func",
    "input_key",
    "markdown_table",
    "quantus_model",
    "require_quantus",
    "spearman",
]

#: Quantus's localisation metrics, scored on one map per (photo, class) pair and its mask.
LOCALISATION_METRICS: tuple[str, ...] = (
    "RelevanceMassAccuracy", "RelevanceRankAccuracy", "AUC", "PointingGame")
#: What :func:`evaluate_photos` runs by default.
DEFAULT_METRICS: tuple[str, ...] = (*LOCALISATION_METRICS, "RandomLogit", "MPRT")
_METRICS = (*DEFAULT_METRICS, "ModelParameterRandomisation")

_MODULE_OPTIONS = ("class_names", "preprocess", "multilabel", "input_size", "layouts")
_CACHE_SIZE = 6


def require_quantus() -> ModuleType:
    """The ``quantus`` module; DcsmError naming the extra to install when it is missing."""
    quantus = optional.find("quantus")
    if quantus is None:
        raise DcsmError("the Quantus integration needs the package 'quantus' (0.6): "
                        f"{optional.install_hint('quantus')}")
    return quantus


# --------------------------------------------------------------------------- the model
def _rebind(adapter: ModelAdapter, net: nn.Module) -> ModelAdapter:
    """A shallow copy of ``adapter`` whose model is ``net`` (a grouped adapter's base too)."""
    out = copy.copy(adapter)
    out.model = net
    if isinstance(out, GroupedAdapter) and isinstance(net, GroupedScoreMap):
        out.base = copy.copy(out.base)
        out.base.model = net.net
    return out


class ClassScores(nn.Module):
    """A dcsm model as Quantus calls it: ``(N, 3, H, W)`` preprocessed images to ``(N, C)``
    image-level class scores, the adapter's pooling of its score map (logits for an ImageNet
    model; for a label set, the groups' log probabilities).

    The adapter's model is the submodule ``net``, so Quantus's deep copies and randomisations
    reach it; :attr:`adapter` is the adapter bound to this module's ``net``. The module is in
    evaluation mode.
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        super().__init__()
        self.net = adapter.model
        self._adapter = adapter
        self.eval()

    @property
    def adapter(self) -> ModelAdapter:
        """The adapter, its model this module's ``net`` (rebound after a copy if needed)."""
        if self._adapter.model is not self.net:
            self._adapter = _rebind(self._adapter, self.net)
        return self._adapter

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` preprocessed images -> ``(N, C)`` class scores."""
        score_map = self.net(x)
        if score_map.ndim == 2:  # a classifier module's logits: a 1 x 1 score map
            score_map = score_map[:, :, None, None]
        return self.adapter.pool(score_map)


def quantus_model(model: ModelAdapter | nn.Module | str, **options: Any) -> ClassScores:
    """The module to hand Quantus for a dcsm model: an adapter, a registry name (with
    ``labels="voc"`` or ``"coco"`` for a data set's classes) or a classifier module described by
    ``options`` as for :func:`dcsm.pipeline.adapters.as_adapter`. A :class:`ClassScores` is
    returned as is.
    """
    if isinstance(model, ClassScores):
        if options:
            raise DcsmError(f"option(s) {', '.join(sorted(options))} given for a model that is "
                            "already wrapped for Quantus")
        return model
    return ClassScores(as_adapter(model, **options))


# --------------------------------------------------------------------------- the cache
_CACHE: OrderedDict[tuple[int, str], tuple[object, object]] = OrderedDict()


def clear_cache() -> None:
    """Forget the explainers built for the modules Quantus handed in (and the modules)."""
    _CACHE.clear()


def _cached(owner: object, key: str, build: Callable[[], Any]) -> Any:
    """``build()`` once per (owner, key) among the last few; the owner is kept alive while its
    entry is, so that its id is not reused by another object."""
    slot = (id(owner), key)
    hit = _CACHE.get(slot)
    if hit is not None and hit[0] is owner:
        _CACHE.move_to_end(slot)
        return hit[1]
    value = build()
    _CACHE[slot] = (owner, value)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return value


def _settings_key(method: str, settings: Mapping[str, Any]) -> str:
    return method + repr(sorted((k, repr(v)) for k, v in settings.items()))


def _adapter_of(model: object, options: Mapping[str, Any]) -> ModelAdapter:
    """The adapter for the module Quantus hands in (built once per module)."""
    described = sorted(k for k in options if k != "layers")  # layers: the method's too
    if isinstance(model, ClassScores | ModelAdapter):
        if described:
            raise DcsmError(f"{', '.join(described)} describe a plain module; the model given "
                            "is a dcsm model")
        return model.adapter if isinstance(model, ClassScores) else model
    if isinstance(model, nn.Module):
        return _cached(model, "adapter" + _settings_key("", options),
                       lambda: as_adapter(model, **options))
    raise DcsmError(f"explain_func needs a torch.nn.Module, got {type(model).__name__}")


# --------------------------------------------------------------------------- candidates
def input_key(image: np.ndarray | torch.Tensor) -> str:
    """The key of one preprocessed image ``(3, H, W)`` in a :func:`candidate_table`: a digest of
    its float32 values and shape."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    values = np.ascontiguousarray(image, dtype=np.float32)
    digest = hashlib.sha1(values.tobytes(), usedforsecurity=False).hexdigest()
    return f"{digest}:{'x'.join(str(s) for s in values.shape)}"


def candidate_table(inputs: np.ndarray | torch.Tensor,
                    candidates: Sequence[Sequence[int | str]]) -> dict[str, list[int | str]]:
    """The ``candidates`` keyword for :func:`explain_func` under a Quantus metric: each image of
    ``inputs`` ``(N, 3, H, W)`` (by :func:`input_key`) to its class list. An image given twice
    must have the same list both times."""
    if len(inputs) != len(candidates):
        raise DcsmError(f"{len(candidates)} candidate lists given for {len(inputs)} images")
    table: dict[str, list[int | str]] = {}
    for image, classes in zip(inputs, candidates, strict=True):
        key = input_key(image)
        listed = list(classes)
        if key in table and table[key] != listed:
            raise DcsmError("one image is given two different candidate lists")
        table[key] = listed
    return table


class _CandidateProbe(DistinctSaliency):
    """The method's own choice of candidates, without its maps: :meth:`explain` runs the forward
    passes and the selection of :class:`DistinctSaliency` and skips every backward."""

    def _layer_maps(self, fp: Any, targets: torch.Tensor,
                    size: tuple[int, int]) -> list[torch.Tensor]:
        zeros = torch.zeros((targets.shape[0], targets.shape[1], *size), device=fp.input.device)
        return [zeros] * len(self.layers)

    def _warn_empty(self, maps: torch.Tensor, selections: Any) -> None:
        return None


def _probe(adapter: ModelAdapter, settings: Mapping[str, Any]) -> _CandidateProbe:
    """A probe choosing candidates as dcsm with ``settings`` would."""
    keep = {k: v for k, v in settings.items() if k in ("preset", "scales", "layers", "max_side")}
    preset = get_preset(keep.get("preset", DEFAULT_PRESET))
    scales = tuple(keep.pop("scales", None) or preset.scales)
    if preset.candidate_rule != "any_scale":  # only the scale closest to 1 chooses
        scales = (scales[reference_scale(scales)],)
    return _CandidateProbe(adapter, scales=scales, backprop="plain", **keep)


def _automatic(adapter: ModelAdapter, x: torch.Tensor,
               settings: Mapping[str, Any]) -> list[list[int]]:
    """Each image's automatic candidates under ``settings`` (dcsm's default ones if none)."""
    probe = _cached(adapter.model, "probe" + _settings_key("", settings),
                    lambda: _probe(adapter, settings))
    try:
        chosen = probe.explain(x, classes="auto").classes
        return [[int(c) for c in row] for row in chosen.tolist()]
    except UnevenCandidates:  # images that get different numbers: one at a time
        return [[int(c) for c in probe.explain(x[i:i + 1], classes="auto").classes[0].tolist()]
                for i in range(x.shape[0])]


def _candidate_lists(adapter: ModelAdapter, spec: object, inputs: np.ndarray, x: torch.Tensor,
                     targets: Sequence[int], settings: Mapping[str, Any]) -> list[list[int]]:
    """Per image, its target first, then its other candidates (indices, each once)."""
    n = len(targets)
    given: list[Sequence[int | str] | None]
    if isinstance(spec, np.ndarray | torch.Tensor):  # an (N, K) array of indices
        spec = spec.tolist()
    if spec is None or (isinstance(spec, str) and spec == "auto"):
        given = [None] * n
    elif isinstance(spec, Mapping):
        given = [spec.get(input_key(inputs[i])) for i in range(n)]
    elif isinstance(spec, Sequence) and not isinstance(spec, str):
        if len(spec) != n:
            raise DcsmError(f"{len(spec)} candidate lists given for {n} images (under a Quantus "
                            "metric, give candidate_table(x_batch, lists))")
        given = list(spec)
    else:
        raise DcsmError("candidates must be None, a list of class lists per image or a "
                        f"candidate_table, got {type(spec).__name__}")
    missing = [i for i, g in enumerate(given) if g is None]
    if missing:
        auto = _automatic(adapter, x[missing], settings)
        for i, chosen in zip(missing, auto, strict=True):
            given[i] = chosen
    out = []
    for target, classes in zip(targets, given, strict=True):
        assert classes is not None
        if isinstance(classes, np.ndarray | torch.Tensor):
            classes = classes.tolist()
        if isinstance(classes, str) or not isinstance(classes, Sequence):
            raise DcsmError(f"a candidate list must be a list of classes, got {classes!r}")
        indices = [adapter.class_index(_class_key(c)) for c in classes]
        out.append([target, *dict.fromkeys(i for i in indices if i != target)])
    return out


def _class_key(c: object) -> int | str:
    """A class as a name or an index (numpy's integers taken as ints)."""
    if isinstance(c, str):
        return c
    if isinstance(c, SupportsIndex):  # int, numpy's integers, an integer tensor of one element
        try:
            return operator.index(c)
        except TypeError:
            pass
    raise DcsmError(f"a class is a name or an integer index, got {c!r}")


# --------------------------------------------------------------------------- explain_func
def _as_batch(inputs: object, targets: object) -> tuple[np.ndarray, list[int]]:
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    x = np.asarray(inputs, dtype=np.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise DcsmError(f"explain_func needs images (N, 3, H, W), got {tuple(x.shape)}")
    if isinstance(targets, torch.Tensor):
        targets = targets.detach().cpu().numpy()
    y = np.asarray(targets).reshape(-1)
    if y.size == 1 and x.shape[0] > 1:
        y = np.repeat(y, x.shape[0])
    if y.size != x.shape[0]:
        raise DcsmError(f"{y.size} targets given for {x.shape[0]} images")
    if not (np.issubdtype(y.dtype, np.integer) or np.all(np.mod(y, 1) == 0)):
        raise DcsmError("targets must be class indices")
    return x, [int(t) for t in y]


def _pixels(adapter: ModelAdapter, x: np.ndarray) -> np.ndarray:
    """A preprocessed image ``(3, H, W)`` back to the (H, W, 3) uint8 RGB it came from."""
    pre = adapter.preprocess
    std = np.asarray(pre.std, dtype=np.float64)[:, None, None]
    mean = np.asarray(pre.mean, dtype=np.float64)[:, None, None]
    rgb = x.astype(np.float64) * std + mean
    if pre.channel_order == "BGR":
        rgb = rgb[::-1]
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0).copy()


def _explainer(adapter: ModelAdapter, owner: object, spec: MethodSpec,
               settings: Mapping[str, Any]) -> Explainer:
    return _cached(owner, _settings_key(spec.name, settings),
                   lambda: spec.build(adapter, settings))


def _split(method: str, kwargs: Mapping[str, Any]
           ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the method's settings, the plain module's options); DcsmError for anything else.

    A method with an explainer takes its registered settings (:mod:`dcsm.methods.registry`)
    and ``layers`` (a plain module's too); a benchmark method a plain module's options only."""
    spec = find(method, explainers=True)
    allowed = () if spec is None else spec.settings | {"layers"}
    settings = {k: v for k, v in kwargs.items() if k in allowed}
    options = {k: v for k, v in kwargs.items() if k in _MODULE_OPTIONS}
    unknown = sorted(set(kwargs) - set(settings) - set(options))
    if unknown:
        raise DcsmError(f"unknown explain_func option(s) for method {method}: "
                        f"{', '.join(unknown)}")
    if "layers" in settings:
        options["layers"] = settings["layers"]
    return settings, options


def explain_func(model: nn.Module, inputs: np.ndarray | torch.Tensor,
                 targets: np.ndarray | Sequence[int] | int, method: str = "dcsm",
                 candidates: object = None, device: object = None,
                 **kwargs: Any) -> np.ndarray:
    """Quantus's ``explain_func`` for dcsm, its baselines and the benchmarks' peers.

    Args:
        model: the module Quantus hands in: a :class:`ClassScores` (:func:`quantus_model`), a
            copy of one, or a classifier module returning ``(N, C)`` logits.
        inputs: preprocessed images ``(N, 3, H, W)`` (or one ``(3, H, W)``).
        targets: the class of each image ``(N,)`` (one class for all).
        method: ``"dcsm"``, ``"simonyan"``, ``"guided"``, ``"gradcam"`` (a registered method
            with an explainer, :mod:`dcsm.methods.registry`) or a key of
            :data:`dcsm.bench.methods.METHODS` (module docstring).
        candidates: the classes each target is contrasted with: None (each image's automatic
            candidates plus the target), a list of class lists aligned with ``inputs``, or a
            :func:`candidate_table`.
        device: Quantus's device argument; the maps are computed where the model is.
        kwargs: the method's settings (dcsm: ``preset``, ``scales``, ``layers``, ``alpha``,
            ``subtract``, ``backprop``, ``upsample``, ``min_contrast``, ``max_side``,
            ``precision``, ``batch``; the baselines: ``layers``, ``max_side``, ``precision``,
            ``batch``)
            and, for a plain module, its description (``class_names``, ``preprocess``,
            ``multilabel``, ``input_size``, ``layouts``).

    Returns:
        ``(N, 1, H, W)`` float32 attributions: each image's map of its target, at its size.
    """
    del device
    x_np, y = _as_batch(inputs, targets)
    spec = find(method, explainers=True)
    if spec is not None:
        settings, options = _split(method, kwargs)
        adapter = _adapter_of(model, options)
        x = torch.from_numpy(x_np)
        explainer = _explainer(adapter, model, spec, settings)
        if not spec.contrastive:  # no contrast: each target alone, the whole batch at once
            maps = explainer.explain(x, classes=[[t] for t in y]).maps[:, 0]
            return maps.float().cpu().numpy()[:, None].astype(np.float32)
        lists = _candidate_lists(adapter, candidates, x_np, x, y, settings)
        out = np.zeros((len(y), *x_np.shape[-2:]), dtype=np.float32)
        by_size: dict[int, list[int]] = {}
        for i, classes in enumerate(lists):
            by_size.setdefault(len(classes), []).append(i)
        for rows in by_size.values():  # images with as many candidates: one batch
            result = explainer.explain(x[rows], classes=[lists[i] for i in rows])
            if result.classes[:, 0].tolist() != [y[i] for i in rows]:
                raise DcsmError("dcsm did not return the targets' maps first")  # not expected
            out[rows] = result.maps[:, 0].float().cpu().numpy()
        return out[:, None]
    return _peer_explain(model, x_np, y, method, candidates, kwargs)


def _peer_explain(model: nn.Module, x_np: np.ndarray, y: list[int], method: str,
                  candidates: object, kwargs: Mapping[str, Any]) -> np.ndarray:
    """A benchmark method (:mod:`dcsm.methods.benchmarked`) through its own wrapper, image by
    image."""
    (spec,) = get_methods([method])
    _, options = _split(method, kwargs)
    adapter = _adapter_of(model, options)
    run = _cached(model, "peer:" + method, lambda: spec.build(adapter, "oracle"))
    if spec.contrastive:
        lists = _candidate_lists(adapter, candidates, x_np, torch.from_numpy(x_np), y, {})
    else:
        lists = [[t] for t in y]
    out = np.zeros((len(y), *x_np.shape[-2:]), dtype=np.float32)
    for i, classes in enumerate(lists):
        maps = run(_pixels(adapter, x_np[i]), classes)
        if classes[0] in maps:  # a class a method gives no map stays 0
            out[i] = np.asarray(maps[classes[0]], dtype=np.float32)
    return out[:, None]


# --------------------------------------------------------------------------- evaluation
def check_metrics(metrics: Iterable[str]) -> list[str]:
    """The metric names, each once, in their order; DcsmError for a name :func:`evaluate_photos`
    does not run (it does not need Quantus)."""
    names = list(dict.fromkeys(metrics))
    if not names:
        raise DcsmError(f"no Quantus metric named; known: {', '.join(DEFAULT_METRICS)}")
    for name in names:
        if name not in _METRICS:
            raise DcsmError(f"unknown metric '{name}'; known: {', '.join(DEFAULT_METRICS)}")
    return names


def _metric_class(quantus: ModuleType, name: str) -> type:
    check_metrics([name])
    if name in ("MPRT", "ModelParameterRandomisation"):  # renamed in Quantus 0.5
        cls = getattr(quantus, "MPRT", None) or quantus.ModelParameterRandomisation
    else:
        cls = getattr(quantus, name)
    return cls


def spearman(a: np.ndarray, b: np.ndarray, batched: bool = False, **kwargs: Any
             ) -> float | np.ndarray:
    """Spearman's rank correlation as Quantus's MPRT calls it (its ``similarity_func``): of two
    maps, or row by row of two ``(B, F)`` batches. Quantus's own computes the same values but
    fails on a batch holding a constant map (an all-zero map among others: SciPy then returns
    one NaN for the whole batch, a plain float, which Quantus cannot index); here that map's
    correlation alone is NaN."""
    del kwargs
    if not batched:
        return float(spearmanr(np.ravel(a), np.ravel(b))[0])
    if a.ndim != 2 or a.shape != b.shape:
        raise DcsmError(f"batched maps must be two (B, F) arrays, got {a.shape} and {b.shape}")
    return np.asarray([spearmanr(x, y)[0] for x, y in zip(a, b, strict=True)],
                      dtype=np.float64)


def _metric_settings(name: str, num_classes: int, seed: int,
                     extra: Mapping[str, Any] | None) -> dict[str, Any]:
    base: dict[str, Any] = {"disable_warnings": True, "display_progressbar": False}
    if name == "RandomLogit":
        base.update(num_classes=num_classes, seed=seed)
    elif name in ("MPRT", "ModelParameterRandomisation"):
        base.update(layer_order="top_down", seed=seed, skip_layers=True,
                    return_last_correlation=True, similarity_func=spearman)
    base.update(extra or {})
    return base


def _scores(value: object, n: int, name: str) -> list[float]:
    """A metric's per-item scores as n floats (NaN for an undefined score)."""
    if isinstance(value, Mapping):
        raise DcsmError(f"{name} returned per-layer scores; set return_last_correlation or "
                        "return_average_correlation in its metric_kwargs")
    flat = np.asarray(value, dtype=np.float64).reshape(-1)
    if flat.size != n:
        raise DcsmError(f"{name} returned {flat.size} scores for {n} items")
    return [float(v) for v in flat]


def _photo_items(photos: Iterable[Any]) -> Iterable[tuple[Any, Sequence[int | str] | None]]:
    for item in photos:
        if isinstance(item, MaskedPhoto):
            yield item, None
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], MaskedPhoto):
            yield item[0], item[1]
        else:
            raise DcsmError(f"expected MaskedPhoto or (MaskedPhoto, classes), got "
                            f"{type(item).__name__}")


def evaluate_photos(
    model: ModelAdapter | str | Callable[[str], ModelAdapter],
    photos: Iterable[Any],
    method: str = "dcsm",
    metrics: Sequence[str] = DEFAULT_METRICS,
    settings: Mapping[str, Any] | None = None,
    candidates: str = "present",
    batch_size: int = 4,
    max_pairs: int | None = None,
    metric_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ignore_void: bool = True,
    seed: int = 42,
    progress: Callable[[str], None] | None = None,
    maps: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Quantus's metrics for one method on photos with class masks, one item per (photo, class).

    Args:
        model: an ImageNet adapter or registry name (grouped by each photo's label set,
            ``voc`` or ``coco``; an ``imagenet`` photo names ImageNet classes), an adapter whose
            classes are the photos', or a function from a label set to the adapter.
        photos: :class:`dcsm.datasets.realphotos.MaskedPhoto` objects (every class of the photo
            the model can name is explained) or ``(photo, classes)`` pairs (the classes to
            explain, as names or the model's indices).
        method: as for :func:`explain_func`.
        metrics: Quantus metric names (:data:`DEFAULT_METRICS`).
        settings: the method's settings (as :func:`explain_func`'s keyword arguments).
        candidates: ``"present"`` (each target contrasted with every other class of its photo
            the model can name) or ``"auto"`` (dcsm's automatic candidates plus the target).
        batch_size: pairs per Quantus call (photos of one size go together).
        max_pairs: evaluate at most this many pairs (in the photos' order).
        metric_kwargs: per metric name, arguments for its constructor over this function's
            defaults (``RandomLogit``: the model's class count and ``seed``; ``MPRT``:
            ``skip_layers`` and ``return_last_correlation``, top-down, ``seed``,
            :func:`spearman`).
        ignore_void: set the attributions of void pixels to 0 for the localisation metrics.
        seed: the seed of RandomLogit's classes and MPRT's randomisation.
        progress: called with a line per batch.
        maps: the method's maps where they are already at hand (the benchmark's): photo name
            -> class name -> ``(H, W)`` map at the photo's size. The pairs of a photo listed
            here are not explained for the localisation metrics, and their maps are Quantus's
            reference maps for ``RandomLogit`` and ``MPRT`` (which still call the method for
            the other class and the randomised model); a class missing from a listed photo's
            maps is an all-zero map (the benchmark's rule for a class a method gives no map).

    Returns:
        ``{"method", "settings", "candidates", "metrics": {name: {"mean", "count",
        "undefined"}}, "items": [{"photo", "class", "index", "pixels", name: score...}],
        "seconds": {"explain": s, name: s...}}``; ``mean`` is over the items whose score is a
        number (``count`` of them), ``undefined`` the rest (NaN scores, or Quantus refused the
        item's map: ``items[i]["errors"]``).
    """
    quantus = require_quantus()
    classes_of = {name: _metric_class(quantus, name) for name in metrics}
    if candidates not in ("present", "auto"):
        raise DcsmError(f"candidates must be 'present' or 'auto', got '{candidates}'")
    if batch_size < 1:
        raise DcsmError(f"batch_size must be at least 1, got {batch_size}")
    if max_pairs is not None and max_pairs < 1:
        raise DcsmError(f"max_pairs must be at least 1, got {max_pairs}")
    if find(method, explainers=True) is None:
        get_methods([method])  # an unknown or unavailable method fails here
    settings = dict(settings or {})
    _split(method, settings)  # unknown settings fail before any work
    unknown = sorted(set(metric_kwargs or {}) - set(metrics))
    if unknown:
        raise DcsmError(f"metric_kwargs for metric(s) not run: {', '.join(unknown)}")

    models = _Models(model)
    seconds: dict[str, float] = {"explain": 0.0, **{name: 0.0 for name in metrics}}
    scored: list[dict[str, Any]] = []
    done = [0, 0]  # batches, pairs

    def run(pairs: list[_Pair]) -> None:
        wrapped, adapter = models.get(pairs[0].photo.label_set)
        inputs: dict[int, np.ndarray] = {}
        for pair in pairs:  # one preprocessing per photo
            if id(pair.photo) not in inputs:
                inputs[id(pair.photo)] = adapter.preprocess(pair.photo.image)[0].numpy()
        x = np.stack([inputs[id(p.photo)] for p in pairs])
        y = np.asarray([p.index for p in pairs], dtype=np.int64)
        s = np.stack([p.photo.mask(p.name)[None] for p in pairs]).astype(np.uint8)
        kw: dict[str, Any] = {"method": method, **settings}
        if candidates == "present":
            kw["candidates"] = candidate_table(x, [p.present for p in pairs])
        a = np.zeros((len(pairs), 1, *x.shape[-2:]), dtype=np.float32)
        given = [None if maps is None else maps.get(p.photo.name) for p in pairs]
        todo = [j for j, g in enumerate(given) if g is None]
        if todo:
            start = time.perf_counter()
            a[todo] = explain_func(wrapped, x[todo], y[todo], **kw)
            seconds["explain"] += time.perf_counter() - start
        for j, g in enumerate(given):
            if g is not None and pairs[j].name in g:
                m = np.asarray(g[pairs[j].name], dtype=np.float32)
                if m.shape != x.shape[-2:]:
                    raise DcsmError(f"the map given for {pairs[j].name} of photo "
                                    f"{pairs[j].photo.name} is {m.shape}, the photo "
                                    f"{x.shape[-2:]}")
                a[j, 0] = m
        a_loc = a.copy()
        if ignore_void:
            for j, pair in enumerate(pairs):
                a_loc[j, 0][pair.photo.void] = 0.0
        items = [{"order": p.order, "photo": p.photo.name, "class": p.name, "index": p.index,
                  "pixels": int(s[j].sum()), "errors": {}} for j, p in enumerate(pairs)]
        for name, cls in classes_of.items():
            start = time.perf_counter()
            extra = _metric_settings(name, adapter.num_classes, seed,
                                     (metric_kwargs or {}).get(name))
            scored_maps = a_loc if name in LOCALISATION_METRICS else a
            values, errors = _run_metric(cls, extra, wrapped, x, y, scored_maps, s, kw, name)
            seconds[name] += time.perf_counter() - start
            for item, value, error in zip(items, values, errors, strict=True):
                item[name] = value
                if error:
                    item["errors"][name] = error
        scored.extend(items)
        done[0] += 1
        done[1] += len(pairs)
        if progress is not None:
            progress(f"batch {done[0]}: {len(pairs)} pair(s) of {len(inputs)} photo(s), "
                     f"{done[1]} pairs in all")

    # Pairs of photos of one size wait in a bucket until it holds a batch; a bucket goes out
    # smaller when four batches' worth of pairs wait in all, so memory stays bounded.
    buckets: OrderedDict[tuple[str, tuple[int, ...]], list[_Pair]] = OrderedDict()
    for pair in _pairs(models, photos, max_pairs):
        key = (pair.photo.label_set, pair.photo.image.shape)
        buckets.setdefault(key, []).append(pair)
        if len(buckets[key]) >= batch_size:
            run(buckets.pop(key))
        elif sum(len(b) for b in buckets.values()) >= 4 * batch_size:
            run(buckets.popitem(last=False)[1])
    for waiting in buckets.values():
        run(waiting)
    if not scored:
        raise DcsmError("no (photo, class) pair to evaluate")
    scored.sort(key=lambda item: item.pop("order"))
    for item in scored:
        if not item["errors"]:
            del item["errors"]
    summary = {}
    for name in metrics:
        values = [item[name] for item in scored]
        finite = [v for v in values if math.isfinite(v)]
        summary[name] = {"mean": float(np.mean(finite)) if finite else float("nan"),
                         "count": len(finite), "undefined": len(values) - len(finite)}
    plain = (str, int, float, bool, type(None))
    return {"method": method,
            "settings": {k: v if isinstance(v, plain) else repr(v) for k, v in settings.items()},
            "candidates": candidates, "metrics": summary, "items": scored, "seconds": seconds}


@dataclass
class _Pair:
    """One item: a photo, the class explained (its name and model index), the photo's classes
    the model can name, and the pair's place in the input."""

    photo: Any
    name: str
    index: int
    present: list[int]
    order: int


class _Models:
    """The adapter and wrapped model of each label set, built when first needed."""

    def __init__(self, model: ModelAdapter | str | Callable[[str], ModelAdapter]) -> None:
        self.model = model
        self.base: ModelAdapter | None = None
        self.by_set: dict[str, tuple[ClassScores, ModelAdapter]] = {}

    def _adapter(self, label_set: str) -> ModelAdapter:
        model = self.model
        if callable(model) and not isinstance(model, ModelAdapter | str | nn.Module):
            return model(label_set)
        if self.base is None:
            self.base = as_adapter(model)
        if self.base.num_classes == IMAGENET_CLASSES or label_set == "imagenet":
            return grouped_adapter(self.base, label_set)
        return self.base  # a model whose classes are the photos' own

    def get(self, label_set: str) -> tuple[ClassScores, ModelAdapter]:
        """(the module Quantus calls, its adapter) for photos of ``label_set``."""
        if label_set not in self.by_set:
            adapter = self._adapter(label_set)
            self.by_set[label_set] = (quantus_model(adapter), adapter)
        return self.by_set[label_set]


def _pairs(models: _Models, photos: Iterable[Any], max_pairs: int | None
           ) -> Iterable[_Pair]:
    """The (photo, class) pairs to evaluate, in the photos' order, at most ``max_pairs``."""
    count = 0
    for photo, wanted in _photo_items(photos):
        if max_pairs is not None and count >= max_pairs:
            return
        adapter = models.get(photo.label_set)[1]
        named = name_classes(adapter, photo)
        present = set(photo.classes)
        chosen: list[tuple[str, int]] = []
        for c in (named.named if wanted is None else wanted):
            index = adapter.class_index(c)
            name = adapter.class_names[index]
            if name not in present:
                raise DcsmError(f"class '{name}' is not in photo {photo.name} (its classes: "
                                f"{', '.join(photo.classes)})")
            chosen.append((name, index))
        for name, index in chosen:
            if max_pairs is not None and count >= max_pairs:
                return
            yield _Pair(photo, name, index, list(named.indices), count)
            count += 1


def _device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _run_metric(cls: type, settings: Mapping[str, Any], model: nn.Module, x: np.ndarray,
                y: np.ndarray, a: np.ndarray, s: np.ndarray, kw: Mapping[str, Any],
                name: str) -> tuple[list[float], list[str]]:
    """One metric on a batch: its per-item scores, and per item the reason where Quantus
    refused the batch (its assertions on the maps: all zero, uniform...; the items are then
    undefined, NaN)."""
    metric = cls(**settings)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = metric(model=model, x_batch=x, y_batch=y, a_batch=a, s_batch=s,
                           channel_first=True, explain_func=explain_func,
                           explain_func_kwargs=dict(kw), softmax=False, batch_size=len(x),
                           device=str(_device(model)))
    except AssertionError as exc:
        reason = first_line(exc) or "refused by Quantus"
        return [float("nan")] * len(x), [reason] * len(x)
    return _scores(value, len(x), name), [""] * len(x)


def markdown_table(reports: Mapping[str, Mapping[str, Any]],
                   metrics: Sequence[str] | None = None) -> str:
    """One row per metric, one column per method (``reports``: label -> the report of
    :func:`evaluate_photos`); each cell the mean, with the count when some items are
    undefined."""
    labels = list(reports)
    if metrics is None:
        metrics = list(dict.fromkeys(m for r in reports.values() for m in r["metrics"]))
    lines = ["| metric | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name in metrics:
        cells = []
        for label in labels:
            entry = reports[label]["metrics"].get(name)
            if entry is None:
                cells.append("")
                continue
            cell = f"{entry['mean']:.3f}"
            if entry["undefined"]:
                cell += f" (n={entry['count']})"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
