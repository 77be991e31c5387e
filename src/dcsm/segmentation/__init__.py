"""Segmentation from class saliency maps that were already computed.

* :func:`segment_crf`: a dense CRF (Krähenbühl & Koltun) with the maps as unaries, the
  paper's Fig. 1 (H); see :mod:`dcsm.segmentation.crf` for the background rule and defaults.
* :func:`segment_grabcut`: the baseline of Simonyan et al. (2014), one GrabCut per class
  seeded from the map's 95 % and 30 % quantiles; see :mod:`dcsm.segmentation.grabcut`.
* :func:`segment` picks one by name. All take a :class:`~dcsm.SaliencyResult` (or a mapping
  from class name to map, plus the image) and return a :class:`Segmentation`; no gradient is
  recomputed.
* :func:`write_segmentation` writes ``labels.png`` (VOC palette, 0 background, v the v-th
  candidate), ``masks.npz`` and ``segmentation.png``; :func:`figure_one` draws the paper's
  Fig. 1.

Example::

    import dcsm
    adapter = dcsm.load_model("efficientnet_lite0")
    result = dcsm.explain(adapter, "photo.jpg", classes=["tabby", "espresso"])
    seg = dcsm.segment(result)                       # dense CRF on the distinct maps
    seg.labels                                       # (H, W) uint8: 0, 1 (tabby), 2 (espresso)
    seg.masks["tabby"]                               # (H, W) bool
    simonyan = dcsm.explain(adapter, result.image, method="simonyan", classes=["tabby", "espresso"])
    baseline = dcsm.segment(simonyan, segmenter="grabcut")
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io import MIN_SIDE, save_figure, save_npz
from dcsm.pipeline.images import (
    DEFAULT_MAX_SIDE,
    FIGURE_SIDE,
    ImageLike,
    check_max_side,
    resize_image,
    resize_map,
    shrink_image,
    working_size,
)
from dcsm.segmentation.common import (
    BACKGROUND,
    MapSource,
    Segmentation,
    map_power,
    maps_and_image,
    undo_power,
)
from dcsm.segmentation.crf import (
    CRFParams,
    background_probability,
    crf_segmentation,
    segment_crf,
    unary_probabilities,
)
from dcsm.segmentation.grabcut import GrabCutParams, grabcut_segmentation, segment_grabcut
from dcsm.segmentation.palette import (
    colorize_labels,
    label_overlay,
    labels_image,
    save_labels,
    voc_palette,
)

__all__ = [
    "BACKGROUND",
    "SEGMENTERS",
    "CRFParams",
    "GrabCutParams",
    "Segmentation",
    "background_probability",
    "colorize_labels",
    "figure_one",
    "label_overlay",
    "labels_image",
    "resize_labels",
    "save_labels",
    "segment",
    "segment_crf",
    "segment_grabcut",
    "segmentation_figure",
    "unary_probabilities",
    "voc_palette",
    "write_segmentation",
]

_LAZY = ("figure_one", "segmentation_figure")  # in .figure: matplotlib loads on first use


def __getattr__(name: str) -> Any:
    """Load the figure functions (and matplotlib) only when asked for."""
    if name in _LAZY:
        from dcsm.segmentation import figure

        return getattr(figure, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The segmenters :func:`segment` knows.
SEGMENTERS: tuple[str, ...] = ("crf", "grabcut")


def segment(
    source: MapSource,
    image: ImageLike | None = None,
    segmenter: str | None = None,
    max_side: int | None = DEFAULT_MAX_SIDE,
    map_gamma: float | None = None,
    **params: Any,
) -> Segmentation:
    """Segment with ``segmenter`` ``"crf"`` (:func:`segment_crf`, the default) or ``"grabcut"``
    (:func:`segment_grabcut`); ``params`` are that function's keyword arguments.

    Images larger than ``max_side`` on their long side (the working resolution, 512 by default;
    None for the full size) are segmented at that size (the short side kept at
    :data:`~dcsm.io.MIN_SIDE` pixels at least: :func:`~dcsm.pipeline.images.working_size`), the
    image and the maps shrunk, and the labels, masks and regions brought back to the full size
    (nearest neighbour); the CRF's ``probabilities`` stay at the working size. The dense CRF's
    kernels are in pixels, so this also keeps their reach the same relative to the objects.
    The image is read once (a path decoded once), whatever the segmenter.

    The dense CRF takes the maps as they were before the explainer's final power (its
    ``gamma``, :func:`dcsm.pipeline.fusion.sharpen`): ``map_gamma`` (default: a result's
    ``gamma`` parameter, 1 for a mapping) is undone first
    (:func:`~dcsm.segmentation.common.undo_power`), since the CRF has its own sharpness.
    GrabCut's quantile seeds do not change under a power, so its maps are taken as they are.

    The segmenter's old keyword, ``method=``, still works, with a :class:`DeprecationWarning`.

    Raises:
        DcsmError: for an unknown segmenter or parameter, a bad value, or both ``segmenter``
            and ``method`` given.
    """
    if "method" in params:
        old = params.pop("method")
        if segmenter is not None:
            raise DcsmError("give the segmenter once: segmenter= (method= is its old name)")
        warnings.warn("dcsm.segment(method=...) is deprecated: use segmenter=...",
                      DeprecationWarning, stacklevel=2)
        segmenter = old
    if segmenter is None:
        segmenter = "crf"
    check_max_side(max_side)
    gamma = map_power(source, map_gamma)
    img, names, stack = maps_and_image(source, image)
    if segmenter not in SEGMENTERS:
        raise DcsmError(f"unknown segmenter '{segmenter}'; known: {', '.join(SEGMENTERS)}")
    known = list((CRFParams if segmenter == "crf" else GrabCutParams).__dataclass_fields__)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise DcsmError(f"unknown {segmenter} parameter '{unknown[0]}'; known: {', '.join(known)}")
    full = (img.shape[0], img.shape[1])
    size = working_size(*full, max_side, min_short=MIN_SIDE)
    work, maps = img, stack
    if size != full:  # checked above: only the bilinear resize's rounding is clipped away
        work = resize_image(img, size)
        maps = np.stack([np.clip(resize_map(m, size), 0.0, 1.0) for m in stack])
    if segmenter == "crf":
        seg = crf_segmentation(work, names, undo_power(maps, gamma), CRFParams(**params))
    else:
        seg = grabcut_segmentation(work, names, maps, GrabCutParams(**params))
    return seg if size == full else _enlarge(seg, full)


def resize_labels(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label image (or a boolean mask) as uint8, resized to ``size`` (nearest neighbour)."""
    pil = Image.fromarray(labels.astype(np.uint8))
    if (pil.height, pil.width) == tuple(size):
        return np.asarray(pil)
    return np.asarray(pil.resize((size[1], size[0]), Image.Resampling.NEAREST))


