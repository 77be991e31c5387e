"""Starting the viewer's page, and the page's handlers as plain functions.

The page (:mod:`dcsm.viewer.page`) is a Streamlit script (the optional extra ``viewer``);
Streamlit is imported only by :func:`require_streamlit` and :func:`launch`, so this module
imports without it. :func:`launch` starts Streamlit's server in this process with the
:class:`~dcsm.viewer.logic.Viewer` that ``dcsm serve`` has loaded, so the model loads once,
before the server starts, and every browser session shares it (:func:`current_viewer`).

The handlers (:func:`show_photo`, :func:`run_explain`, :func:`redraw`) turn the page's control
values into what it shows, through :mod:`dcsm.viewer.logic`, and a refused request (a bad
image, an unknown class, a layer Grad-CAM cannot read, ...) into one line for the page's
status box instead of a failure.

Nothing is fetched from elsewhere: Streamlit serves its page, scripts and fonts from the
installed package, its usage statistics are turned off, and it listens on 127.0.0.1 unless
told otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcsm.errors import DcsmError
from dcsm.viewer.logic import (
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

__all__ = ["INSTALL_HINT", "WELCOME", "current_viewer", "launch", "redraw", "require_streamlit",
           "run_explain", "show_photo"]

#: What to run when the extra is missing.
INSTALL_HINT = "pip install 'distinct-saliency[viewer]'"
#: Shown before the first explanation.
WELCOME = ("Pick or drop an image (the bundled one is loaded), choose the settings, press "
           "**Explain**.")

#: The page's Streamlit script (:mod:`dcsm.viewer.page`, which imports this module).
PAGE = Path(__file__).resolve().with_name("page.py")

_VIEWER: Viewer | None = None


def require_streamlit() -> Any:  # noqa: ANN401 - the streamlit module
    """Import Streamlit; a one-line :class:`DcsmError` naming the extra to install when it is
    missing."""
    try:
        import streamlit
    except ImportError:
        raise DcsmError(f"the viewer needs Streamlit, which is not installed: {INSTALL_HINT}"
                        ) from None
    return streamlit


def current_viewer() -> Viewer | None:
    """The viewer :func:`launch` serves (None outside ``dcsm serve``)."""
    return _VIEWER


# ----------------------------------------------------------------------------- handlers
def show_photo(path: str | Path | None) -> tuple[np.ndarray | None, str]:
    """The picked file as the page's preview and a status line (the error, if unreadable)."""
    try:
        return load_picture(path), WELCOME
    except DcsmError as exc:
        return None, error_markdown(exc)


def run_explain(viewer: Viewer, path: str | Path | None, classes: list[str] | None,
                top_k: float, method: str, preset: str, layers: list[str] | None,
                segmenter: str) -> tuple[Analysis | None, str, list[Path]]:
    """The Explain button: ``(analysis, status, downloads)``; a refused request gives no
    analysis and says why in the status."""
    try:
        image = load_picture(path)
        settings = Settings(method=method, preset=preset,
                            layers=tuple(layers) if layers is not None else None,
                            classes=tuple(classes or ()), top_k=int(top_k), segmenter=segmenter)
        analysis = viewer.analyse(image, settings)
        names = ", ".join(f"{c.name} {c.score:.3f}" for c in analysis.result.candidates)
        status = f"Explained with {analysis.result.method} ({viewer.model_name}): {names}"
        return analysis, status, write_downloads(analysis)
    except (DcsmError, RuntimeError, ValueError) as exc:
        return None, error_markdown(exc), []


def redraw(analysis: Analysis | None, opacity: float, cmap: str) -> dict[str, str]:
    """What the page draws of an analysis at an opacity and colormap (the slider and the
    colormap redraw it without explaining again): ``maps``, ``layers``, ``segmentation`` and
    ``scores`` as HTML or Markdown; empty strings without an analysis."""
    if analysis is None:
        return {"maps": "", "layers": "", "segmentation": "", "scores": ""}
    try:
        return {"maps": class_maps_html(analysis, opacity, cmap),
                "layers": layer_maps_html(analysis, opacity, cmap),
                "segmentation": segmentation_html(analysis),
                "scores": scores_markdown(analysis)}
    except DcsmError as exc:
        return {"maps": error_markdown(exc), "layers": "", "segmentation": "", "scores": ""}


# ----------------------------------------------------------------------------- the server
def launch(viewer: Viewer, host: str = "127.0.0.1", port: int = 8501) -> None:
    """Serve the page for ``viewer`` on ``host:port`` until interrupted (Streamlit's server,
    headless, usage statistics off, no file watching)."""
    global _VIEWER

    require_streamlit()
    from streamlit.web import bootstrap

    _VIEWER = viewer
    options: dict[str, Any] = {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "browser.gatherUsageStats": False,
        "browser.serverAddress": host,
        "browser.serverPort": port,
        "global.developmentMode": False,
        "client.toolbarMode": "minimal",
        "client.showErrorDetails": "none",
        "theme.base": "light",
    }
    bootstrap.load_config_options(flag_options=options)
    bootstrap.run(str(PAGE), False, [], options)
