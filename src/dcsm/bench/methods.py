"""The methods the grid pointing game compares, each behind one small interface.

A method turns an image and the classes to explain into one map per class, at the image's size
(a :data:`MapFunction`). Classes a method gives no map for (dcsm with automatically chosen
candidates that miss a class) are simply absent from the returned dict and score 0.

dcsm's own methods: the method with its ``paper``, ``released`` and ``tuned`` presets, the paper
preset without the class contrast, and its baselines (Simonyan et al.'s input gradient, guided
back-propagation, Grad-CAM). The peers run through their own public APIs on the same model,
given a module that returns logits ``(N, C)`` (the adapter's fully convolutional model followed
by its pooling, :class:`Logits`) and the adapter's preprocessing:

* Captum: ``Saliency`` (absolute input gradient) and ``GuidedBackprop``; both reduced over the
  colour channels by the largest absolute value, as dcsm's input-gradient baselines. Captum's
  guided rule only replaces ``nn.ReLU`` modules, so on EfficientNet-Lite (``nn.ReLU6``) its
  ``GuidedBackprop`` is a plain gradient.
* pytorch-grad-cam: ``GradCAM`` at the layer dcsm's Grad-CAM reads, ``GradCAM`` over the
  model's default dcsm layers (the library averages its per-layer maps), ``LayerCAM`` over those
  layers, and ``FinerCAM`` (its contrastive variant: the class score minus the other candidates'
  scores, weighted by their probabilities) at the Grad-CAM layer.
* TorchCAM: ``GradCAM`` and ``LayerCAM`` at the Grad-CAM layer.

Peers are called once per image with the image repeated once per class in the batch (each copy
with its own target), which is how their APIs explain several classes in one call.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter

MapFunction = Callable[[np.ndarray, Sequence[int]], dict[int, np.ndarray]]
Candidates = Literal["oracle", "target", "auto"]
#: What contrastive methods (dcsm, FinerCAM) are told about the classes to tell apart, with k the
#: number of cells:
#:
#: * ``oracle``: the cell's class and every other cell's class;
#: * ``target``: the cell's class only, as a user who asks about one class; the method picks the
#:   k - 1 classes it contrasts it with (dcsm: the explainer's ``min_contrast = k``, topped up by
#:   the preset's candidate rule; FinerCAM: the image's most probable other classes);
#: * ``auto``: nothing; the method explains k classes it picks itself (dcsm: its preset's
#:   candidate rule with ``top_k = k``; FinerCAM: the k most probable), and a cell whose class is
#:   not among them gets no map (score 0).
CANDIDATE_MODES: tuple[str, ...] = ("oracle", "target", "auto")
#: The modes ``dcsm bench gridpg`` runs by default. (``target`` takes one explanation per cell:
#: on 3x3 grids, with the paper's four scales, most of a run's time; ask for it with
#: ``--candidates``.)
DEFAULT_MODES: tuple[str, ...] = ("oracle", "target", "auto")
DEFAULT_MODES_3X3: tuple[str, ...] = ("oracle", "auto")


@dataclass(frozen=True)
class MethodSpec:
    """One method of the benchmark.

    ``key`` names it on the command line; ``label`` in tables; ``source`` is the library that
    computes it (``dcsm``, ``captum``, ``pytorch-grad-cam``, ``torchcam``); ``contrastive``
    methods depend on the other classes, so they run once per candidate mode; ``requires`` is
    the module that must be importable; ``build(adapter, mode)`` returns the map function.
    """

    key: str
    label: str
    source: str
    contrastive: bool
    requires: str
    build: Callable[[ModelAdapter, Candidates], MapFunction]
    requires_name: str = ""

    def available(self) -> bool:
        """Whether the library it needs is installed (and has ``requires_name``, if given)."""
        if importlib.util.find_spec(self.requires) is None:
            return False
        if self.requires_name:
            return hasattr(importlib.import_module(self.requires), self.requires_name)
        return True


class Logits(nn.Module):
    """The adapter's fully convolutional model followed by its pooling: ``(N, C)`` logits."""

    def __init__(self, adapter: ModelAdapter) -> None:
        super().__init__()
        self.fcn = adapter.model
        self.pooling = adapter.pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) preprocessed images -> (N, C) logits."""
        s = self.fcn(x)
        return s.amax(dim=(2, 3)) if self.pooling == "max" else s.mean(dim=(2, 3))


# --------------------------------------------------------------------------- dcsm's own
def _result_maps(result: object, classes: Sequence[int]) -> dict[int, np.ndarray]:
    by_index = {c.index: result.maps[c.name] for c in result.candidates}  # type: ignore[attr-defined]
    return {c: by_index[c] for c in classes if c in by_index}


@torch.no_grad()
def pooled_ranking(adapter: ModelAdapter, image: np.ndarray, k: int) -> list[int]:
    """The ``k`` most probable classes of the image as a whole (pooled scores at scale 1)."""
    from dcsm.pipeline.images import model_input

    scores = adapter.pool(adapter.model(model_input(adapter, image, 1.0)))[0]
    return scores.topk(min(k, scores.numel())).indices.tolist()


def contrast_sets(adapter: ModelAdapter, image: np.ndarray, classes: Sequence[int],
                  mode: Candidates) -> dict[int, list[int] | None]:
    """For a peer's contrastive method, the classes each class of ``classes`` is contrasted with
    under ``mode`` (itself excluded), from the image's pooled ranking, or None where the mode
    gives it no map (see :data:`CANDIDATE_MODES`)."""
    k = len(classes)
    if mode == "oracle":
        return {c: [o for o in classes if o != c] for c in classes}
    ranked = pooled_ranking(adapter, image, k + 1)
    if mode == "target":
        return {c: [o for o in ranked if o != c][:k - 1] for c in classes}
    top = ranked[:k]
    return {c: [o for o in top if o != c] if c in top else None for c in classes}


def dcsm_method(preset: str, subtract: bool = True) -> Callable[[ModelAdapter, Candidates], MapFunction]:  # noqa: E501
    """dcsm with ``preset``; the classes it contrasts depend on the mode (see
    :data:`CANDIDATE_MODES`): given (``oracle``), the named class topped up by the preset's own
    candidate rule (``target``), or chosen by that rule (``auto``)."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        from dcsm.pipeline.explainer import DistinctSaliency

        explainer = DistinctSaliency(adapter, preset=preset, subtract=subtract)
        by_size: dict[int, DistinctSaliency] = {}

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            k = len(classes)
            if mode == "oracle":
                return _result_maps(explainer.explain(image, classes=list(classes)), classes)
            if mode == "auto":
                return _result_maps(explainer.explain(image, classes="auto", top_k=k), classes)
            if k not in by_size:
                by_size[k] = DistinctSaliency(
                    adapter, preset=preset, subtract=subtract,
                    min_contrast=max(k, explainer.preset.min_contrast))
            return {c: _result_maps(by_size[k].explain(image, classes=[c]), [c])[c]
                    for c in classes}

        return run

    return build