def _enlarge(seg: Segmentation, size: tuple[int, int]) -> Segmentation:
    """``seg`` with its labels, masks and regions resized to ``size`` (nearest neighbour)."""
    labels = resize_labels(seg.labels, size)
    masks = {n: labels == v for v, n in enumerate(seg.candidates, 1)}
    regions = {n: resize_labels(r, size).astype(bool) for n, r in seg.regions.items()}
    return Segmentation(labels, masks, seg.candidates, seg.method,
                        {**seg.parameters, "working_size": list(seg.labels.shape)},
                        regions, seg.probabilities)


def write_segmentation(seg: Segmentation, image: np.ndarray, directory: Path,
                       figure: bool = True) -> None:
    """Write ``labels.png``, ``masks.npz`` and (``figure``) ``segmentation.png`` into
    ``directory``.

    * ``labels.png``: "P" mode PNG the size of the image, VOC palette, pixel value = label.
    * ``masks.npz``: one (H, W) bool array per class name (``labels == v``).
    * ``segmentation.png``: the image and the labels over it, with a legend.

    Each file is written atomically; use :func:`dcsm.io.atomic_dir` for the directory.
    """
    from dcsm.segmentation.figure import segmentation_figure

    directory = Path(directory)
    save_labels(directory / "labels.png", seg.labels)
    save_npz(directory / "masks.npz", seg.masks)
    if not figure:
        return
    small = shrink_image(image, FIGURE_SIDE)
    if small.shape != image.shape:
        seg = _enlarge(seg, (small.shape[0], small.shape[1]))
    save_figure(directory / "segmentation.png", segmentation_figure(small, seg))
