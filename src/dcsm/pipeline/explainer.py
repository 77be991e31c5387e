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

The division by the maximum inside the tanh is our reading of the paper, which writes
:math:`\tanh(\alpha M)` and mentions the maximum for display: without it the saturation would
depend on the gradients' magnitude, which differs by orders between layers and models.

Examples::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.DistinctSaliency(adapter).explain("photo.jpg", classes=["tabby", "espresso"])
    result.maps["tabby"]  # (H, W) float32 in [0, 1]

    model = torchvision.models.resnet50(weights=...)          # any classifier module
    explainer = dcsm.DistinctSaliency(model, layers=[model.layer3, model.layer4])
    out = explainer.explain(batch, classes=torch.tensor([[1, 2], [3, 4]]))  # (N, 3, H, W)
    out.maps  # (N, 2, H, W) on batch's device
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import overload

import numpy as np
import torch
from torch import nn

from dcsm.errors import DcsmError, DcsmWarning
from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.pipeline.adapters.base import LayerRef, ModelAdapter, Preprocessing
from dcsm.pipeline.affinity import AUTO_LAYER, Propagation, affinity_features, random_walk
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import (
    ClassSpec,
    Selection,
    image_scores,
    per_image_classes,
    select,
    uniform,
)
from dcsm.pipeline.fusion import PaperFusion, ReleasedFusion, sharpen
from dcsm.pipeline.gate import check_power, class_scores, score_gate
from dcsm.pipeline.gradients import (
    BatchMode,
    ForwardPass,
    forward_pass,
    iter_class_gradients,
    require_finite,
)
from dcsm.pipeline.images import (
    DEFAULT_MAX_SIDE,
    ImageLike,
    reference_scale,
    scaled_input,
)
from dcsm.pipeline.inputs import Prepared, check_scales
from dcsm.pipeline.layer_maps import (
    CHANNEL_REDUCTIONS,
    UPSAMPLE_ORDERS,
    ChannelReduction,
    UpsampleOrder,
    layer_saliency,
    reduce_channels,
    upsample,
)
from dcsm.pipeline.layouts import LayoutSpec, resolve_layout, to_grid
from dcsm.pipeline.presets import DEFAULT_PRESET, Preset, get_preset
from dcsm.pipeline.result import BatchResult, SaliencyResult
from dcsm.pipeline.rules import BackpropRule, get_rule
from dcsm.pipeline.speedups.head import HeadRestriction, HeadRestrictionFailed, head_restriction


