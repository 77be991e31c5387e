"""The registry of explanation methods: one table of every method dcsm knows.

Each method is a :class:`MethodSpec`: its name, what it is, how to build it and what callers
may ask about it (whether it contrasts classes, how many layers it reads, whether it is dcsm's
own or a peer's, which optional package it needs). The API (:func:`dcsm.make_explainer`), the
command line, the viewer, the evaluation, the benchmarks and the Quantus integration look
methods up here instead of comparing names.

A new method is one new module of :mod:`dcsm.methods` that calls :func:`register` when it is
imported (and one line importing it in ``dcsm/methods/__init__.py``)::

    register(MethodSpec(
        name="mine", description="my method: ...", label="My method",
        explainer=build_mine, settings=frozenset({"layers", "max_side", "precision",
                                                  "max_pixels"}),
        layers="several"))

The built-in methods, in this order: ``dcsm``, ``simonyan``, ``guided``, ``gradcam`` (the
explainers of :func:`dcsm.make_explainer`), then the peers the benchmarks compare, which run
through their own libraries (Captum, pytorch-grad-cam, TorchCAM) and give maps only.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from dcsm.errors import DcsmError
from dcsm.methods.maps import Candidates, MapFunction
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.base import Explainer

#: The method :func:`dcsm.make_explainer`, the command line and the viewer use by default.
DEFAULT_METHOD = "dcsm"
#: Builds a method's map function for the benchmarks from a model and a candidate mode.
MapBuilder = Callable[[ModelAdapter, Candidates], MapFunction]
#: How many layers a method reads: none (input gradients), one (Grad-CAM) or several (dcsm).
Layers = Literal["none", "one", "several"]

#: Settings whose default, None, means "not given": given to a method that does not take them,
#: they are an error (the settings every caller passes, such as ``preset`` or ``backprop``, are
#: left out for a method that does not take them). Each with how the error names it.
_NOT_GIVEN_SETTINGS: dict[str, str] = {
    "min_contrast": "--min-contrast applies",
    "merge_lookalikes": "--merge-lookalikes/--no-merge-lookalikes apply",
    "reduce": "reduce applies",
    "propagate": "propagate applies",
    "flip": "flip applies",
    "gamma": "gamma applies",
    "gate": "gate applies",
}


@dataclass(frozen=True)
class MethodSpec:
    """One explanation method.

    Attributes:
        name: its name (``--method``, ``dcsm.explain(method=...)``, benchmark keys).
        description: one line: what it computes.
        label: its name in tables and figures.
        explainer: builds its :class:`~dcsm.pipeline.base.Explainer` from a model, its
            ``settings`` and a plain module's options (None for a peer that gives maps only).
        maps: builds its map function for the benchmarks (:mod:`dcsm.methods.maps`; None where
            the benchmarks run it otherwise, as dcsm's presets in
            :mod:`dcsm.methods.benchmarked`).
        settings: the settings ``explainer`` takes (:func:`dcsm.make_explainer`'s keyword
            arguments; ``batch`` too).
        requires: the optional module that must be importable ("" for none), and
            ``requires_name``: a name that module must have ("" for none).
        source: the library that computes it: ``dcsm`` for dcsm's own, else the peer's.
        contrastive: whether its maps depend on the other classes (the class contrast).
        layers: how many layers it reads (``none``, ``one``, ``several``).
        per_layer: whether it gives each layer's maps (``explain(per_layer=True)``).
        segmenter: the segmenter its maps go to in the benchmarks (``grabcut`` for input
            gradients, as Simonyan et al. did; ``crf`` for the others).
    """

    name: str
    description: str
    label: str
    explainer: Callable[..., Explainer] | None = None
    maps: MapBuilder | None = None
    settings: frozenset[str] = field(default_factory=frozenset)
    requires: str = ""
    requires_name: str = ""
    source: str = "dcsm"
    contrastive: bool = False
    layers: Layers = "none"
    per_layer: bool = False
    segmenter: str = "crf"

    @property
    def own(self) -> bool:
        """Whether dcsm computes it (else a peer library does)."""
        return self.source == "dcsm"

    @property
    def takes_preset(self) -> bool:
        """Whether it takes a preset (:mod:`dcsm.pipeline.presets`)."""
        return "preset" in self.settings

    def available(self) -> bool:
        """Whether the package it needs is installed (and has ``requires_name``, if given)."""
        if not self.requires:
            return True
        if importlib.util.find_spec(self.requires) is None:
            return False
        if self.requires_name:
            return hasattr(importlib.import_module(self.requires), self.requires_name)
        return True

    def build(self, model: ModelAdapter | nn.Module | str,
              settings: Mapping[str, object] | None = None,
              model_options: Mapping[str, object] | None = None) -> Explainer:
        """Its explainer.

        ``settings`` it does not take are left out, except those that are None unless given
        (``min_contrast``, ``merge_lookalikes``, ``reduce``, ``propagate``, ``flip``, ``gamma``,
        ``gate``),
        which are an error; DcsmError for a method with no explainer.
        """
        if self.explainer is None:
            raise DcsmError(f"method {self.name} gives maps only, in the benchmarks (dcsm "
                            f"bench); explainers: {', '.join(names(explainers=True))}")
        settings = dict(settings or {})
        for key, says in _NOT_GIVEN_SETTINGS.items():
            if settings.get(key) is not None and key not in self.settings:
                takers = [s.name for s in _REGISTRY.values() if key in s.settings]
                raise DcsmError(f"{says} to the {', '.join(takers)} method only, not "
                                f"{self.name}")
        taken = {k: v for k, v in settings.items() if k in self.settings}
        return self.explainer(model, **taken, **dict(model_options or {}))


_REGISTRY: dict[str, MethodSpec] = {}


def register(spec: MethodSpec, replace: bool = False) -> MethodSpec:
    """Add ``spec`` to the registry (after the methods registered before it).

    DcsmError where its name is taken, unless ``replace``.
    """
    if spec.name in _REGISTRY and not replace:
        raise DcsmError(f"a method named '{spec.name}' is registered already")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove the method ``name`` (nothing where there is none)."""
    _REGISTRY.pop(name, None)


def get(name: str, explainers: bool = False) -> MethodSpec:
    """The method ``name``.

    DcsmError (one line, naming the known methods) for an unknown one (``explainers``: for one that
    has no explainer too).
    """
    spec = _REGISTRY.get(name)
    if spec is None or (explainers and spec.explainer is None):
        raise DcsmError(f"unknown method '{name}'; known: {', '.join(names(explainers))}")
    return spec


def find(name: str, explainers: bool = False) -> MethodSpec | None:
    """The method ``name``, or None where there is none (``explainers``: or it has no explainer)."""
    spec = _REGISTRY.get(name)
    return None if spec is None or (explainers and spec.explainer is None) else spec


def names(explainers: bool = False) -> tuple[str, ...]:
    """Every registered method's name, in registration order.

    ``explainers``: those that build an explainer only.
    """
    return tuple(s.name for s in specs(explainers))


def specs(explainers: bool = False) -> tuple[MethodSpec, ...]:
    """Every registered method, in registration order.

    ``explainers``: those that build an explainer only.
    """
    return tuple(s for s in _REGISTRY.values() if not explainers or s.explainer is not None)


__all__ = ["DEFAULT_METHOD", "Layers", "MapBuilder", "MethodSpec", "find", "get", "names",
           "register", "specs", "unregister"]
