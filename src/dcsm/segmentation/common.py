"""What a segmentation returns, and the checks shared by the segmenters.

A segmentation of an image with candidate classes :math:`c_1, \\dots, c_K` is a label image
``labels`` of shape (H, W), dtype uint8: 0 is background and :math:`v \\in \\{1, \\dots, K\\}` is
the v-th candidate (the order of ``SaliencyResult.candidates``, of the maps' mapping, and of
``candidates`` in ``summary.json``). ``masks[c_v]`` is ``labels == v``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from dcsm.errors import DcsmError
from dcsm.pipeline.fusion import sharpen
from dcsm.pipeline.images import ImageLike, as_rgb_array
from dcsm.pipeline.result import SaliencyResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The label of the background in every label image.
BACKGROUND = 0
#: Label values are uint8 and 0 is the background, so at most this many classes.
MAX_CLASSES = 255
#: How far a map may stray outside [0, 1] (rounding) before it is refused.
_RANGE_TOLERANCE = 1e-4

MapSource = SaliencyResult | Mapping[str, np.ndarray]


@dataclass
class Segmentation:
    """Labels and masks of the candidate classes of one image.

    Attributes:
        labels: (H, W) uint8; 0 is background, v > 0 the v-th entry of ``candidates``.
        masks: one (H, W) bool array per class name, ``labels == v``; the masks never overlap.
        candidates: the class names, in label order (label v is ``candidates[v - 1]``).
        method: ``"crf"`` or ``"grabcut"``.
        parameters: every setting that produced the labels (JSON-friendly).
        regions: each class's region before overlaps were resolved (GrabCut: the largest
            connected foreground component of that class's own GrabCut; they may overlap). For
            the CRF, which labels every pixel once, equal to ``masks``.
        probabilities: CRF only: the (K + 1, H, W) float32 mean-field marginals after the last
            iteration (row 0 background); None for GrabCut.
    """

    labels: np.ndarray
    masks: dict[str, np.ndarray]
    candidates: list[str]
    method: str
    parameters: dict[str, object] = field(default_factory=dict)
    regions: dict[str, np.ndarray] = field(default_factory=dict)
    probabilities: np.ndarray | None = None

    def label_names(self) -> dict[int, str]:
        """``{0: "background", 1: first candidate, ...}``."""
        return {BACKGROUND: "background", **{v: n for v, n in enumerate(self.candidates, 1)}}

    def summary(self) -> dict[str, object]:
        """JSON-friendly description: segmenter, parameters, label names, pixel counts."""
        counts = np.bincount(self.labels.ravel(), minlength=len(self.candidates) + 1)
        return {
            "segmenter": self.method,
            "parameters": self.parameters,
            "labels": {str(v): name for v, name in self.label_names().items()},
            "pixels": {name: int(counts[v]) for v, name in self.label_names().items()},
        }

    def figure(self, image: ImageLike | None = None, figure: Figure | None = None) -> Figure:
        """The labels over ``image`` (or alone, in VOC colours, without one), with a legend
        (:func:`dcsm.segmentation.figure.segmentation_figure`); ``figure``: draw into it."""
        from dcsm.segmentation.figure import segmentation_figure

        picture = None if image is None else as_rgb_array(image)
        return segmentation_figure(picture, self, figure=figure)

    def show(self, image: ImageLike | None = None) -> None:
        """Draw :meth:`figure` with ``matplotlib.pyplot`` and show it (in a notebook, inline).

        Pass the image (``result.image``) to see the labels over it; a segmentation does not
        keep its image."""
        import matplotlib.pyplot as plt

        fig = plt.figure()
        self.figure(image, figure=fig)
        plt.show()

    def _repr_png_(self) -> bytes:
        """The notebook's PNG of the segmentation: its labels in VOC colours, with a legend."""
        from dcsm.io.viz import figure_to_png

        return figure_to_png(self.figure())


