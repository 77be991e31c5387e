"""The methods the benchmarks compare, derived from the registry.

The benchmarks: ``dcsm bench gridpg``, ``dcsm bench masks`` and Quantus; the registry:
:mod:`dcsm.methods.registry`.

dcsm runs with each of its presets (``paper``, ``released``, ``tuned``) and, as an ablation,
without the class contrast; every other registered method that gives maps (its ``maps``
builder: dcsm's baselines and the peers) follows under its registry name, in the registry's
order. Each is a :class:`BenchMethod`: a key, a label for tables, and its map function's
builder.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass

from dcsm.errors import DcsmError
from dcsm.methods.distinct import dcsm_maps
from dcsm.methods.registry import MapBuilder, MethodSpec, specs
from dcsm.pipeline.presets import PRESETS


@dataclass(frozen=True)
class BenchMethod:
    """One method of the benchmarks.

    ``key`` names it on the command line; ``label`` in tables; ``source`` is the library that
    computes it (``dcsm``, ``captum``, ``pytorch-grad-cam``, ``torchcam``); ``contrastive``
    methods depend on the other classes, so they run once per candidate mode; ``requires`` is
    the module that must be importable; ``build(adapter, mode)`` returns the map function;
    ``segmenter`` is the segmenter its maps go to (:func:`dcsm.bench.masks.segmenter_for`);
    ``map_gamma`` the power its maps were raised to, undone before the CRF
    (:func:`dcsm.segmentation.segment`).
    """

    key: str
    label: str
    source: str
    contrastive: bool
    requires: str
    build: MapBuilder
    requires_name: str = ""
    segmenter: str = "crf"
    map_gamma: float = 1.0

    def available(self) -> bool:
        """Whether the library it needs is installed (and has ``requires_name``, if given)."""
        if importlib.util.find_spec(self.requires) is None:
            return False
        if self.requires_name:
            return hasattr(importlib.import_module(self.requires), self.requires_name)
        return True

    @classmethod
    def of(cls, spec: MethodSpec) -> BenchMethod:
        """A registered method that gives maps, under its registry name."""
        if spec.maps is None:
            raise DcsmError(f"method {spec.name} gives no map function for the benchmarks")
        return cls(spec.name, spec.label, spec.source, spec.contrastive,
                   spec.requires or "dcsm", spec.maps, spec.requires_name, spec.segmenter)


#: dcsm's presets and its ablation without the class contrast.
DCSM_VARIANTS: tuple[BenchMethod, ...] = (
    BenchMethod("dcsm-paper", "dcsm (paper preset)", "dcsm", True, "dcsm", dcsm_maps("paper")),
    BenchMethod("dcsm-released", "dcsm (released preset)", "dcsm", True, "dcsm",
                dcsm_maps("released")),
    BenchMethod("dcsm-tuned", "dcsm (tuned preset)", "dcsm", True, "dcsm", dcsm_maps("tuned"),
                map_gamma=PRESETS["tuned"].gamma),
    BenchMethod("dcsm-no-subtract", "dcsm, no subtraction", "dcsm", False, "dcsm",
                dcsm_maps("paper", subtract=False)),
    BenchMethod("dcsm-tuned-no-subtract", "dcsm (tuned preset), no subtraction", "dcsm", False,
                "dcsm", dcsm_maps("tuned", subtract=False), map_gamma=PRESETS["tuned"].gamma),
)


#: The table last built, and the registered methods it was built from.
_built: dict[tuple[MethodSpec, ...], tuple[BenchMethod, ...]] = {}


def bench_methods() -> tuple[BenchMethod, ...]:
    """The benchmarks' methods, in table order.

    dcsm's variants, then every registered method that gives maps (one registered later included).
    The same objects while the registry stays the same.
    """
    registered = tuple(s for s in specs() if s.maps is not None)
    if registered not in _built:
        _built.clear()
        _built[registered] = (*DCSM_VARIANTS, *(BenchMethod.of(s) for s in registered))
    return _built[registered]


def method_keys() -> list[str]:
    """Every method's key, in table order."""
    return [m.key for m in bench_methods()]


def get_methods(keys: Sequence[str] | None = None) -> list[BenchMethod]:
    """The methods named (all by default).

    DcsmError for an unknown key, or for a named method whose library is not installed. Unnamed
    methods whose library is missing are left out.
    """
    table = bench_methods()
    by_key = {m.key: m for m in table}
    if keys is None:
        return [m for m in table if m.available()]
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise DcsmError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(by_key)}")
    chosen = [by_key[k] for k in dict.fromkeys(keys)]
    missing = [m for m in chosen if not m.available()]
    if missing:
        raise DcsmError(f"method {missing[0].key} needs the package '{missing[0].requires}': "
                        "pip install 'distinct-saliency[bench]'")
    return chosen


__all__ = ["DCSM_VARIANTS", "BenchMethod", "bench_methods", "get_methods", "method_keys"]