class DistinctSaliency(Explainer):
    """The distinct class saliency method, configured once and applied to many images.

    Args:
        model: a model adapter (:func:`dcsm.load_model`), a registry name, or any classifier
            ``nn.Module`` (:mod:`dcsm.pipeline.adapters.module`).
        preset: ``"tuned"`` (default, :data:`dcsm.pipeline.presets.DEFAULT_PRESET`), ``"paper"`` or
            ``"released"``; the other arguments override it.
        scales: scale ratios (paper: 1, 1.2, 1.4, 1.6).
        layers: layers as names, dotted module paths or module objects, mixed (default: the
            preset's for this model if it names any, else the adapter's; VGG-16's
            conv3_1..conv5_3).
        backprop: ``"guided"`` (default) or ``"plain"``, or a rule instance.
        alpha: the saturation of ``tanh(alpha * M / max M)`` (3).
        subtract: apply the class contrast (Eq. 2); False gives the "raw" maps of Fig. 3.
        upsample: ``"max_first"`` (the text, default) or ``"upsample_first"`` (the formula).
        reduce: the channel reduction of each layer's derivatives: ``"max_abs"`` (the paper's
            maximum of absolute values) or ``"grad_act"`` (positive derivative times positive
            activation, summed; :mod:`dcsm.pipeline.layer_maps`); default: the preset's.
        propagate: spread each fused map through the feature affinities of one layer
            (:class:`dcsm.pipeline.affinity.Propagation`; True: its defaults; False: off;
            default: the preset's).
        flip: also explain the mirror image for the same classes and average the two maps
            (mirrored back): twice the time; default: the preset's.
        gate: each map weighted by its class's score map scaled to [0, 1] and raised to this
            power (:mod:`dcsm.pipeline.gate`; 0: off); applied before ``gamma``; default: the
            preset's.
        gamma: each final map raised to this power relative to its maximum
            (:func:`dcsm.pipeline.fusion.sharpen`; 1: unchanged); default: the preset's.
        batch: how the class slots are back-propagated through each scale's single forward
            graph: ``"loop"`` (one backward per slot, serving every image of a batch),
            ``"vmap"`` (one backward for all slots, ``torch.func.vmap`` over
            ``torch.autograd.grad``: each weight is read once for all slots) or ``"auto"``
            (default): ``"vmap"`` where reading large weights bounds the backward, measured
            per scale from its graph
            (:func:`dcsm.pipeline.speedups.batch_mode.choose_batch_mode`, with the
            measurements: AlexNet 0.35-0.92x the time of ``"loop"``, VGG-16 at one image
            0.63-0.70x through PyTorch's CPU convolutions, 0.93-1.0x as matrix products), else
            ``"loop"`` (SqueezeNet 1.1, EfficientNet-Lite0, ResNet-50: ``"vmap"`` 0.9-1.5x;
            VGG-16 with 4 or more images). All give the same maps, to float32 rounding.
        min_contrast: contrast the candidates with at least this many classes in all (the
            preset's: 1 for ``paper`` and ``tuned``, 4 for ``released``), topped up by the
            candidate rule's ranking (see :mod:`dcsm.pipeline.candidates`).
        merge_lookalikes: skip automatic candidates (and contrast top-up classes) that are
            look-alikes of one object with a class already taken: ImageNet classes of one VOC or
            COCO class, or classes contesting the same locations of the score map; each
            candidate's ``merged`` names them (:mod:`dcsm.pipeline.candidates`). Named classes are
            never merged. Default: the preset's (on for ``tuned``, off for ``paper`` and
            ``released``).
        max_side: the working resolution's long side (default 512, :mod:`dcsm.pipeline.images`);
            None for the full resolution (memory checked first, :meth:`estimate_memory`).
        max_pixels: the most pixels (width x height) an image (path, PIL image or array) may
            have, checked from a file's header before decoding (default 50 million,
            :data:`dcsm.io.DEFAULT_MAX_PIXELS`; None: no limit).
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"`` (autocast forward;
            the maps are reduced in float32).
        class_names, preprocess, multilabel, input_size, layouts: describe a plain module
            (:func:`dcsm.pipeline.adapters.module.module_adapter`); ``layouts`` (how a layer's
            output becomes a grid: ``"tokens:1"``, ``"nhwc"``, a function) applies to any model.
    """

    method = "dcsm"

    def __init__(
        self,
        model: ModelAdapter | nn.Module | str,
        preset: str | Preset = DEFAULT_PRESET,
        scales: Sequence[float] | None = None,
        layers: Sequence[LayerRef] | None = None,
        backprop: str | BackpropRule = "guided",
        alpha: float | None = None,
        subtract: bool = True,
        upsample: UpsampleOrder | None = None,
        reduce: ChannelReduction | None = None,
        propagate: Propagation | bool | None = None,
        flip: bool | None = None,
        gamma: float | None = None,
        batch: BatchMode = "auto",
        min_contrast: int | None = None,
        max_side: int | None = DEFAULT_MAX_SIDE,
        precision: str = "float32",
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        class_names: Sequence[str] | None = None,
        preprocess: Preprocessing | None = None,
        multilabel: bool | None = None,
        input_size: tuple[int, int] | None = None,
        layouts: Mapping[str, LayoutSpec] | LayoutSpec | None = None,
        merge_lookalikes: bool | None = None,
        gate: float | None = None,
    ) -> None:
        """Check the settings and resolve the preset and layers (the arguments: the class's)."""
        super().__init__(model, max_side, precision, {
            "layers": layers, "class_names": class_names, "preprocess": preprocess,
            "multilabel": multilabel, "input_size": input_size, "layouts": layouts}, max_pixels,
            get_rule(backprop))
        adapter = self.adapter
        self.preset = get_preset(preset)
        self.scales = check_scales(self.preset.scales if scales is None else scales)
        if adapter.input_size is not None and len(self.scales) > 1:
            if scales is not None:
                warnings.warn(f"model {adapter.name} takes one input size only "
                              f"({adapter.input_size[0]}x{adapter.input_size[1]}): scales "
                              f"{list(self.scales)} reduced to 1", DcsmWarning, stacklevel=2)
            self.scales = (1.0,)
        if layers is not None and len(layers) == 0:
            raise DcsmError("no layers requested")
        if layers is None:
            layers = self.preset.layers_for(adapter.name) or adapter.default_layers
        if not layers:
            raise DcsmError(f"name the layers for model {adapter.name}: layers=[module, "
                            "'dotted.path', ...], the deeper intermediate layers of the network")
        self.layers = [adapter.layer_name(layer) for layer in layers]
        adapter.resolve_layers(self.layers)  # fail early on unknown or repeated layers
        self.alpha = float(self.preset.alpha if alpha is None else alpha)
        if not np.isfinite(self.alpha) or self.alpha <= 0:
            raise DcsmError(f"alpha must be a positive number, got {alpha}")
        self.subtract = subtract
        self.upsample: UpsampleOrder = upsample or self.preset.upsample
        if self.upsample not in UPSAMPLE_ORDERS:
            raise DcsmError(f"unknown upsampling order '{self.upsample}'")
        self.reduce: ChannelReduction = reduce or self.preset.reduce
        if self.reduce not in CHANNEL_REDUCTIONS:
            raise DcsmError(f"unknown channel reduction '{self.reduce}'; known: "
                            f"{', '.join(CHANNEL_REDUCTIONS)}")
        self.gate = check_power(self.preset.gate if gate is None else gate)
        self.gamma = float(self.preset.gamma if gamma is None else gamma)
        if isinstance(gamma, bool) or not np.isfinite(self.gamma) or not 0 < self.gamma <= 16:
            raise DcsmError(f"gamma must be a number in (0, 16], got {gamma!r}")
        self.flip = self.preset.flip if flip is None else flip
        if not isinstance(self.flip, bool):
            raise DcsmError(f"flip must be True or False, got {flip!r}")
        if propagate is True:
            propagate = Propagation()
        self.propagate = self.preset.propagate if propagate is None else (propagate or None)
        if self.propagate is not None and not isinstance(self.propagate, Propagation):
            raise DcsmError("propagate must be a dcsm.pipeline.affinity.Propagation, True, "
                            "False or None, "
                            f"got {type(self.propagate).__name__}")
        self._affinity_layer = ""
        if self.propagate is not None and self.propagate.steps > 0:
            self._affinity_layer = self.propagate.layer or AUTO_LAYER
            if self._affinity_layer not in (*self.layers, AUTO_LAYER):
                raise DcsmError(f"the propagation layer '{self._affinity_layer}' is not one of "
                                f"the explainer's layers: {', '.join(self.layers)}")
        if batch not in ("auto", "loop", "vmap"):
            raise DcsmError(f"unknown batch mode '{batch}'; known: auto, loop, vmap")
        self.batch: BatchMode = batch
        self.min_contrast = self.preset.min_contrast if min_contrast is None else min_contrast
        if isinstance(self.min_contrast, bool) or not isinstance(self.min_contrast, int) \
                or self.min_contrast < 1:
            raise DcsmError(f"min_contrast must be a positive integer, got {min_contrast}")
        merge = self.preset.merge_lookalikes if merge_lookalikes is None else merge_lookalikes
        if not isinstance(merge, bool):
            raise DcsmError(f"merge_lookalikes must be True or False, got {merge_lookalikes!r}")
        self.merge_lookalikes = merge

    rule: BackpropRule

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
        """The distinct class saliency maps of ``image``'s candidate classes.

        The arguments: :meth:`dcsm.Explainer.explain`; ``per_layer`` also gives each layer's
        fused maps.
        """
        prepared = self.prepare_input(image)
        return self.result(prepared, *self._run(prepared, classes, top_k, threshold, per_layer))

    def _scales(self) -> tuple[float, ...]:
        return self.scales

    def _layers(self) -> list[str]:
        return self.layers

    def parameters(self) -> dict[str, object]:
        """The settings, as written to ``summary.json``.

        ``merge_lookalikes`` where it is on or the preset's default is on, so that the ``paper``
        and ``released`` settings read as before.
        """
        merge = {"merge_lookalikes": self.merge_lookalikes} \
            if self.merge_lookalikes or self.preset.merge_lookalikes else {}
        return {
            "preset": self.preset.name,
            "scales": list(self.scales),
            "layers": list(self.layers),
            "backprop": self.rule.name,
            "alpha": self.alpha,
            "subtract": self.subtract,
            "upsample": self.upsample,
            "reduce": self.reduce,
            "propagate": None if self.propagate is None else self.propagate.as_dict(),
            "flip": self.flip,
            "gamma": self.gamma,
            "gate": self.gate,
            "fusion": self.preset.fusion,
            "contrast": self.preset.contrast,
            "candidate_rule": self.preset.candidate_rule,
            "min_contrast": self.min_contrast,
            **merge,
            **super().parameters(),
        }

    #: At the scales after the one the candidates come from, compute only the classifier rows
    #: of the classes in the slots (:class:`dcsm.pipeline.speedups.head.HeadRestriction`).
    _restrict_head = True

    def _forward(self, x: torch.Tensor, scale: float,
                 head: HeadRestriction | None = None) -> ForwardPass:
        return forward_pass(self.adapter, scaled_input(self.adapter, x, scale), self.layers,
                            self.rule, autocast=self.autocast, head=head)

    def _layer_maps(self, fp: ForwardPass, targets: torch.Tensor,
                    size: tuple[int, int]) -> list[torch.Tensor]:
        """Per layer, the ``(N, K, H, W)`` maps of every image's class slots at one scale."""
        in_hw = (int(fp.input.shape[-2]), int(fp.input.shape[-1]))
        acts = list(fp.activations.values())
        layouts = [resolve_layout(tuple(a.shape), in_hw, self.adapter.layer_layout(name), name)
                   for name, a in fp.activations.items()]
        slots: list[list[torch.Tensor]] = [[] for _ in acts]
        grid_acts: list[torch.Tensor | None] = [None] * len(acts)
        if self.reduce == "grad_act":
            with torch.no_grad():
                grid_acts = [to_grid(a.detach().float(), layouts[i], in_hw, name)
                             for i, (a, name) in enumerate(zip(acts, fp.activations,
                                                               strict=True))]
        for grads in iter_class_gradients(fp, targets, acts, self.batch):
            with torch.no_grad():
                for i, (g, name) in enumerate(zip(grads, fp.activations, strict=True)):
                    g = to_grid(g.float(), layouts[i], in_hw, name)
                    if self.upsample == "max_first" or self.reduce != "max_abs":
                        # upsampled below, all slots at once
                        slots[i].append(reduce_channels(g, grid_acts[i], self.reduce))
                    else:
                        slots[i].append(layer_saliency(g, size, self.upsample))
        with torch.no_grad():
            stacked = [torch.stack(s, dim=1) for s in slots]
            # the reduced maps carry any NaN or infinity of the gradients (max and abs keep them)
            require_finite(stacked, f"the gradients of model {self.adapter.name} are",
                           self.autocast is not None)
            return [upsample(m, size) for m in stacked]

    def _run(self, prepared: Prepared, classes: ClassSpec, top_k: int | None,
             threshold: float | None, per_layer: bool
             ) -> tuple[torch.Tensor, list[Selection], dict[str, torch.Tensor] | None]:
        adapter = self.adapter
        x = prepared.x
        n = x.shape[0]
        ref = reference_scale(self.scales)
        choose = self.preset.candidate_rule

        def scores_only(scale: float) -> torch.Tensor:
            """The scale's score map from a forward that records no layer.

            Nothing in it requires gradients, so no graph is kept.
            """
            return forward_pass(adapter, scaled_input(adapter, x, scale), [], self.rule,
                                autocast=self.autocast).score_map.detach()

        # The paper's candidates come from the image as given: run that scale first, then each
        # other scale's forward and backward in turn, so one graph is alive at a time. The
        # released code's rule needs every scale's scores first: the other scales run a forward
        # without a graph for their scores now, and again with one when their turn comes.
        all_scales = choose == "any_scale"
        if all_scales:
            last = len(self.scales) - 1
            order = [last, *range(last)]
            passes = {last: self._forward(x, self.scales[last])}
            score_maps = [*(scores_only(self.scales[s]) for s in range(last)),
                          passes[last].score_map.detach()]
            probs = torch.stack([image_scores(adapter, m, choose) for m in score_maps],
                                dim=1)  # (N, S, C)
            ref_map = score_maps[ref].float()
            del score_maps
        else:
            order = [ref, *(s for s in range(len(self.scales)) if s != ref)]
            passes = {ref: self._forward(x, self.scales[ref])}
            probs = image_scores(adapter, passes[ref].score_map, choose).unsqueeze(1)
            ref_map = passes[ref].score_map.detach().float()  # (N, C, h, w)
        location = None
        if choose == "score_map" or self.merge_lookalikes:
            location = adapter.probabilities(ref_map.movedim(1, -1)).movedim(-1, 1)
        gate_scores = ref_map if self.gate else None  # (N, C, h, w)
        del ref_map
        wanted = per_image_classes(classes, n)
        selections = [
            select(adapter, probs[i], ref if all_scales else 0, wanted[i], top_k, threshold,
                   choose, self.min_contrast,
                   None if location is None else location[i], self.merge_lookalikes)
            for i in range(n)]
        uniform(selections)
        targets = torch.tensor([[c.index for c in s.contrast] for s in selections])
        active = torch.stack([s.active for s in selections])  # (N, S, K')
        # Only the candidates' scale needs every class's score: the other scales' forwards
        # (and the mirrored view's) compute the classifier rows of the slots' classes alone.
        head = None
        if self._restrict_head and not all_scales and (len(order) > 1 or self.flip):
            head = head_restriction(passes[ref], list(passes[ref].activations.values()),
                                    targets)
        fused, layers, head = self._fuse(x, passes, order, ref, targets, active, all_scales,
                                         head, per_layer)
        if self.flip:  # the mirror image, explained for the same classes and mirrored back
            mirrored, mirrored_layers, _ = self._fuse(x.flip(-1), {}, order, ref, targets,
                                                      active, all_scales, head, per_layer)
            with torch.no_grad():
                fused = (fused + mirrored.flip(-1)) / 2
                if layers is not None and mirrored_layers is not None:
                    layers = {name: (m + mirrored_layers[name].flip(-1)) / 2
                              for name, m in layers.items()}
        if gate_scores is not None:
            with torch.no_grad():
                fused = score_gate(fused, class_scores(gate_scores, targets), self.gate)
        if self.gamma != 1:
            with torch.no_grad():
                fused = sharpen(fused, self.gamma)
        return fused, selections, layers

    def _fuse(self, x: torch.Tensor, passes: dict[int, ForwardPass], order: list[int],
              ref: int, targets: torch.Tensor, active: torch.Tensor, all_scales: bool,
              head: HeadRestriction | None, per_layer: bool,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None, HeadRestriction | None]:
        """Eqs. 2 and 3 over the scales of one view of the images, then the propagation.

        The scales in ``order``, one scale's graph alive at a time (``passes``: forwards already
        run).

        Returns the fused maps, the per-layer maps (``per_layer``) and the head restriction
        still usable (None once the model resisted it).
        """
        size = (int(x.shape[-2]), int(x.shape[-1]))
        fusion_cls = PaperFusion if self.preset.fusion == "paper" else ReleasedFusion
        fusion = fusion_cls(len(self.layers), self.alpha, self.subtract, keep_layers=per_layer,
                            contrast=self.preset.contrast)
        features = None
        for s in order:
            fp, slots = passes.pop(s) if s in passes else None, targets
            if fp is None and head is not None:
                try:
                    fp, slots = self._forward(x, self.scales[s], head), head.targets
                except HeadRestrictionFailed:
                    head = None  # the model resists: every row from here on
            if fp is None:
                fp = self._forward(x, self.scales[s])
            maps = self._layer_maps(fp, slots, size)
            if s == ref and self._affinity_layer:
                features = self._grid_features(fp, self._affinity_layer)
            del fp  # free this scale's graph before the next forward
            act = active[:, s if all_scales else 0].to(x.device)
            with torch.no_grad():
                for i, m in enumerate(maps):
                    fusion.add(i, m, act)
            del maps
        layer_results = fusion.layer_results()
        layers = None if layer_results is None else dict(zip(self.layers, layer_results,
                                                             strict=True))
        fused = fusion.result()
        if features is not None:
            assert self.propagate is not None
            with torch.no_grad():
                fused = random_walk(fused, features, self.propagate)
        return fused, layers, head

    def _grid_features(self, fp: ForwardPass, name: str) -> torch.Tensor:
        """The ``(N, C, h, w)`` output of layer ``name`` in ``fp``, detached.

        For :data:`dcsm.pipeline.affinity.AUTO_LAYER`, the layer
        :func:`dcsm.pipeline.affinity.affinity_features` chooses.
        """
        in_hw = (int(fp.input.shape[-2]), int(fp.input.shape[-1]))
        grids = {}
        for layer in (fp.activations if name == AUTO_LAYER else [name]):
            act = fp.activations[layer].detach().float()
            layout = resolve_layout(tuple(act.shape), in_hw, self.adapter.layer_layout(layer),
                                    layer)
            grids[layer] = to_grid(act, layout, in_hw, layer)
        return affinity_features(list(grids.values()), in_hw)

    def _warn_empty(self, maps: torch.Tensor, selections: list[Selection]) -> None:
        if not self.subtract:
            return
        peaks = maps.amax(dim=(-2, -1)).cpu()
        for i, sel in enumerate(selections):
            if len(sel.contrast) < 2:
                continue
            for j, c in enumerate(sel.selected):
                if not peaks[i, j] > 0:
                    others = ", ".join(o.name for o in sel.contrast if o.name != c.name)
                    where = f" (image {i})" if len(selections) > 1 else ""
                    warnings.warn(
                        f"the distinct map of '{c.name}'{where} is zero everywhere: a class it "
                        f"is contrasted with ({others}) responds more strongly at every "
                        "location, as look-alike classes of one object do; contrast it with "
                        "fewer or other classes", DcsmWarning, stacklevel=3)
