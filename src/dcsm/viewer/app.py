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
told otherwise. The server answers only requests addressed to it (the ``Host`` check of
:mod:`dcsm.viewer.guard`, against DNS rebinding) and serves nothing but the page (no metrics,
no agent API); uploads are capped at :data:`MAX_UPLOAD_MB` MB and each is decoded once
(:func:`decoded_upload`), from a temporary folder removed at once.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
from collections.abc import MutableMapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dcsm.errors import DcsmError
from dcsm.optional import install_hint, require
from dcsm.viewer.guard import HostGuard, allowed_hosts
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

__all__ = ["INSTALL_HINT", "MAX_UPLOAD_MB", "WELCOME", "current_viewer", "decoded_upload",
           "launch", "redraw", "require_streamlit", "run_explain", "show_photo"]

#: What to run when the extra is missing.
INSTALL_HINT = install_hint("streamlit")
#: Shown before the first explanation.
WELCOME = ("Pick or drop an image (the bundled one is loaded), choose the settings, press "
           "**Explain**.")

#: The largest upload the page accepts, in megabytes (Streamlit's ``server.maxUploadSize``).
MAX_UPLOAD_MB = 20

#: The page's Streamlit script (:mod:`dcsm.viewer.page`, which imports this module).
PAGE = Path(__file__).resolve().with_name("page.py")

_VIEWER: Viewer | None = None


def require_streamlit() -> Any:  # noqa: ANN401 - the streamlit module
    """Import Streamlit; a one-line :class:`DcsmError` naming the extra to install when it is
    missing or too old (without ``st.App``, which the viewer's server guard needs)."""
    streamlit = require("streamlit", "the viewer")
    if not hasattr(streamlit, "App"):
        raise DcsmError(f"the viewer needs Streamlit 1.67 or later (found "
                        f"{getattr(streamlit, '__version__', 'an older one')}): pip install "
                        f"--upgrade 'distinct-saliency[viewer]'")
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


def decoded_upload(cache: MutableMapping[str, Any], name: str, data: bytes
                   ) -> tuple[np.ndarray | None, str]:
    """An uploaded file as the page's preview and a status line (:func:`show_photo`), decoded
    once per upload: ``cache`` (the browser session's state) keeps the last one, keyed by the
    name and the SHA-256 of the bytes, so the page's reruns (every slider move) reuse it.

    The bytes are decoded from a private temporary folder (``dcsm-viewer-*``) that is removed
    as soon as the picture is read; nothing of an upload stays on the disk.
    """
    key = f"{hashlib.sha256(data).hexdigest()}:{name}"
    if cache.get("upload_key") != key:
        shown = _safe_name(name)
        with tempfile.TemporaryDirectory(prefix="dcsm-viewer-") as folder:
            path = Path(folder) / shown
            path.write_bytes(data)
            picture, status = show_photo(path)
        cache["upload_key"] = key
        cache["upload_picture"] = picture
        cache["upload_status"] = status.replace(str(path), shown)
    return cache["upload_picture"], cache["upload_status"]


def _safe_name(name: str) -> str:
    """A file name that stays inside a folder: the last part of ``name``, with no character
    outside letters, digits and ``._- `` and no leading dot (``upload`` when nothing is left)."""
    last = name.replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = re.sub(r"[^\w.\- ]", "_", last).lstrip(". ")[:120]
    return cleaned or "upload"


def run_explain(viewer: Viewer, image: np.ndarray | str | Path | None,
                classes: list[str] | None, top_k: float, method: str, preset: str,
                layers: list[str] | None, segmenter: str
                ) -> tuple[Analysis | None, str, list[tuple[str, bytes]]]:
    """The Explain button on a decoded picture (or an image file): ``(analysis, status,
    downloads)``, the downloads as ``(file name, bytes)`` (written in a temporary folder that
    is removed before returning); a refused request gives no analysis and says why in the
    status."""
    try:
        picture = image if isinstance(image, np.ndarray) else load_picture(image)
        settings = Settings(method=method, preset=preset,
                            layers=tuple(layers) if layers is not None else None,
                            classes=tuple(classes or ()), top_k=int(top_k), segmenter=segmenter)
        analysis = viewer.analyse(picture, settings)
        names = ", ".join(f"{c.name} {c.score:.3f}" for c in analysis.result.candidates)
        status = f"Explained with {analysis.result.method} ({viewer.model_name}): {names}"
        with tempfile.TemporaryDirectory(prefix="dcsm-viewer-") as folder:
            files = [(p.name, p.read_bytes()) for p in write_downloads(analysis, folder)]
        return analysis, status, files
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
def launch(viewer: Viewer, host: str = "127.0.0.1", port: int = 8501,
           allow_hosts: Sequence[str] = ()) -> None:
    """Serve the page for ``viewer`` on ``host:port`` until interrupted (Streamlit's server,
    headless, usage statistics off, no file watching).

    Only requests for this server's own address (``localhost``, ``127.0.0.1``, ``[::1]``,
    ``host``, ``allow_hosts``) are answered and only the page is served
    (:mod:`dcsm.viewer.guard`); uploads are capped at :data:`MAX_UPLOAD_MB` MB.
    """
    global _VIEWER

    st = require_streamlit()
    Middleware = require("starlette.middleware", "the viewer").Middleware

    _VIEWER = viewer
    rule = allowed_hosts(host, allow_hosts)
    options: dict[str, Any] = {
        "server.address": host,
        "server.port": port,
        "server.headless": True,
        "server.fileWatcherType": "none",
        "server.runOnSave": False,
        "server.maxUploadSize": MAX_UPLOAD_MB,
        "server.enableCORS": True,
        "server.enableXsrfProtection": True,
        "server.enableStaticServing": False,
        "server.enableAgentApi": False,
        "server.scriptHealthCheckEnabled": False,
        # Streamlit's own WebSocket Host check as well, where the names are all known
        "server.allowedHosts": [] if rule.any_address else sorted(rule.names),
        "browser.gatherUsageStats": False,
        "browser.serverAddress": host,
        "browser.serverPort": port,
        "global.developmentMode": False,
        "client.toolbarMode": "minimal",
        "client.showErrorDetails": "none",
        "theme.base": "light",
    }
    page = st.App(str(PAGE), middleware=[Middleware(HostGuard, rule=rule)])
    page.run(config=options)
