"""The base class of every explainer: :class:`Explainer` (public as ``dcsm.Explainer``).

An explainer is configured once (a model, a method's settings) and applied to many images:
:meth:`Explainer.explain` gives the maps of an image's candidate classes, and
:meth:`Explainer.parameters` the settings written beside them (``summary.json``). Both are
abstract. The class also holds what the gradient methods share: the model's adapter, the working
resolution, the image size limit, the precision, the memory estimate of full-resolution runs,
and the building blocks of ``explain``: :meth:`Explainer.prepare_input` (an image or a tensor
batch made model input, the memory checked) and :meth:`Explainer.result` (maps at the working
resolution made a :class:`~dcsm.pipeline.result.SaliencyResult` or a
:class:`~dcsm.pipeline.result.BatchResult`).

A new method subclasses it and is registered in :mod:`dcsm.methods.registry`::

    class MyMethod(Explainer):
        method = "mine"

        def parameters(self) -> dict[str, object]:
            return {"strength": self.strength, **super().parameters()}

        def explain(self, image, classes=None, top_k=None, threshold=None, per_layer=False):
            prepared = self.prepare_input(image)
            maps, selections = ...  # (N, K, h, w) maps in [0, 1], the candidates
            return self.result(prepared, maps, selections, None)
"""

from __future__ import annotations

import abc
from typing import overload

import numpy as np
import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS, check_max_pixels
from dcsm.pipeline.adapters import AdapterOptions, as_adapter
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.candidates import ClassSpec, Selection
from dcsm.pipeline.gradients import forward_pass
from dcsm.pipeline.images import (
    DEFAULT_MAX_SIDE,
    ImageLike,
    check_max_side,
    scaled_input,
    working_size,
)
from dcsm.pipeline.inputs import Prepared, check_precision, prepare
from dcsm.pipeline.layer_maps import upsample
from dcsm.pipeline.result import BatchResult, SaliencyResult
from dcsm.pipeline.rules import BackpropRule, GuidedRule, get_rule, warn_if_unguided
from dcsm.pipeline.speedups import memory


