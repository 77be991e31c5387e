r"""Baselines in the same API: Simonyan et al. 2014, guided back-propagation, Grad-CAM.

* ``simonyan``: the input gradient of the class score, max of absolute values over the colour
  channels, :math:`M^c_{x,y} = \max_k |\partial S_c / \partial I_{x,y,k}|`, divided by its maximum.
* ``guided``: the same with guided back-propagation (Springenberg et al. 2015).
* ``gradcam``: Grad-CAM (Selvaraju et al. 2017) at the adapter's last convolutional features A:
  :math:`\mathrm{ReLU}(\sum_k \bar g_k A_k)` with :math:`\bar g_k` the spatial mean of
  :math:`\partial S_c / \partial A_k`, bilinearly upsampled and divided by its maximum.

All run once at scale 1, at the same working resolution, on single images or tensor batches,
and use the same candidate selection as the method.
"""

from __future__ import annotations

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.candidates import ClassSpec, Selection, per_image_classes, select, uniform
from dcsm.pipeline.explainer import Prepared, _Explainer
from dcsm.pipeline.gradients import (
    BatchMode,
    ForwardPass,
    class_gradients,
    forward_pass,
    require_finite,
)
from dcsm.pipeline.images import DEFAULT_MAX_PIXELS, DEFAULT_MAX_SIDE, scaled_input
from dcsm.pipeline.layer_maps import upsample
from dcsm.pipeline.layouts import resolve_layout, to_grid
from dcsm.pipeline.rules import BackpropRule, get_rule


def _normalize_max(maps: torch.Tensor) -> torch.Tensor:
    peak = maps.amax(dim=(-2, -1), keepdim=True)
    return torch.where(peak > 0, maps / peak.clamp(min=1e-30), torch.zeros_like(maps))


class _SingleScale(_Explainer):
    """Shared flow of the single-scale baselines: forward, select, backward, reduce."""

    method = "baseline"

    def __init__(self, model: ModelAdapter | nn.Module | str, batch: BatchMode = "loop",
                 max_side: int | None = DEFAULT_MAX_SIDE, precision: str = "float32",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, **model_options: object) -> None:
        super().__init__(model, max_side, precision, model_options, max_pixels)
        self.batch: BatchMode = batch

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        raise NotImplementedError

    def _maps(self, fp: ForwardPass, targets: torch.Tensor, size: tuple[int, int]
              ) -> torch.Tensor:
        """``(N, K, H, W)`` maps of the targets' class slots."""
        raise NotImplementedError

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {"scales": [1.0], **super().parameters()}

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
        return _normalize_max(maps.float()).clamp(0, 1), selections, None


class InputGradient(_SingleScale):
    """Input-gradient saliency: ``plain`` is Simonyan et al. 2014, ``guided`` guided backprop."""

    def __init__(self, model: ModelAdapter | nn.Module | str,
                 backprop: str | BackpropRule = "plain", batch: BatchMode = "loop",
                 max_side: int | None = DEFAULT_MAX_SIDE, precision: str = "float32",
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, **model_options: object) -> None:
        super().__init__(model, batch, max_side, precision, max_pixels, **model_options)
        self.rule = get_rule(backprop)
        self.method = "simonyan" if self.rule.name == "plain" else "guided"

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {**super().parameters(), "backprop": self.rule.name, "wrt": "input"}

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        return forward_pass(self.adapter, x, [], self.rule, input_grad=True,
                            autocast=self.autocast)

    def _maps(self, fp: ForwardPass, targets: torch.Tensor, size: tuple[int, int]
              ) -> torch.Tensor:
        (g,) = class_gradients(fp, targets, [fp.input], self.batch)  # (K, N, 3, h, w)
        with torch.no_grad():
            m = g.float().abs().amax(dim=2).transpose(0, 1)  # max |.| over colour channels
            return upsample(m, size)


class GradCAM(_SingleScale):
    """Grad-CAM at ``layer`` (default: the adapter's last convolutional features)."""

    method = "gradcam"

    def __init__(self, model: ModelAdapter | nn.Module | str, layer: LayerRef | None = None,
                 batch: BatchMode = "loop", max_side: int | None = DEFAULT_MAX_SIDE,
                 precision: str = "float32", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 **model_options: object) -> None:
        super().__init__(model, batch, max_side, precision, max_pixels, **model_options)
        adapter = self.adapter
        chosen = layer or adapter.gradcam_layer or (adapter.default_layers or [None])[-1]
        if chosen is None:
            raise DcsmError(f"name Grad-CAM's layer for model {adapter.name}")
        self.layer = adapter.layer_name(chosen)
        adapter.resolve_layers([self.layer])

    def _layers(self) -> list[str]:
        return [self.layer]

    def parameters(self) -> dict[str, object]:
        """Settings written to summary.json."""
        return {**super().parameters(), "layers": [self.layer], "backprop": "plain"}

    def _forward(self, x: torch.Tensor) -> ForwardPass:
        return forward_pass(self.adapter, x, [self.layer], get_rule("plain"),
                            autocast=self.autocast)

    def _maps(self, fp: ForwardPass, targets: torch.Tensor, size: tuple[int, int]
              ) -> torch.Tensor:
        raw = fp.activations[self.layer]
        in_hw = (int(fp.input.shape[-2]), int(fp.input.shape[-1]))
        layout = resolve_layout(tuple(raw.shape), in_hw, self.adapter.layer_layout(self.layer),
                                self.layer)
        (g,) = class_gradients(fp, targets, [raw], self.batch)  # (K, *raw.shape)
        with torch.no_grad():
            act = to_grid(raw.detach().float(), layout, in_hw, self.layer)  # (N, C, h, w)
            cams = []
            for k in range(g.shape[0]):
                grad = to_grid(g[k].float(), layout, in_hw, self.layer)
                weights = grad.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
                cams.append((weights * act).sum(dim=1).clamp(min=0))  # (N, h, w)
            return upsample(torch.stack(cams, dim=1), size)


__all__ = ["GradCAM", "InputGradient"]
