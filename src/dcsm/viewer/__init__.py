"""``dcsm serve``: a local web viewer of class saliency maps.

* :mod:`dcsm.viewer.logic`: what the page does, as plain functions and the :class:`Viewer`
  (the model, loaded once; explainers built once per setting), on the library's own code
  (:mod:`dcsm.api`, :mod:`dcsm.segmentation`, :mod:`dcsm.io`, :mod:`dcsm.io.viz`). No web
  framework is needed to import or test it.
* :mod:`dcsm.viewer.app`: the page's handlers (plain functions too) and :func:`launch`, which
  starts Streamlit's server (the optional extra ``viewer``:
  ``pip install 'distinct-saliency[viewer]'``) in this process.
* :mod:`dcsm.viewer.page`: the page itself, a Streamlit script.
"""

from __future__ import annotations

from dcsm.viewer.logic import BUNDLED_IMAGE, Analysis, Settings, Viewer

__all__ = ["BUNDLED_IMAGE", "Analysis", "Settings", "Viewer"]
