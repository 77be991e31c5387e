r"""Distinct class saliency maps (Shimoda & Yanai): the whole method for one image.

For every scale :math:`j \in S` the fully convolutional classifier runs once; the class score
maps of all candidate classes are back-propagated together to the layers :math:`L`; each layer
gives a max-abs-over-channels map per class, bilinearly upsampled to the image (Eq. 1 and the
map :math:`M_i^c`); the candidates are contrasted (Eq. 2) and the normalised maps averaged over
layers and scales (Eq. 3):

.. math::

    M^c = \frac{1}{|S||L|} \sum_{j \in S} \sum_{l \in L}
        \tanh\Big(\alpha \frac{\tilde M^c_{l}}{\max \tilde M^c_{l}}\Big), \quad
    \tilde M^c_l = \sum_{c' \ne c} \max(M^c_l - M^{c'}_l, 0)

Example::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.DistinctSaliency(adapter).explain("photo.jpg", classes=["tabby", "espresso"])
    result.maps["tabby"]  # (H, W) float32 in [0, 1]
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch

from dcsm.adapters.base import ModelAdapter
from dcsm.candidates import select
from dcsm.errors import DcsmError, DcsmWarning
from dcsm.fusion import PaperFusion, ReleasedFusion
from dcsm.gradients import BatchMode, ForwardPass, class_gradients, forward_pass
from dcsm.images import ImageLike, as_rgb_array, model_input, reference_scale
from dcsm.layer_maps import UPSAMPLE_ORDERS, UpsampleOrder, layer_saliency
from dcsm.presets import Preset, get_preset
from dcsm.result import SaliencyResult
from dcsm.rules import BackpropRule, get_rule


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validated scale ratios."""
    out = tuple(float(s) for s in scales)
    if not out:
        raise DcsmError("at least one scale is needed")
    if any(not np.isfinite(s) or s <= 0 or s > 8 for s in out):
        raise DcsmError(f"scales must lie in (0, 8], got {list(out)}")
    return out


