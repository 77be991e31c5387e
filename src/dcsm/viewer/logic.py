"""What the viewer's page does, as plain functions: no web framework needed.

A :class:`Viewer` holds the model (loaded once) and the explainers built for it (one per method,
preset and layer set, built on first use). :meth:`Viewer.analyse` explains an image with
:class:`Settings` (the same :func:`dcsm.api.make_explainer` and :func:`dcsm.segmentation.segment`
the command line runs) and returns an :class:`Analysis`; the ``*_html`` functions and
:func:`write_downloads` turn an analysis into what the page shows and offers. Pictures are drawn
at most :data:`VIEW_SIDE` pixels a side; the downloads keep the photo's full size.
"""

from __future__ import annotations

import html
import inspect
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

import dcsm
from dcsm.api import make_explainer
from dcsm.errors import DcsmError
from dcsm.io import load_image, save_json, save_npz
from dcsm.methods.registry import DEFAULT_METHOD
from dcsm.methods.registry import get as get_method
from dcsm.pipeline.adapters import DEFAULT_MODEL
from dcsm.pipeline.candidates import Candidate, image_scores
from dcsm.pipeline.images import (
    DEFAULT_MAX_SIDE,
    image_input,
    scaled_input,
    shrink_image,
    shrink_map,
    working_size,
)
from dcsm.pipeline.presets import PRESETS, get_preset
from dcsm.pipeline.state import inference_state
from dcsm.segmentation import label_overlay, resize_labels, save_labels, segment, voc_palette

if TYPE_CHECKING:
    from dcsm.api import Settings as ExplainerSettings
    from dcsm.pipeline.adapters.base import ModelAdapter
    from dcsm.pipeline.base import Explainer
    from dcsm.pipeline.result import SaliencyResult
    from dcsm.segmentation import Segmentation

#: The image the page starts with (chelsea and coffee side by side).
BUNDLED_IMAGE = Path(dcsm.__file__).resolve().parent / "data" / "chelsea_coffee.png"
#: The long side, in pixels, of the pictures the page shows.
VIEW_SIDE = 768
#: How many of the model's most probable classes the page lists.
TOP_CLASSES = 10
#: The segmenters the page offers ("none": maps only).
SEGMENTERS: tuple[str, ...] = ("crf", "grabcut", "none")


@dataclass(frozen=True)
class Settings:
    """What the page's controls ask for.

    Attributes:
        method: ``dcsm``, ``simonyan``, ``guided`` or ``gradcam`` (:data:`dcsm.api.METHODS`,
            the methods of :mod:`dcsm.methods.registry` that have an explainer).
        preset: the dcsm preset (``paper``, ``released``, ``tuned``); None for the library's
            default (:func:`default_preset`); the baselines have none.
        layers: the layers the maps are read at; None, or the preset's layers for the model
            (:meth:`Viewer.preset_layers`), for the preset's own (Grad-CAM then reads its own
            default layer). The input-gradient baselines read no layer.
        classes: class names to explain; empty for the model's own top classes.
        top_k: how many classes to explain when ``classes`` is empty.
        segmenter: ``crf``, ``grabcut`` or ``none``.
    """

    method: str = DEFAULT_METHOD
    preset: str | None = None
    layers: tuple[str, ...] | None = None
    classes: tuple[str, ...] = ()
    top_k: int = 2
    segmenter: str = "crf"


@dataclass
class Analysis:
    """One explained image, as the page shows it.

    Attributes:
        result: the maps (with the image and the candidates' scores).
        segmentation: the labels, or None when no segmenter was asked for.
        top_classes: the model's :data:`TOP_CLASSES` most probable classes on the image.
        seconds: how long the explanation and segmentation took.
        settings: what produced it.
    """

    result: SaliencyResult
    segmentation: Segmentation | None
    top_classes: list[Candidate]
    seconds: float
    settings: Settings = field(default_factory=Settings)


def default_preset() -> str:
    """The preset :func:`dcsm.api.make_explainer` uses when none is named."""


    return str(inspect.signature(make_explainer).parameters["preset"].default)


def load_picture(path: str | Path | None) -> np.ndarray:
    """The RGB uint8 array of an image file (:func:`dcsm.io.load_image`, as the command line
    reads it), or a one-line :class:`DcsmError` saying why not."""

    if path is None or str(path) == "":
        raise DcsmError("no image: drop one on the page or pick a file")
    return load_image(path)


