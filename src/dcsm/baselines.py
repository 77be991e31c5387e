r"""Baselines in the same API: Simonyan et al. 2014, guided back-propagation, Grad-CAM.

* ``simonyan``: the input gradient of the class score, max of absolute values over the colour
  channels, :math:`M^c_{x,y} = \max_k |\partial S_c / \partial I_{x,y,k}|`, divided by its maximum.
* ``guided``: the same with guided back-propagation (Springenberg et al. 2015).
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017) at the adapter's last convolutional features A:
  :math:`\mathrm{ReLU}(\sum_k \bar g_k A_k)` with :math:`\bar g_k` the spatial mean of
  :math:`\partial S_c / \partial A_k`, bilinearly upsampled and divided by its maximum.

All run once at scale 1 and use the same candidate selection as the method.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dcsm.adapters.base import ModelAdapter
from dcsm.candidates import Selection, select
from dcsm.errors import DcsmError
from dcsm.explainer import DistinctSaliency
from dcsm.gradients import BatchMode, ForwardPass, class_gradients, forward_pass
from dcsm.images import ImageLike, as_rgb_array, model_input
from dcsm.layer_maps import upsample
from dcsm.result import SaliencyResult
from dcsm.rules import BackpropRule, get_rule

METHODS: tuple[str, ...] = ("dcsm", "simonyan", "guided", "gradcam")


def _normalize_max(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=1e-30), torch.zeros_like(maps))


class _SingleScale:
    """Shared flow of the single-scale baselines: forward, select, backward, reduce."""

    method = "baseline"

    def __init__(self, adapter: ModelAdapter, batch: BatchMode = "loop") -> None:
        self.adapter = adapter
        self.batch: BatchMode = batch

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        raise NotImplementedError

    def _maps(self, fp: ForwardPass, targets: list[int], size: tuple[int, int]) -> torch.Tensor:
        raise NotImplementedError

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {"scales": [1.0]}

    def explain(
        self,
        image: ImageLike,
        classes: str | Sequence[str | int] | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        per_layer: bool = False,
    ) -> SaliencyResult:
        """Maps of the candidate classes (``per_layer`` is ignored: one layer or the input)."""
        img = as_rgb_array(image)
        fp = self._forward(model_input(self.adapter, img, 1.0))
        probs = self.adapter.probabilities(self.adapter.pool(fp.score_map.detach()))
        selection: Selection = select(self.adapter, probs, 0, classes, top_k, threshold)
        targets = [c.index for c in selection.selected]
        maps = self._maps(fp, targets, (img.shape[0], img.shape[1]))
        maps = _normalize_max(maps).clamp(0, 1).float().cpu().numpy()
        return SaliencyResult(
            image=img,
            maps={c.name: maps[k].astype(np.float32) for k, c in enumerate(selection.selected)},
            candidates=selection.selected,
            method=self.method,
            model=self.adapter.name,
            parameters=self.parameters(),
            contrast=selection.selected,
        )


class InputGradient(_SingleScale):
    """Input-gradient saliency: ``plain`` is Simonyan et al. 2014, ``guided`` guided backprop."""

    def __init__(self, adapter: ModelAdapter, backprop: str | BackpropRule = "plain",
                 batch: BatchMode = "loop") -> None:
        super().__init__(adapter, batch)
        self.rule = get_rule(backprop)
        self.method = "simonyan" if self.rule.name == "plain" else "guided"

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {"scales": [1.0], "backprop": self.rule.name, "wrt": "input"}

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        return forward_pass(self.adapter, x, [], self.rule, input_grad=True)

    def _maps(self, fp: ForwardPass, targets: list[int], size: tuple[int, int]) -> torch.Tensor:
        (g,) = class_gradients(fp, targets, [fp.input], self.batch)
        with torch.no_grad():
            m = g[:, 0].abs().amax(dim=1, keepdim=True)  # max |.| over colour channels
            return upsample(m, size)[:, 0]


class GradCAM(_SingleScale):
    """Grad-CAM at ``layer`` (default: the adapter's last convolutional features)."""

    method = "gradcam"

    def __init__(self, adapter: ModelAdapter, layer: str | None = None,
                 batch: BatchMode = "loop") -> None:
        super().__init__(adapter, batch)
        self.layer = layer or adapter.gradcam_layer or adapter.default_layers[-1]
        adapter.resolve_layers([self.layer])

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {"scales": [1.0], "layers": [self.layer], "backprop": "plain"}

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        return forward_pass(self.adapter, x, [self.layer], get_rule("plain"))

    def _maps(self, fp: ForwardPass, targets: list[int], size: tuple[int, int]) -> torch.Tensor:
        act = fp.activations[self.layer]
        (g,) = class_gradients(fp, targets, [act], self.batch)
        with torch.no_grad():
            weights = g[:, 0].mean(dim=(2, 3), keepdim=True)  # (K, C, 1, 1)
            cam = (weights * act.detach()).sum(dim=1, keepdim=True).clamp(min=0)
            return upsample(cam, size)[:, 0]


Explainer = DistinctSaliency | InputGradient | GradCAM


def make_explainer(
    adapter: ModelAdapter,
    method: str = "dcsm",
    preset: str = "paper",
    scales: Sequence[float] | None = None,
    layers: Sequence[str] | None = None,
    backprop: str = "guided",
    alpha: float | None = None,
    subtract: bool = True,
    upsample: str | None = None,
    min_contrast: int | None = None,
) -> Explainer:
    """The explainer for ``method`` (``dcsm``, ``simonyan``, ``guided`` or ``gradcam``)."""
    if method == "dcsm":
        return DistinctSaliency(adapter, preset=preset, scales=scales, layers=layers,
                                backprop=backprop, alpha=alpha, subtract=subtract,
                                upsample=upsample, min_contrast=min_contrast)  # type: ignore[arg-type]
    if min_contrast is not None:
        raise DcsmError(f"--min-contrast applies to the dcsm method only, not {method}")
    if method == "simonyan":
        return InputGradient(adapter, "plain")
    if method == "guided":
        return InputGradient(adapter, "guided")
    if method == "gradcam":
        if layers is not None and len(layers) != 1:
            raise DcsmError("Grad-CAM reads exactly one layer")
        return GradCAM(adapter, layers[0] if layers else None)
    raise DcsmError(f"unknown method '{method}'; known: {', '.join(METHODS)}")


def explain(
    adapter: ModelAdapter,
    image: ImageLike,
    method: str = "dcsm",
    classes: str | Sequence[str | int] | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    per_layer: bool = False,
    **settings: object,
) -> SaliencyResult:
    """One call: ``make_explainer(adapter, method, **settings).explain(image, ...)``."""
    explainer = make_explainer(adapter, method, **settings)  # type: ignore[arg-type]
    return explainer.explain(image, classes, top_k, threshold, per_layer)
