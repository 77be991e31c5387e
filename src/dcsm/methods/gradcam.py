r"""``gradcam``: Grad-CAM (Selvaraju et al. 2017).

At the adapter's last convolutional features :math:`A` (or the one layer named):
:math:`\mathrm{ReLU}(\sum_k \bar g_k A_k)` with :math:`\bar g_k` the spatial mean of
:math:`\partial S_c / \partial A_k`, bilinearly upsampled and divided by its maximum; once at
scale 1 (:mod:`dcsm.methods.single_scale`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.methods.maps import explainer_maps
from dcsm.methods.registry import MethodSpec, register
from dcsm.methods.single_scale import SETTINGS, Settings, SingleScale
from dcsm.pipeline.adapters import ModelOptions
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter
from dcsm.pipeline.gradients import BatchMode, ForwardPass, class_gradients, forward_pass
from dcsm.pipeline.images import DEFAULT_MAX_SIDE
from dcsm.pipeline.layer_maps import upsample
from dcsm.pipeline.layouts import resolve_layout, to_grid
from dcsm.pipeline.rules import get_rule

if TYPE_CHECKING:
    from typing_extensions import Unpack


class GradCAM(SingleScale):
    """Grad-CAM at ``layer`` (default: the adapter's last convolutional features)."""

    method = "gradcam"

    def __init__(self, model: ModelAdapter | nn.Module | str, layer: LayerRef | None = None,
                 batch: BatchMode = "loop", max_side: int | None = DEFAULT_MAX_SIDE,
                 precision: str = "float32", max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 **model_options: Unpack[ModelOptions]) -> None:
        """Build the adapter and resolve the layer (DcsmError where there is none to read)."""
        super().__init__(model, batch, max_side, precision, max_pixels, None, **model_options)
        adapter = self.adapter
        last = adapter.default_layers[-1] if adapter.default_layers else None
        chosen = layer or adapter.gradcam_layer or last
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


def build(model: ModelAdapter | nn.Module | str, layers: Sequence[LayerRef] | None = None,
          **settings: Unpack[Settings]) -> GradCAM:
    """The ``gradcam`` explainer at the one layer of ``layers`` (None: its default layer).

    The other settings: :data:`dcsm.methods.single_scale.SETTINGS`.
    """
    if layers is not None and len(layers) != 1:
        raise DcsmError("Grad-CAM reads exactly one layer")
    return GradCAM(model, layers[0] if layers else None, **settings)


SPEC = register(MethodSpec(
    name="gradcam",
    description="Grad-CAM (Selvaraju et al. 2017): the layer's activations weighted by their "
                "mean gradients",
    label="Grad-CAM (dcsm)",
    explainer=build,
    maps=explainer_maps(lambda adapter: GradCAM(adapter)),
    settings=SETTINGS | {"layers"},
    layers="one",
))

__all__ = ["SPEC", "GradCAM", "build"]