class Viewer:
    """The model, loaded once, and the explainers built for it.

    Args:
        adapter: the model (see :func:`dcsm.load_model`).
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = adapter
        self._explainers: dict[tuple[str, str, tuple[str, ...] | None], Explainer] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_name(cls, model: str | None = None, weights: str | None = None,
                  device: str = "cpu", labels: str | None = None) -> Viewer:
        """A viewer of a registry model (``--model``, default the default model; ``--weights``,
        ``--device``, ``--labels``: the class set, as :func:`dcsm.load_model` takes them)."""

        return cls(dcsm.load_model(model or DEFAULT_MODEL, weights=weights, device=device,
                                   labels=labels))

    @property
    def model_name(self) -> str:
        """The model's registry name."""
        return self.adapter.name

    @property
    def class_names(self) -> list[str]:
        """Every class the model knows, in its order."""
        return list(self.adapter.class_names)

    @property
    def default_layers(self) -> list[str]:
        """The layers the method reads by default."""
        return list(self.adapter.default_layers)

    def layer_choices(self) -> list[str]:
        """The layers the page offers: the model's named layers, in the model's order, then any
        of its default set or of a preset's set for it not named."""

        names = list(self.adapter.layer_aliases)
        for layer in [*self.default_layers, *(n for p in PRESETS for n in self.preset_layers(p))]:
            if layer not in names:
                names.append(layer)
        return names

    def preset_layers(self, preset: str | None = None) -> list[str]:
        """The layers a dcsm preset reads on this model (its own set for some models, else the
        model's default set)."""

        chosen = get_preset(preset or default_preset())
        return list(chosen.layers_for(self.model_name) or self.default_layers)

    def layers_for(self, settings: Settings) -> tuple[str, ...] | None:
        """The layers to hand :func:`~dcsm.api.make_explainer`: None for the preset's own set
        (Grad-CAM: for the model's or the preset's default set, so that it reads its own
        layer), and for the input-gradient baselines, which read none."""
        layers = settings.layers
        spec = get_method(settings.method)
        if spec.layers == "none" or layers is None:
            return None
        if not layers:
            raise DcsmError("choose at least one layer")
        defaults = [set(self.preset_layers(settings.preset))]
        if spec.layers == "one":
            defaults.append(set(self.default_layers))
        if set(layers) in defaults:
            return None
        return tuple(layers)

    def explainer(self, settings: Settings) -> Explainer:
        """The explainer of ``settings``' method, preset and layers, built once."""

        layers = self.layers_for(settings)
        takes_preset = get_method(settings.method).takes_preset
        preset = (settings.preset or default_preset()) if takes_preset else ""
        key = (settings.method, preset, layers)
        if key not in self._explainers:
            options: ExplainerSettings = {"layers": list(layers) if layers else None,
                                          "max_side": DEFAULT_MAX_SIDE}
            if takes_preset:
                options["preset"] = preset
            self._explainers[key] = make_explainer(self.adapter, settings.method, **options)
        return self._explainers[key]

    def top_classes(self, image: np.ndarray, k: int = TOP_CLASSES) -> list[Candidate]:
        """The model's ``k`` most probable classes on the image at scale 1 (at the working
        resolution), with their probabilities."""


        size = working_size(image.shape[0], image.shape[1], DEFAULT_MAX_SIDE)
        x = scaled_input(self.adapter, image_input(self.adapter, image, size), 1.0)
        with torch.no_grad(), inference_state(self.adapter.model):
            probs = image_scores(self.adapter, self.adapter.model(x))[0].cpu()
        top = torch.topk(probs, min(k, probs.numel()))
        return [Candidate(int(i), self.adapter.class_names[int(i)], float(p))
                for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]

    def analyse(self, image: np.ndarray, settings: Settings) -> Analysis:
        """Explain (and segment) ``image`` as ``settings`` ask; one request at a time.

        Raises:
            DcsmError: for settings the method refuses (unknown class, bad layer, ...).
        """

        if settings.segmenter not in SEGMENTERS:
            raise DcsmError(f"unknown segmenter '{settings.segmenter}'; known: "
                            f"{', '.join(SEGMENTERS)}")
        if not 1 <= int(settings.top_k) <= 20:
            raise DcsmError(f"top-k must be from 1 to 20, got {settings.top_k}")
        with self._lock:
            start = time.perf_counter()
            explainer = self.explainer(settings)
            classes = list(settings.classes) if settings.classes else "auto"
            result = explainer.explain(image, classes=classes, top_k=int(settings.top_k),
                                       per_layer=get_method(settings.method).per_layer)
            seg = None if settings.segmenter == "none" else segment(
                result, segmenter=settings.segmenter)
            seconds = time.perf_counter() - start
            top = self.top_classes(image)
        return Analysis(result, seg, top, seconds, settings)


# ----------------------------------------------------------------------------- what is shown
def _small(analysis: Analysis) -> np.ndarray:

    return shrink_image(analysis.result.image, VIEW_SIDE)


