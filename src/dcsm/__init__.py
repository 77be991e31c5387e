"""dcsm: distinct class saliency maps for multi-object images (Shimoda & Yanai).

The public API::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.explain(adapter, "image.jpg", classes="auto")
    result.maps  # {class name: (H, W) float32 map in [0, 1]}

    model = torchvision.models.resnet50(weights=...)   # or any classifier nn.Module
    out = dcsm.explain(model, batch, classes=[[1, 2], [3, 4]], layers=[model.layer4])
    out.maps  # (N, K, H, W) tensor on batch's device

Pipeline modules, in the paper's order: :mod:`dcsm.adapters` (model adapters), :mod:`dcsm.rules`
(back-propagation rules), :mod:`dcsm.gradients` (one forward, batched backward),
:mod:`dcsm.layer_maps` (per-layer maps), :mod:`dcsm.contrast` (Eq. 2), :mod:`dcsm.fusion`
(Eq. 3), :mod:`dcsm.explainer` (the method), :mod:`dcsm.baselines` (Simonyan et al., guided
back-propagation, Grad-CAM), :mod:`dcsm.api` (``explain``, ``make_explainer``),
:mod:`dcsm.segmentation` (dense CRF and GrabCut from the maps:
``dcsm.segment(result)``).
"""

from __future__ import annotations

from dcsm.adapters import (
    DEFAULT_MODEL,
    ModelAdapter,
    Preprocessing,
    as_adapter,
    list_models,
    load_model,
)
from dcsm.api import METHODS, Explainer, explain, make_explainer
from dcsm.baselines import GradCAM, InputGradient
from dcsm.candidates import Candidate
from dcsm.errors import DcsmError, DcsmWarning
from dcsm.explainer import DistinctSaliency
from dcsm.io import load_image
from dcsm.presets import PRESETS, Preset
from dcsm.result import BatchResult, SaliencyResult
from dcsm.rules import BackpropRule, GuidedRule, PlainRule
from dcsm.segmentation import (
    SEGMENTERS,
    CRFParams,
    GrabCutParams,
    Segmentation,
    segment,
    segment_crf,
    segment_grabcut,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "METHODS",
    "PRESETS",
    "SEGMENTERS",
    "BackpropRule",
    "BatchResult",
    "CRFParams",
    "Candidate",
    "DcsmError",
    "DcsmWarning",
    "DistinctSaliency",
    "Explainer",
    "GrabCutParams",
    "GradCAM",
    "GuidedRule",
    "InputGradient",
    "ModelAdapter",
    "PlainRule",
    "Preprocessing",
    "Preset",
    "SaliencyResult",
    "Segmentation",
    "as_adapter",
    "explain",
    "list_models",
    "load_image",
    "load_model",
    "make_explainer",
    "segment",
    "segment_crf",
    "segment_grabcut",
]
