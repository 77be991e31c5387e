"""dcsm: distinct class saliency maps for multi-object images (Shimoda & Yanai).

The public API::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.explain(adapter, "image.jpg", classes="auto")
    result.maps  # {class name: (H, W) float32 map in [0, 1]}

    model = torchvision.models.resnet50(weights=...)   # or any classifier nn.Module
    out = dcsm.explain(model, batch, classes=[[1, 2], [3, 4]], layers=[model.layer4])
    out.maps  # (N, K, H, W) tensor on batch's device

The method's stages, in the paper's order, are the modules of :mod:`dcsm.pipeline`; the
explanation methods (dcsm, its baselines and the benchmarks' peers) are in the registry of
:mod:`dcsm.methods`, every explainer an :class:`Explainer`; input and output in
:mod:`dcsm.io`; :mod:`dcsm.api` gives ``explain`` and ``make_explainer`` and
:mod:`dcsm.segmentation` the dense CRF and GrabCut masks (``dcsm.segment(result)``).
"""

from __future__ import annotations

from dcsm.api import METHODS, Explainer, explain, make_explainer
from dcsm.errors import DcsmError, DcsmWarning
from dcsm.io import load_image
from dcsm.methods import GradCAM, InputGradient
from dcsm.pipeline.adapters import (
    DEFAULT_MODEL,
    ModelAdapter,
    Preprocessing,
    as_adapter,
    list_models,
    load_model,
)
from dcsm.pipeline.candidates import Candidate
from dcsm.pipeline.explainer import DistinctSaliency
from dcsm.pipeline.presets import PRESETS, Preset
from dcsm.pipeline.result import BatchResult, SaliencyResult
from dcsm.pipeline.rules import BackpropRule, GuidedRule, PlainRule
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
