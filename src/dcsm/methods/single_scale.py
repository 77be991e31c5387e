"""What dcsm's single-scale baselines share (Simonyan et al., guided back-propagation, Grad-CAM).

One forward at scale 1 at the working resolution, the same candidate selection as the method, one
backward for the candidates, maps divided by their maximum. They run on single images or tensor
batches.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, overload

import torch
from torch import nn

from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.pipeline.adapters import AdapterOptions, ModelOptions
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import ClassSpec, Selection, per_image_classes, select, uniform
from dcsm.pipeline.gradients import BatchMode, ForwardPass, require_finite
from dcsm.pipeline.images import DEFAULT_MAX_SIDE, ImageLike, scaled_input
from dcsm.pipeline.inputs import Prepared
from dcsm.pipeline.result import BatchResult, SaliencyResult
from dcsm.pipeline.rules import BackpropRule

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: The settings of :func:`dcsm.make_explainer` every single-scale baseline takes.
SETTINGS = frozenset({"max_side", "precision", "max_pixels", "batch"})


class Settings(ModelOptions, total=False):
    """The keyword arguments of a single-scale baseline's builder.

    :data:`SETTINGS` and a plain module's description
    (:class:`~dcsm.pipeline.adapters.ModelOptions`).
    """

    batch: BatchMode
    max_side: int | None
    precision: str
    max_pixels: int | None


def normalize_max(maps: torch.Tensor) -> torch.Tensor:
    """Each ``(H, W)`` map divided by its maximum (a map with no positive value: zeros)."""
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=1e-30), torch.zeros_like(maps))


class SingleScale(Explainer):
    """Shared flow of the single-scale baselines: forward, select, backward, reduce.

    Subclasses give the forward (:meth:`_forward`) and the maps of its gradients
    (:meth:`_maps`); ``rule`` is the backward's rule where it is not plain.
    """

    def __init__(self, model: ModelAdapter | nn.Module | str, batch: BatchMode = "loop",
                 max_side: int | None = DEFAULT_MAX_SIDE, precision: str = "float32",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, rule: BackpropRule | None = None,
                 **model_options: Unpack[ModelOptions]) -> None:
        """Build the adapter and check the settings (the arguments: the class's)."""
        super().__init__(model, max_side, precision, AdapterOptions(**model_options), max_pixels,
                         rule)
        self.batch: BatchMode = batch

    @abc.abstractmethod
    def _forward(self, x: torch.Tensor) -> ForwardPass:
        """The forward pass at scale 1 of the working-resolution input ``x``."""

    @abc.abstractmethod
    def _maps(self, fp: ForwardPass, targets: torch.Tensor, size: tuple[int, int]
              ) -> torch.Tensor:
        """``(N, K, H, W)`` maps of the targets' class slots."""

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {"scales": [1.0], **super().parameters()}

    @overload
    def explain(self, image: ImageLike, classes: ClassSpec = None, top_k: int | None = None,
                threshold: float | None = None, per_layer: bool = False) -> SaliencyResult: ...

    @overload
    def explain(self, image: torch.Tensor, classes: ClassSpec = None, top_k: int | None = None,
                threshold: float | None = None, per_layer: bool = False) -> BatchResult: ...

    def explain(
        self,
        image: ImageLike | torch.Tensor,
        classes: ClassSpec = None,
        top_k: int | None = None,
        threshold: float | None = None,
        per_layer: bool = False,
    ) -> SaliencyResult | BatchResult:
        """The method's maps of ``image``'s candidate classes.

        The arguments: :meth:`dcsm.Explainer.explain`; no layer maps: ``per_layer`` has no
        effect.
        """
        prepared = self.prepare_input(image)
        return self.result(prepared, *self._run(prepared, classes, top_k, threshold, per_layer))

    def _run(self, prepared: Prepared, classes: ClassSpec, top_k: int | None,
             threshold: float | None, per_layer: bool
             ) -> tuple[torch.Tensor, list[Selection], dict[str, torch.Tensor] | None]:
        x = prepared.x
        fp = self._forward(scaled_input(self.adapter, x, 1.0))
        probs = self.adapter.probabilities(self.adapter.pool(fp.score_map.detach().float()))
        wanted = per_image_classes(classes, x.shape[0])
        selections = [select(self.adapter, probs[i:i + 1], 0, wanted[i], top_k, threshold)
                      for i in range(x.shape[0])]
        uniform(selections)
        targets = torch.tensor([[c.index for c in s.selected] for s in selections])
        maps = self._maps(fp, targets, (int(x.shape[-2]), int(x.shape[-1])))
        require_finite(maps, f"the gradients of model {self.adapter.name} are",
                       self.autocast is not None)
        return normalize_max(maps.float()).clamp(0, 1), selections, None


__all__ = ["SETTINGS", "Settings", "SingleScale", "normalize_max"]
