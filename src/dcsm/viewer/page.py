"""The viewer's page: a Streamlit script, run by Streamlit's server (``dcsm serve``).

Importing this module does nothing but define :func:`main`; Streamlit runs the file as
``__main__`` on every interaction, and :func:`main` draws the page from the controls' values and
the session's last analysis (``st.session_state``), so moving the opacity slider or picking a
colormap redraws the maps without explaining again. The model is the one ``dcsm serve`` loaded
(:func:`dcsm.viewer.app.current_viewer`); run directly with ``streamlit run`` it is loaded once
per process (``DCSM_VIEWER_MODEL``, default the default model).
"""

from __future__ import annotations

import os

from dcsm.io.viz import SUGGESTED_COLORMAPS
from dcsm.methods.registry import names as method_names
from dcsm.pipeline.presets import PRESETS
from dcsm.viewer import app
from dcsm.viewer.logic import BUNDLED_IMAGE, SEGMENTERS, Viewer, default_preset

#: File types the uploader offers (any image Pillow reads is accepted once picked).
IMAGE_TYPES = ["png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm"]


def _load_viewer(model: str | None) -> Viewer:
    """The viewer of a registry model (the page's fallback outside ``dcsm serve``)."""
    return Viewer.from_name(model)


def main() -> None:
    """Draw the page."""
    st = app.require_streamlit()
    st.set_page_config(page_title="dcsm viewer", layout="wide")
    viewer = app.current_viewer() or st.cache_resource(_load_viewer)(
        os.environ.get("DCSM_VIEWER_MODEL"))
    state = st.session_state
    st.markdown(f"### dcsm: distinct class saliency maps\nModel **{viewer.model_name}**, "
                "loaded once; every map comes from the same code as `dcsm explain`.")
    left, right = st.columns([1, 2], gap="medium")
    with left:
        upload = st.file_uploader("Image (drop or pick a file; default: the bundled photo)",
                                  type=IMAGE_TYPES, key="upload")
        if upload is not None:  # decoded once per upload, not on every rerun
            caption = upload.name
            photo, photo_status = app.decoded_upload(state, upload.name, upload.getvalue())
        else:
            caption = BUNDLED_IMAGE.name
            if "bundled" not in state:
                state["bundled"] = app.show_photo(BUNDLED_IMAGE)
            photo, photo_status = state["bundled"]
        if photo is not None:
            st.image(photo, caption=caption, width="stretch")
        classes = st.multiselect("Classes (empty: the model's top classes)",
                                 viewer.class_names, key="classes")
        top_k = st.slider("Top classes (when none picked)", 1, 5, 2, key="top_k")
        method = st.radio("Method", list(method_names(explainers=True)), horizontal=True,
                          key="method")
        if "preset" not in state:
            state["preset"] = default_preset()
        if "layers" not in state:
            state["layers"] = viewer.preset_layers(state["preset"])

        def preset_changed() -> None:  # each preset starts from its own layers
            state["layers"] = viewer.preset_layers(state["preset"])

        preset = st.radio("Preset (dcsm)", list(PRESETS), horizontal=True, key="preset",
                          on_change=preset_changed)
        layers = st.multiselect("Layers (dcsm; Grad-CAM: one, or the default)",
                                viewer.layer_choices(), key="layers")
        segmenter = st.radio("Segmentation", list(SEGMENTERS), horizontal=True,
                             key="segmenter")
        if st.button("Explain", type="primary", key="explain", width="stretch"):
            with st.spinner("Explaining..."):
                analysis, status, files = app.run_explain(
                    viewer, photo, classes, top_k, method, preset, layers, segmenter)
            state["analysis"], state["status"] = analysis, status
            state["downloads"] = files
    with right:
        status = photo_status if photo is None else state.get("status", app.WELCOME)
        if status.startswith("**Error:**"):
            st.error(status)
        else:
            st.info(status)
        slider, colours = st.columns(2)
        opacity = slider.slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="opacity")
        cmap = colours.selectbox("Colormap", list(SUGGESTED_COLORMAPS), key="colormap")
        shown = app.redraw(state.get("analysis"), opacity, cmap)
        if shown["maps"]:
            st.html(shown["maps"])
            st.markdown(shown["scores"], unsafe_allow_html=True)
            with st.expander("Per-layer maps"):
                st.html(shown["layers"])
            st.html(shown["segmentation"])
            buttons = st.columns(max(1, len(state.get("downloads", []))))
            for column, (name, data) in zip(buttons, state.get("downloads", []), strict=False):
                column.download_button(f"Download {name}", data, file_name=name,
                                       key=f"download-{name}", on_click="ignore")


if __name__ == "__main__":
    main()
