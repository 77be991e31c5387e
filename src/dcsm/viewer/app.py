"""The viewer's page, built with Gradio (the optional extra ``viewer``).

Gradio is imported only by :func:`require_gradio` and the functions that build or start the
page, so this module imports without it. The page runs everything through
:mod:`dcsm.viewer.logic`; its handlers only translate between the page's controls and those
functions, and show a refused request (a bad image, an unknown class, a layer Grad-CAM cannot
read, ...) as one line in the page's status box instead of failing.

Nothing is fetched from elsewhere: Gradio's page, scripts and fonts are served from the
installed package, its usage analytics are turned off, and the page listens on 127.0.0.1
unless told otherwise.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dcsm.errors import DcsmError
from dcsm.viewer.logic import (
    BUNDLED_IMAGE,
    SEGMENTERS,
    Analysis,
    Settings,
    Viewer,
    class_maps_html,
    error_markdown,
    layer_maps_html,
    load_picture,
    scores_markdown,
    segmentation_html,
    write_downloads,
)

if TYPE_CHECKING:
    import numpy as np

__all__ = ["INSTALL_HINT", "build_app", "launch", "require_gradio"]

#: What to run when the extra is missing.
INSTALL_HINT = "pip install 'distinct-saliency[viewer]'"
#: Shown before the first explanation.
WELCOME = ("Pick or drop an image (the bundled one is loaded), choose the settings, press "
           "**Explain**.")


def require_gradio() -> Any:  # noqa: ANN401 - the gradio module
    """Import Gradio, with analytics off; a one-line :class:`DcsmError` naming the extra to
    install when it is missing."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio
    except ImportError:
        raise DcsmError(f"the viewer needs Gradio, which is not installed: {INSTALL_HINT}"
                        ) from None
    return gradio


# ----------------------------------------------------------------------------- handlers
def show_photo(path: str | None) -> tuple[np.ndarray | None, str]:
    """The picked file as the page's preview and a status line (the error, if unreadable)."""
    try:
        return load_picture(path), WELCOME
    except DcsmError as exc:
        return None, error_markdown(exc)


def run_explain(viewer: Viewer, path: str | None, classes: list[str] | None, top_k: float,
                method: str, preset: str, layers: list[str] | None, segmenter: str,
                opacity: float, cmap: str) -> tuple[Any, ...]:
    """The Explain button: ``(analysis, status, class maps, scores, layer maps, segmentation,
    downloads)``; a refused request leaves the analysis empty and says why in the status."""
    try:
        image = load_picture(path)
        settings = Settings(method=method, preset=preset,
                            layers=tuple(layers) if layers is not None else None,
                            classes=tuple(classes or ()), top_k=int(top_k), segmenter=segmenter)
        analysis = viewer.analyse(image, settings)
        names = ", ".join(f"{c.name} {c.score:.3f}" for c in analysis.result.candidates)
        status = f"Explained with {analysis.result.method} ({viewer.model_name}): {names}"
        return (analysis, status, class_maps_html(analysis, opacity, cmap),
                scores_markdown(analysis), layer_maps_html(analysis, opacity, cmap),
                segmentation_html(analysis), [str(p) for p in write_downloads(analysis)])
    except (DcsmError, RuntimeError, ValueError) as exc:
        return None, error_markdown(exc), "", "", "", "", None


def redraw(analysis: Analysis | None, opacity: float, cmap: str) -> tuple[str, str]:
    """The opacity slider and colormap: the class and layer maps drawn again, without
    explaining again."""
    if analysis is None:
        return "", ""
    try:
        return class_maps_html(analysis, opacity, cmap), layer_maps_html(analysis, opacity, cmap)
    except DcsmError as exc:
        return error_markdown(exc), ""


# ----------------------------------------------------------------------------- the page
def build_app(viewer: Viewer) -> Any:  # noqa: ANN401 - a gradio.Blocks
    """The page for ``viewer``'s model, as a ``gradio.Blocks`` (not started)."""
    gr = require_gradio()
    from dcsm.api import METHODS
    from dcsm.presets import PRESETS
    from dcsm.viz import SUGGESTED_COLORMAPS

    with gr.Blocks(title="dcsm viewer", analytics_enabled=False) as app:
        gr.Markdown(f"## dcsm: distinct class saliency maps\nModel **{viewer.model_name}**, "
                    "loaded once; every map is computed by the same code as `dcsm explain`.")
        analysis = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1, min_width=320):
                upload = gr.File(value=str(BUNDLED_IMAGE), label="Image (drop or pick a file)",
                                 file_types=["image"], type="filepath", elem_id="upload")
                photo = gr.Image(value=load_picture(BUNDLED_IMAGE), label="Photo",
                                 interactive=False, elem_id="photo", height=220)
                classes = gr.Dropdown(viewer.class_names, value=[], multiselect=True,
                                      label="Classes (empty: the model's top classes)",
                                      elem_id="classes")
                top_k = gr.Slider(1, 5, value=2, step=1, label="Top classes (when none picked)",
                                  elem_id="top-k")
                method = gr.Radio(list(METHODS), value="dcsm", label="Method",
                                  elem_id="method")
                preset = gr.Radio(list(PRESETS), value="paper", label="Preset (dcsm)",
                                  elem_id="preset")
                layers = gr.CheckboxGroup(viewer.layer_choices(), value=viewer.default_layers,
                                          label="Layers (dcsm; Grad-CAM: one, or the default)",
                                          elem_id="layers")
                segmenter = gr.Radio(list(SEGMENTERS), value="crf", label="Segmentation",
                                     elem_id="segmenter")
                explain = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column(scale=2):
                status = gr.Markdown(WELCOME, elem_id="status")
                with gr.Row():
                    opacity = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity",
                                        elem_id="opacity")
                    cmap = gr.Dropdown(list(SUGGESTED_COLORMAPS), value="viridis",
                                       label="Colormap", elem_id="colormap")
                maps = gr.HTML(elem_id="maps")
                scores = gr.Markdown(elem_id="scores")
                with gr.Accordion("Per-layer maps", open=False):
                    layer_maps = gr.HTML(elem_id="layers-box")
                segmentation = gr.HTML(elem_id="segmentation-box")
                downloads = gr.File(label="Downloads: maps.npz, labels.png, summary.json",
                                    file_count="multiple", interactive=False,
                                    elem_id="downloads")

        def on_explain(*values: Any) -> tuple[Any, ...]:  # noqa: ANN401 - the controls' values
            return run_explain(viewer, *values)

        upload.change(show_photo, [upload], [photo, status])
        explain.click(on_explain,
                      [upload, classes, top_k, method, preset, layers, segmenter, opacity, cmap],
                      [analysis, status, maps, scores, layer_maps, segmentation, downloads])
        opacity.change(redraw, [analysis, opacity, cmap], [maps, layer_maps])
        cmap.change(redraw, [analysis, opacity, cmap], [maps, layer_maps])
    return app


def launch(viewer: Viewer, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Start the page on ``host:port`` and serve until interrupted."""
    require_gradio()
    app = build_app(viewer)
    app.queue(default_concurrency_limit=1)
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False,
               show_error=False, quiet=True, ssr_mode=False, pwa=False, mcp_server=False,
               footer_links=[])