def masks_from_labels(labels: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """``{names[v - 1]: labels == v}`` for v = 1..K."""
    return {name: labels == v for v, name in enumerate(names, 1)}


def check_map(name: str, m: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A class map as float32 (H, W) in [0, 1], or a :class:`DcsmError` saying what is wrong.

    Maps must be 2-D, the image's size, finite, and within [0, 1] (up to 1e-4 of rounding,
    which is clipped away); dcsm's maps all are.
    """
    arr = np.asarray(m)
    if arr.ndim != 2:
        raise DcsmError(f"map '{name}' must be a 2-D array, got shape {arr.shape}")
    if arr.shape != shape:
        raise DcsmError(f"map '{name}' is {arr.shape[1]}x{arr.shape[0]} pixels but the image is "
                        f"{shape[1]}x{shape[0]}; they must match")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DcsmError(f"map '{name}' must hold real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float32)
    if not np.isfinite(arr).all():
        raise DcsmError(f"map '{name}' holds NaN or infinite values")
    if arr.size and (arr.min() < -_RANGE_TOLERANCE or arr.max() > 1 + _RANGE_TOLERANCE):
        raise DcsmError(f"map '{name}' must lie in [0, 1], got {arr.min():.4g}..{arr.max():.4g}; "
                        "normalise it first")
    return np.clip(arr, 0.0, 1.0)


def map_power(source: MapSource, given: float | None = None) -> float:
    """The power the maps of ``source`` were raised to relative to their maximum (the dcsm
    explainer's ``gamma``, :func:`dcsm.pipeline.fusion.sharpen`): ``given`` if not None, else a
    result's ``gamma`` parameter, else 1."""
    value: object = given
    if value is None:
        value = source.parameters.get("gamma", 1.0) if isinstance(source, SaliencyResult) \
            else 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or \
            not np.isfinite(value) or not 0 < value <= 16:
        raise DcsmError(f"map_gamma must be a number in (0, 16], got {value!r}")
    return float(value)


def undo_power(maps: np.ndarray, gamma: float) -> np.ndarray:
    """(K, H, W) maps brought back from :func:`~dcsm.pipeline.fusion.sharpen` with ``gamma``:
    ``sharpen`` with ``1 / gamma`` (each map's maximum times ``(M / max M)^(1 / gamma)``), as
    float32; the maps themselves for 1."""
    if gamma == 1:
        return maps
    return sharpen(torch.from_numpy(maps), 1.0 / gamma).numpy().astype(np.float32, copy=False)


def maps_and_image(
    source: MapSource, image: ImageLike | None = None
) -> tuple[np.ndarray, list[str], np.ndarray]:
    """The RGB image, class names and stacked (K, H, W) float32 maps of a segmenter's input.

    ``source`` is a :class:`~dcsm.SaliencyResult` (its image is used unless ``image`` is given;
    classes in the order of its candidates) or a mapping from class name to map (``image`` is
    then required; classes in the mapping's order).
    """
    if isinstance(source, SaliencyResult):
        img = source.image if image is None else as_rgb_array(image)
        names = [c.name for c in source.candidates]
        if len(set(names)) != len(names):
            raise DcsmError("two candidates share a class name; segmentation needs unique names")
        missing = [n for n in names if n not in source.maps]
        if missing:
            raise DcsmError(f"the result has no map for candidate '{missing[0]}'")
        raw = {n: source.maps[n] for n in names}
    elif isinstance(source, Mapping):
        if image is None:
            raise DcsmError("segmenting a mapping of maps needs the image too")
        img = as_rgb_array(image)
        raw = dict(source)
        names = list(raw)
        if any(not isinstance(n, str) or not n for n in names):
            raise DcsmError("class names must be non-empty strings")
    else:
        raise DcsmError(f"expected a SaliencyResult or a mapping of maps, got "
                        f"{type(source).__name__}")
    img = np.ascontiguousarray(np.asarray(img, dtype=np.uint8)[:, :, :3])
    if not names:
        raise DcsmError("no class maps to segment")
    if len(names) > MAX_CLASSES:
        raise DcsmError(f"at most {MAX_CLASSES} classes can be segmented, got {len(names)}")
    shape = (img.shape[0], img.shape[1])
    stack = np.stack([check_map(n, raw[n], shape) for n in names])
    return img, names, stack