def class_maps_html(analysis: Analysis, opacity: float = 0.5, cmap: str = "viridis") -> str:
    """Each class's map over the photo (``<img alt=class>`` captioned ``class score``), in a
    ``div`` with id ``class-maps``."""
    # matplotlib (dcsm.io.viz): loaded when a page is drawn, not when the viewer starts
    from dcsm.io.viz import check_colormap, check_opacity, html_gallery, overlay

    alpha, cmap = check_opacity(opacity), check_colormap(cmap)
    small = _small(analysis)
    scores = {c.name: c.score for c in analysis.result.candidates}
    items = [(name, f"{name} {scores.get(name, float('nan')):.3f}",
              overlay(small, shrink_map(m, VIEW_SIDE), alpha, cmap))
             for name, m in analysis.result.maps.items()]
    return html_gallery(items, title="Each class's map over the photo",
                        element_id="class-maps", width=360)


def layer_maps_html(analysis: Analysis, opacity: float = 0.5, cmap: str = "viridis") -> str:
    """Every single-layer map over the photo, one row per class (``<img alt="class / layer">``),
    in a ``div`` with id ``layer-maps``; a sentence where the method has none."""
    # matplotlib (dcsm.io.viz): loaded when a page is drawn, not when the viewer starts
    from dcsm.io.viz import check_colormap, check_opacity, html_gallery, overlay

    per_layer = analysis.result.layer_maps
    if not per_layer:
        return ('<p id="layer-maps">Per-layer maps come with the dcsm method; '
                f"{html.escape(analysis.result.method)} reads no set of layers.</p>")
    alpha, cmap = check_opacity(opacity), check_colormap(cmap)
    side = min(VIEW_SIDE, 256)
    tiny = shrink_image(_small(analysis), side)
    rows = []
    for name, layers in per_layer.items():
        items = [(f"{name} / {layer}", layer, overlay(tiny, shrink_map(m, side), alpha, cmap))
                 for layer, m in layers.items()]
        rows.append(html_gallery(items, title=name, width=170))
    return '<div id="layer-maps">' + "".join(rows) + "</div>"


def segmentation_html(analysis: Analysis) -> str:
    """The labels over the photo (VOC colours, background darkened) with a legend of colours
    and pixel counts, in a ``div`` with id ``segmentation``."""
    # matplotlib (dcsm.io.viz): loaded when a page is drawn, not when the viewer starts
    from dcsm.io.viz import html_gallery

    seg = analysis.segmentation
    if seg is None:
        return '<p id="segmentation">No segmentation asked for.</p>'
    small = _small(analysis)
    labels = resize_labels(seg.labels, (small.shape[0], small.shape[1]))
    counts = seg.summary()["pixels"]
    assert isinstance(counts, dict)  # {label name: pixel count}
    palette = voc_palette(len(seg.candidates) + 1)
    legend = "".join(
        f'<span style="display:inline-block;margin-right:1em">'
        f'<span style="display:inline-block;width:0.9em;height:0.9em;vertical-align:middle;'
        f'background:rgb({",".join(str(int(c)) for c in palette[v])})"></span> '
        f"{html.escape(name)}: {counts[name]} px</span>"
        for v, name in seg.label_names().items())
    gallery = html_gallery([("segmentation", f"{seg.method} labels",
                             label_overlay(small, labels))], title="Segmentation", width=480)
    return f'<div id="segmentation">{gallery}<p>{legend}</p></div>'


def scores_markdown(analysis: Analysis) -> str:
    """The explained classes and the model's top classes, with their scores, as a table."""
    explained = {c.name for c in analysis.result.candidates}
    lines = [f"**{len(explained)} class{'es' if len(explained) != 1 else ''} explained** "
             f"({analysis.result.method}, {analysis.seconds:.1f} s). The model's most probable "
             "classes on this image; pick any class in *Classes* to explain it.", "",
             "| class | score | explained |", "|---|---|---|"]
    shown = set()
    for c in [*analysis.result.candidates, *analysis.top_classes]:
        if c.name in shown:
            continue
        shown.add(c.name)
        mark = "yes" if c.name in explained else ""
        lines.append(f"| {_md(c.name)} | {c.score:.3f} | {mark} |")
    return "\n".join(lines)


def _md(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return html.escape(text).replace("|", "&#124;")


def write_downloads(analysis: Analysis, directory: str | Path | None = None) -> list[Path]:
    """Write ``maps.npz``, ``summary.json`` and (with a segmentation) ``labels.png`` as the
    command line writes them (:mod:`dcsm.io`, full size), in a new folder under ``directory``
    (the system's temporary folder by default); returns their paths."""
    folder = Path(tempfile.mkdtemp(prefix="dcsm-viewer-", dir=directory))
    save_npz(folder / "maps.npz", analysis.result.maps)
    summary = analysis.result.summary()
    paths = [folder / "maps.npz"]
    if analysis.segmentation is not None:
        save_labels(folder / "labels.png", analysis.segmentation.labels)
        summary["segmentation"] = analysis.segmentation.summary()
        paths.append(folder / "labels.png")
    save_json(folder / "summary.json", summary)
    paths.append(folder / "summary.json")
    return paths


def error_markdown(exc: BaseException) -> str:
    """A refused request as the page says it: one line, no traceback."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"**Error:** {html.escape(text, quote=False)}"