class Explainer(abc.ABC):
    """What every method offers: its model, its settings and ``explain``.

    Args:
        model: a model adapter, a registry name or any classifier module.
        max_side: the working resolution's long side (None: full resolution, the memory
            checked first with :meth:`estimate_memory`).
        precision: ``"float32"``, ``"bfloat16"`` or ``"float16"`` (autocast forward).
        model_options: describe a plain module
            (:class:`~dcsm.pipeline.adapters.AdapterOptions`,
            :func:`dcsm.pipeline.adapters.module.module_adapter`).
        max_pixels: the most pixels an image may have (None: no limit).
        rule: the back-propagation rule of the method's backward, if it sets one: a guided
            rule that meets no ReLU is warned about after each explanation.

    Attributes:
        adapter: the model's :class:`~dcsm.pipeline.adapters.base.ModelAdapter`.
        max_side, max_pixels, precision, rule: as given (checked); ``autocast`` is the
            precision's dtype (None for float32).
    """

    def __init__(self, model: ModelAdapter | nn.Module | str, max_side: int | None,
                 precision: str, model_options: AdapterOptions,
                 max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 rule: BackpropRule | None = None) -> None:
        """Build the adapter and check the settings (the arguments: the class's)."""
        self.adapter = as_adapter(model, **model_options)
        self.max_side = check_max_side(max_side)
        self.max_pixels = check_max_pixels(max_pixels)
        self.precision = precision
        self.autocast = check_precision(precision)
        self.rule = rule

    @property
    @abc.abstractmethod
    def method(self) -> str:
        """The method's name in the registry (:mod:`dcsm.methods.registry`).

        Written to the results.
        """

    @overload
    def explain(self, image: ImageLike, classes: ClassSpec = None, top_k: int | None = None,
                threshold: float | None = None, per_layer: bool = False) -> SaliencyResult: ...

    @overload
    def explain(self, image: torch.Tensor, classes: ClassSpec = None, top_k: int | None = None,
                threshold: float | None = None, per_layer: bool = False) -> BatchResult: ...

    @abc.abstractmethod
    def explain(
        self,
        image: ImageLike | torch.Tensor,
        classes: ClassSpec = None,
        top_k: int | None = None,
        threshold: float | None = None,
        per_layer: bool = False,
    ) -> SaliencyResult | BatchResult:
        """Maps of the candidate classes of ``image``.

        ``image``: a path, an RGB/grey array, a PIL image (returns a :class:`SaliencyResult`
        with numpy maps), or a preprocessed float tensor ``(N, 3, H, W)`` (returns a
        :class:`BatchResult` whose maps are an ``(N, K, H, W)`` tensor on the tensor's device).
        ``classes``: None or ``"auto"`` (chosen from the model's scores,
        :mod:`dcsm.pipeline.candidates`),
        class names or indices for every image, one list per image, or an ``(N, K)`` tensor.
        ``top_k`` and ``threshold`` bound the automatic candidates; ``per_layer`` also returns
        each layer's maps where the method has layers.
        """

    @abc.abstractmethod
    def parameters(self) -> dict[str, object]:
        """The settings, as written to ``summary.json``.

        Subclasses add theirs to these (``{**theirs, **super().parameters()}``).
        """
        return {"max_side": self.max_side, "precision": self.precision}

    def _scales(self) -> tuple[float, ...]:
        """The scale ratios the method runs at (for the memory estimate)."""
        return (1.0,)

    def _layers(self) -> list[str]:
        """The layers the method reads (for the memory estimate)."""
        return []

    def estimate_memory(self, height: int, width: int, classes: int = 2, batch: int = 1) -> int:
        """Bytes one explanation of a ``height x width`` image will need at its peak, about.

        Measured, not guessed: forward passes at 96 x 96 and 192 x 192 pixels count the bytes
        autograd saves for the backward; a line through the two (a part that grows with the
        pixels, and one that does not) gives the bytes at the working size and the largest
        scale. Added: the gradients of one backward (as much again), the per-layer and fused
        maps, and the input.
        """
        h, w = working_size(height, width, self.max_side)
        measured = []
        for side in (96, 192):
            probe = torch.zeros((1, 3, side, side), device=self.adapter.device)
            probe_in = scaled_input(self.adapter, probe, 1.0)
            with memory.count_saved() as saved:
                fp = forward_pass(self.adapter, probe_in, self._layers(), get_rule("plain"),
                                  input_grad=not self._layers(), autocast=self.autocast)
            del fp
            measured.append((probe_in.shape[-2] * probe_in.shape[-1], saved[0]))
        (p0, b0), (p1, b1) = measured
        per_pixel = max(0.0, (b1 - b0) / max(1, p1 - p0))
        fixed = max(0.0, b1 - per_pixel * p1)
        if self.adapter.input_size is not None:
            big_px = float(p1)
            per_pixel, fixed = 0.0, float(b1)
        else:
            big = max(self._scales())
            big_px = max(h * big, self.adapter.min_input) * max(w * big, self.adapter.min_input)
        graph = 2.0 * (fixed + per_pixel * big_px) * batch
        maps = 4.0 * batch * classes * h * w * (len(self._layers()) + 4)
        return int(graph + maps + 4 * 3 * h * w * batch * 2)

    def _check_memory(self, prepared: Prepared, classes: int) -> None:
        if self.max_side is not None:
            return
        h, w = prepared.x.shape[-2:]
        need = self.estimate_memory(int(h), int(w), max(classes, 2), prepared.x.shape[0])
        free = memory.available_memory(self.adapter.device)
        if free is not None and need > free:
            raise DcsmError(
                f"explaining {int(h)}x{int(w)} pixels at full resolution needs about "
                f"{need / 2**30:.1f} GiB and {free / 2**30:.1f} GiB is available; use a working "
                f"resolution (max_side, --max-side; default {DEFAULT_MAX_SIDE})")

    def prepare_input(self, image: ImageLike | torch.Tensor) -> Prepared:
        """``image`` as model input at the working resolution.

        See :func:`dcsm.pipeline.inputs.prepare`; at full resolution, DcsmError first where it
        would not fit in memory.
        """
        prepared = prepare(self.adapter, image, self.max_side, self.max_pixels)
        self._check_memory(prepared, 4)
        return prepared

    def result(self, prepared: Prepared, maps: torch.Tensor, selections: list[Selection],
               layers: dict[str, torch.Tensor] | None) -> SaliencyResult | BatchResult:
        """The result of an explanation.

        ``maps`` ``(N, K', h, w)`` at the working resolution (the first K slots those of the
        ``selections``' selected classes) and, with ``per_layer``, each layer's, brought to the
        input's size and device.
        """
        rule = self.rule
        if isinstance(rule, GuidedRule) and rule.last_intercepted == 0:
            warn_if_unguided(0, self.adapter.name)
        k = len(selections[0].selected)
        maps = upsample(maps[:, :k].float(), prepared.out_size).clamp(0, 1)
        names = [[c.name for c in s.selected] for s in selections]
        self._warn_empty(maps, selections)
        if layers is not None:
            layers = {name: upsample(m[:, :k].float(), prepared.out_size).clamp(0, 1)
                      for name, m in layers.items()}
        if prepared.image is None:
            return BatchResult(
                maps=maps.to(prepared.out_device),
                classes=torch.tensor([[c.index for c in s.selected] for s in selections]),
                scores=torch.tensor([[c.score for c in s.selected] for s in selections]),
                class_names=names, method=self.method, model=self.adapter.name,
                parameters=self.parameters(),
                contrast=torch.tensor([[c.index for c in s.contrast] for s in selections]),
                contrast_names=[[c.name for c in s.contrast] for s in selections],
                contrast_scores=torch.tensor([[c.score for c in s.contrast]
                                              for s in selections]),
                merged=[[c.merged for c in s.selected] for s in selections],
                contrast_merged=[[c.merged for c in s.contrast] for s in selections],
                layer_maps=None if layers is None else {
                    name: m.to(prepared.out_device) for name, m in layers.items()},
            )
        fused = maps[0].cpu().numpy()
        result = SaliencyResult(
            image=prepared.image,
            maps={name: fused[j].astype(np.float32) for j, name in enumerate(names[0])},
            candidates=selections[0].selected,
            method=self.method,
            model=self.adapter.name,
            parameters=self.parameters(),
            contrast=selections[0].contrast,
        )
        if layers is not None:
            result.layer_maps = {
                name: {layer: m[0, j].cpu().numpy() for layer, m in layers.items()}
                for j, name in enumerate(names[0])
            }
        return result

    def _warn_empty(self, maps: torch.Tensor, selections: list[Selection]) -> None:
        """Tell the user when a map is zero everywhere, where the method can say why.

        Nothing to say by default.
        """
        del maps, selections


__all__ = ["Explainer"]
