"""dcsm: distinct class saliency maps for multi-object images (Shimoda & Yanai).

The public API::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.explain(adapter, "image.jpg", classes="auto")
    result.maps  # {class name: (H, W) float32 map in [0, 1]}

Pipeline modules, in the paper's order: :mod:`dcsm.adapters` (model adapters), :mod:`dcsm.rules`
(back-propagation rules), :mod:`dcsm.gradients` (one forward, batched backward),
:mod:`dcsm.layer_maps` (per-layer maps), :mod:`dcsm.contrast` (Eq. 2), :mod:`dcsm.fusion`
(Eq. 3), :mod:`dcsm.explainer` (the method), :mod:`dcsm.baselines` (Simonyan et al., guided
back-propagation, Grad-CAM), :mod:`dcsm.segmentation` (dense CRF and GrabCut from the maps:
``dcsm.segment(result)``).
"""

from __future__ import annotations

from dcsm.adapters import DEFAULT_MODEL, ModelAdapter, Preprocessing, list_models, load_model
from dcsm.baselines import METHODS, GradCAM, InputGradient, explain, make_explainer
from dcsm.candidates import Candidate
from dcsm.errors import DcsmError, DcsmWarning
from dcsm.explainer import DistinctSaliency
from dcsm.io import load_image
from dcsm.presets import PRESETS, Preset
from dcsm.result import SaliencyResult
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
    "CRFParams",
    "Candidate",
    "DcsmError",
    "DcsmWarning",
    "DistinctSaliency",
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
    "explain",
    "list_models",
    "load_image",
    "load_model",
    "make_explainer",
    "segment",
    "segment_crf",
    "segment_grabcut",
]