def baseline_method(method: str) -> Callable[[ModelAdapter, Candidates], MapFunction]:
    """One of dcsm's baselines (``simonyan``, ``guided``, ``gradcam``)."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        from dcsm.api import make_explainer

        explainer = make_explainer(adapter, method)

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            return _result_maps(explainer.explain(image, classes=list(classes)), classes)

        return run

    return build


# --------------------------------------------------------------------------- peers
def _batch(adapter: ModelAdapter, image: np.ndarray, k: int) -> torch.Tensor:
    x = adapter.preprocess(image).to(adapter.device)
    return x.expand(k, -1, -1, -1).contiguous()


def _to_image(maps: torch.Tensor | np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(K, h, w) maps -> (K, H, W) float32 numpy, bilinearly resized if needed."""
    t = torch.as_tensor(np.asarray(maps) if isinstance(maps, np.ndarray) else maps.detach())
    t = t.float().cpu()
    if tuple(t.shape[-2:]) != tuple(size):
        t = F.interpolate(t[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return t.numpy().astype(np.float32)


def _gradcam_module(adapter: ModelAdapter) -> nn.Module:
    layer = adapter.gradcam_layer or adapter.default_layers[-1]
    return adapter.resolve_layers([layer])[layer]


def _default_modules(adapter: ModelAdapter) -> list[nn.Module]:
    return list(adapter.resolve_layers(adapter.default_layers).values())


def captum_method(kind: Literal["saliency", "guided"]) -> Callable[[ModelAdapter, Candidates], MapFunction]:  # noqa: E501
    """Captum's ``Saliency`` or ``GuidedBackprop``, max |.| over colour channels."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        from captum.attr import GuidedBackprop, Saliency

        model = Logits(adapter).eval()

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            x = _batch(adapter, image, len(classes))
            with warnings.catch_warnings():  # Captum's notes on hooks and requires_grad
                warnings.simplefilter("ignore", UserWarning)
                if kind == "saliency":
                    attr = Saliency(model).attribute(x, target=list(classes), abs=True)
                else:
                    attr = GuidedBackprop(model).attribute(x, target=list(classes))
            model.zero_grad(set_to_none=True)
            maps = attr.detach().abs().amax(dim=1)
            return dict(zip(classes, _to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


def grad_cam_method(kind: Literal["gradcam", "gradcam_layers", "layercam_layers", "finercam"]
                    ) -> Callable[[ModelAdapter, Candidates], MapFunction]:
    """pytorch-grad-cam's ``GradCAM`` (Grad-CAM layer or dcsm's layers), ``LayerCAM`` (dcsm's
    layers) or ``FinerCAM`` (Grad-CAM layer; compared with the other candidates)."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        import pytorch_grad_cam as pgc
        from pytorch_grad_cam.utils.model_targets import (
            ClassifierOutputTarget,
            FinerWeightedTarget,
        )

        model = Logits(adapter).eval()
        layers = _default_modules(adapter) if kind.endswith("_layers") else [
            _gradcam_module(adapter)]
        cls = pgc.LayerCAM if kind == "layercam_layers" else pgc.GradCAM

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            classes = list(classes)
            x = _batch(adapter, image, len(classes))
            if kind == "finercam":
                sets = contrast_sets(adapter, image, classes, mode)
                classes = [c for c in classes if sets[c]]  # classes the mode gives no map: out
                if not classes:
                    return {}
                targets = [FinerWeightedTarget(c, sets[c], 1.0) for c in classes]
                with pgc.FinerCAM(model, layers) as cam:
                    maps = cam(input_tensor=x[:len(classes)], targets=targets)
            else:
                targets = [ClassifierOutputTarget(c) for c in classes]
                with cls(model=model, target_layers=layers) as cam:
                    maps = cam(input_tensor=x, targets=targets)
            model.zero_grad(set_to_none=True)
            return dict(zip(classes, _to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


def torchcam_method(kind: Literal["gradcam", "layercam"]) -> Callable[[ModelAdapter, Candidates], MapFunction]:  # noqa: E501
    """TorchCAM's ``GradCAM`` or ``LayerCAM`` at the Grad-CAM layer, bilinearly upsampled."""

    def build(adapter: ModelAdapter, mode: Candidates) -> MapFunction:
        from torchcam.methods import GradCAM, LayerCAM

        model = Logits(adapter).eval()
        layer = _gradcam_module(adapter)
        cls = GradCAM if kind == "gradcam" else LayerCAM

        def run(image: np.ndarray, classes: Sequence[int]) -> dict[int, np.ndarray]:
            classes = list(classes)
            x = _batch(adapter, image, len(classes))
            with cls(model, target_layer=layer) as extractor:
                scores = model(x)
                (maps,) = extractor(class_idx=classes, scores=scores)
            model.zero_grad(set_to_none=True)
            return dict(zip(classes, _to_image(maps, image.shape[:2]), strict=True))

        return run

    return build


METHODS: tuple[MethodSpec, ...] = (
    MethodSpec("dcsm-paper", "dcsm (paper preset)", "dcsm", True, "dcsm", dcsm_method("paper")),
    MethodSpec("dcsm-released", "dcsm (released preset)", "dcsm", True, "dcsm",
               dcsm_method("released")),
    MethodSpec("dcsm-tuned", "dcsm (tuned preset)", "dcsm", True, "dcsm", dcsm_method("tuned")),
    MethodSpec("dcsm-no-subtract", "dcsm, no subtraction", "dcsm", False, "dcsm",
               dcsm_method("paper", subtract=False)),
    MethodSpec("dcsm-tuned-no-subtract", "dcsm (tuned preset), no subtraction", "dcsm", False,
               "dcsm", dcsm_method("tuned", subtract=False)),
    MethodSpec("simonyan", "Simonyan et al. (dcsm)", "dcsm", False, "dcsm",
               baseline_method("simonyan")),
    MethodSpec("guided", "guided backprop (dcsm)", "dcsm", False, "dcsm",
               baseline_method("guided")),
    MethodSpec("gradcam", "Grad-CAM (dcsm)", "dcsm", False, "dcsm", baseline_method("gradcam")),
    MethodSpec("captum-saliency", "Captum Saliency", "captum", False, "captum",
               captum_method("saliency")),
    MethodSpec("captum-guided", "Captum GuidedBackprop", "captum", False, "captum",
               captum_method("guided")),
    MethodSpec("pgc-gradcam", "pytorch-grad-cam GradCAM", "pytorch-grad-cam", False,
               "pytorch_grad_cam", grad_cam_method("gradcam")),
    MethodSpec("pgc-gradcam-layers", "pytorch-grad-cam GradCAM, dcsm's layers",
               "pytorch-grad-cam", False, "pytorch_grad_cam", grad_cam_method("gradcam_layers")),
    MethodSpec("pgc-layercam-layers", "pytorch-grad-cam LayerCAM, dcsm's layers",
               "pytorch-grad-cam", False, "pytorch_grad_cam", grad_cam_method("layercam_layers")),
    MethodSpec("pgc-finercam", "pytorch-grad-cam FinerCAM", "pytorch-grad-cam", True,
               "pytorch_grad_cam", grad_cam_method("finercam"), "FinerCAM"),
    MethodSpec("torchcam-gradcam", "TorchCAM GradCAM", "torchcam", False, "torchcam",
               torchcam_method("gradcam")),
    MethodSpec("torchcam-layercam", "TorchCAM LayerCAM", "torchcam", False, "torchcam",
               torchcam_method("layercam")),
)


def method_keys() -> list[str]:
    """Every method's key, in table order."""
    return [m.key for m in METHODS]


def get_methods(keys: Sequence[str] | None = None) -> list[MethodSpec]:
    """The methods named (all by default); DcsmError for an unknown key, or for a named method
    whose library is not installed. Unnamed methods whose library is missing are left out."""
    by_key = {m.key: m for m in METHODS}
    if keys is None:
        return [m for m in METHODS if m.available()]
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise DcsmError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(by_key)}")
    chosen = [by_key[k] for k in dict.fromkeys(keys)]
    missing = [m for m in chosen if not m.available()]
    if missing:
        raise DcsmError(f"method {missing[0].key} needs the package '{missing[0].requires}': "
                        "pip install 'distinct-saliency[bench]'")
    return chosen