class DistinctSaliency:
    """The distinct class saliency method, configured once and applied to many images.

    Args:
        adapter: the model (see :func:`dcsm.load_model`).
        preset: ``"paper"`` (default), ``"released"`` or ``"tuned"``; the other arguments
            override it.
        scales: scale ratios (paper: 1, 1.2, 1.4, 1.6).
        layers: layer names (default: the preset's for this model if it names any, else the
            adapter's, VGG-16's conv3_1..conv5_3).
        backprop: ``"guided"`` (default) or ``"plain"``, or a rule instance.
        alpha: the saturation of ``tanh(alpha * M / max M)`` (3).
        subtract: apply the class contrast (Eq. 2); False gives the "raw" maps of Fig. 3.
        upsample: ``"max_first"`` (the text, default) or ``"upsample_first"`` (the formula).
        batch: ``"loop"`` (default: one backward per class through the scale's single forward
            graph) or ``"vmap"`` (``torch.autograd.grad(..., is_grads_batched=True)``). PyTorch
            has no batching rule for convolution backward, so ``vmap`` runs a per-class loop
            internally and measured 5-10% slower on CPU (``benchmarks/bench_batched.py``).
        min_contrast: contrast the candidates with at least this many classes in all (the
            preset's: 1 for ``paper`` and ``tuned``, 4 for ``released``), topped up by the
            candidate rule's ranking (see :mod:`dcsm.candidates`); with one named class, the
            map of that class kept apart from what else the model sees in the image.
    """

    method = "dcsm"

    def __init__(
        self,
        adapter: ModelAdapter,
        preset: str | Preset = "paper",
        scales: Sequence[float] | None = None,
        layers: Sequence[str] | None = None,
        backprop: str | BackpropRule = "guided",
        alpha: float | None = None,
        subtract: bool = True,
        upsample: UpsampleOrder | None = None,
        batch: BatchMode = "loop",
        min_contrast: int | None = None,
    ) -> None:
        self.adapter = adapter
        self.preset = get_preset(preset)
        self.scales = check_scales(self.preset.scales if scales is None else scales)
        if layers is None:
            layers = self.preset.layers_for(adapter.name) or adapter.default_layers
        self.layers = list(layers)
        adapter.resolve_layers(self.layers)  # fail early on unknown names
        self.rule = get_rule(backprop)
        self.alpha = float(self.preset.alpha if alpha is None else alpha)
        if not np.isfinite(self.alpha) or self.alpha <= 0:
            raise DcsmError(f"alpha must be a positive number, got {alpha}")
        self.subtract = subtract
        self.upsample: UpsampleOrder = upsample or self.preset.upsample
        if self.upsample not in UPSAMPLE_ORDERS:
            raise DcsmError(f"unknown upsampling order '{self.upsample}'")
        if batch not in ("vmap", "loop"):
            raise DcsmError(f"unknown batch mode '{batch}'")
        self.batch: BatchMode = batch
        self.min_contrast = self.preset.min_contrast if min_contrast is None else min_contrast
        if isinstance(self.min_contrast, bool) or not isinstance(self.min_contrast, int) \
                or self.min_contrast < 1:
            raise DcsmError(f"min_contrast must be a positive integer, got {min_contrast}")

    def parameters(self) -> dict[str, object]:
        """The settings, as written to ``summary.json``."""
        return {
            "preset": self.preset.name,
            "scales": list(self.scales),
            "layers": list(self.layers),
            "backprop": self.rule.name,
            "alpha": self.alpha,
            "subtract": self.subtract,
            "upsample": self.upsample,
            "fusion": self.preset.fusion,
            "contrast": self.preset.contrast,
            "candidate_rule": self.preset.candidate_rule,
            "min_contrast": self.min_contrast,
        }

    def explain(
        self,
        image: ImageLike,
        classes: str | Sequence[str | int] | None = None,
        top_k: int | None = None,
        threshold: float | None = None,
        per_layer: bool = False,
    ) -> SaliencyResult:
        """Distinct class saliency maps of ``image`` for the candidate classes.

        ``classes``: None or ``"auto"`` to choose candidates from the model's scores (see
        :mod:`dcsm.candidates`), or class names/indices.
        """
        img = as_rgb_array(image)
        size = (img.shape[0], img.shape[1])
        ref = reference_scale(self.scales)

        def run(s: int) -> ForwardPass:
            x = model_input(self.adapter, img, self.scales[s])
            return forward_pass(self.adapter, x, self.layers, self.rule)

        def probabilities(fp: ForwardPass) -> torch.Tensor:
            return self.adapter.probabilities(self.adapter.pool(fp.score_map.detach()))

        # The paper's candidates come from the image as given: run that scale first, then each
        # other scale's forward and backward in turn, so one graph is alive at a time. The
        # released code's rule needs every scale's scores first.
        all_scales = self.preset.candidate_rule == "any_scale"
        if all_scales:
            order = list(range(len(self.scales)))
            passes = {s: run(s) for s in order}
            probs = torch.cat([probabilities(passes[s]) for s in order])
        else:
            order = [ref, *(s for s in range(len(self.scales)) if s != ref)]
            passes = {ref: run(ref)}
            probs = probabilities(passes[ref])
        location_probs = None
        if self.preset.candidate_rule == "score_map":
            scores = passes[ref].score_map.detach()[0]  # (C, h, w)
            location_probs = self.adapter.probabilities(scores.movedim(0, -1)).movedim(-1, 0)
        selection = select(self.adapter, probs, ref if all_scales else 0, classes, top_k,
                           threshold, self.preset.candidate_rule, self.min_contrast,
                           location_probs)
        targets = [c.index for c in selection.contrast]
        fusion_cls = PaperFusion if self.preset.fusion == "paper" else ReleasedFusion
        fusion = fusion_cls(len(self.layers), self.alpha, self.subtract, keep_layers=per_layer,
                            contrast=self.preset.contrast)
        for s in order:
            fp = passes.pop(s) if s in passes else run(s)
            active = selection.active[s if all_scales else 0]
            grads = class_gradients(fp, targets, list(fp.activations.values()), self.batch)
            del fp  # free this scale's graph before the next forward
            with torch.no_grad():
                for i, g in enumerate(grads):
                    fusion.add(i, layer_saliency(g[:, 0], size, self.upsample),
                               active.to(g.device))
            del grads
        n = len(selection.selected)
        fused = fusion.result()[:n].clamp(0, 1).float().cpu().numpy()
        names = [c.name for c in selection.selected]
        if self.subtract and len(selection.contrast) > 1:
            for k, name in enumerate(names):
                if not fused[k].max() > 0:
                    others = ", ".join(c.name for c in selection.contrast if c.name != name)
                    warnings.warn(
                        f"the distinct map of '{name}' is zero everywhere: a class it is "
                        f"contrasted with ({others}) responds more strongly at every location, "
                        "as look-alike classes of one object do; contrast it with fewer or "
                        "other classes", DcsmWarning, stacklevel=2)
        result = SaliencyResult(
            image=img,
            maps={name: fused[k].astype(np.float32) for k, name in enumerate(names)},
            candidates=selection.selected,
            method=self.method,
            model=self.adapter.name,
            parameters=self.parameters(),
            contrast=selection.contrast,
        )
        layer_results = fusion.layer_results()
        if layer_results is not None:
            result.layer_maps = {
                name: {layer: layer_results[i][k].clamp(0, 1).float().cpu().numpy()
                       for i, layer in enumerate(self.layers)}
                for k, name in enumerate(names)
            }
        return result
