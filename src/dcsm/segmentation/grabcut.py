r"""The baseline of Simonyan et al. (2014, Sec. 3.1): GrabCut seeded from a saliency map.

Per class c, with its map :math:`M_c` (for the baseline, the input-gradient map,
``method="simonyan"``) and the quantiles :math:`q_{hi}` (``fg_quantile``, 0.95) and
:math:`q_{lo}` (``bg_quantile``, 0.30) of its values over the image:

1. **Colour models from the seeds.** The foreground colour model (OpenCV's 5-component GMM)
   is estimated from the pixels with :math:`M_c \ge Q(q_{hi})` (the most salient 5 %) and the
   background model from those with :math:`M_c \le Q(q_{lo})` (the least salient 30 %), and
   from nothing else, as Simonyan et al. describe. The inequalities are not strict, so ties
   (such as the many exact zeros of a distinct map) are seeds too. A map with no spread
   (:math:`Q(q_{hi}) = Q(q_{lo})`) gives an empty region.
2. **Graph cut.** One GrabCut round with these models frozen labels every pixel foreground or
   background (Simonyan et al.'s GraphCut step; the seeds are not hard constraints, they only
   estimated the models). Then ``iterations - 1`` more GrabCut rounds (default ``iterations``
   = 5) re-estimate the models from the current labelling and cut again, as GrabCut does;
   ``iterations=1`` stops after the single cut.
3. **Largest component.** As in Simonyan et al., the region is the largest 8-connected
   component of the foreground (``largest_component=True``).

OpenCV's ``cv2.grabCut`` does steps 1 and 2: ``GC_INIT_WITH_MASK`` with zero rounds on the seed
pixels alone fits the models, ``GC_EVAL_FREEZE_MODEL`` makes the first cut and ``GC_EVAL`` the
later rounds. Its k-means start is seeded (``cv2.setRNGSeed(0)``), so results repeat.

Each class runs its own GrabCut, so regions may overlap (the paper's Fig. 1 (D), (E)). The label
image resolves overlaps by saliency: a pixel inside several regions takes the class whose map is
highest there (ties: the earlier candidate); a pixel in no region is background.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import ModuleType

import numpy as np

from dcsm.errors import DcsmError
from dcsm.pipeline.images import ImageLike
from dcsm.segmentation.common import MapSource, Segmentation, maps_and_image, masks_from_labels

#: Components of OpenCV's GrabCut colour GMMs.
_GMM_COMPONENTS = 5


#: The most GrabCut rounds :class:`GrabCutParams` accepts.
MAX_GRABCUT_ITERATIONS = 100


@dataclass(frozen=True)
class GrabCutParams:
    """Settings of :func:`segment_grabcut` (see the module docstring).

    Attributes:
        fg_quantile: maps at or above this quantile seed the foreground; in (0, 1).
        bg_quantile: maps at or below this quantile seed the background; in (0, fg_quantile).
        iterations: GrabCut rounds; 1 to :data:`MAX_GRABCUT_ITERATIONS`.
        largest_component: keep only the largest 8-connected foreground component.
    """

    fg_quantile: float = 0.95
    bg_quantile: float = 0.30
    iterations: int = 5
    largest_component: bool = True

    def __post_init__(self) -> None:
        for name in ("fg_quantile", "bg_quantile"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DcsmError(f"GrabCut {name} must be a number, got {value!r}")
            if not (math.isfinite(value) and 0 < value < 1):
                raise DcsmError(f"GrabCut {name} must lie strictly between 0 and 1, got {value}")
        if self.bg_quantile >= self.fg_quantile:
            raise DcsmError(f"GrabCut bg_quantile ({self.bg_quantile}) must be below "
                            f"fg_quantile ({self.fg_quantile})")
        it = self.iterations
        if isinstance(it, bool) or not isinstance(it, int | np.integer) or it < 1:
            raise DcsmError(f"GrabCut iterations must be a whole number >= 1, got {it!r}")
        if it > MAX_GRABCUT_ITERATIONS:  # GrabCut converges in a few rounds
            raise DcsmError(f"GrabCut iterations must be at most {MAX_GRABCUT_ITERATIONS}, "
                            f"got {it}")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (written to ``summary.json``)."""
        d = asdict(self)
        return {"fg_quantile": float(d["fg_quantile"]), "bg_quantile": float(d["bg_quantile"]),
                "iterations": int(d["iterations"]),
                "largest_component": bool(d["largest_component"])}


def _cv2() -> ModuleType:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DcsmError("GrabCut needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


def seeds(saliency: np.ndarray, params: GrabCutParams) -> tuple[np.ndarray, np.ndarray] | None:
    """(foreground, background) seed masks of one map; None if the map has no spread."""
    hi, lo = np.quantile(saliency, [params.fg_quantile, params.bg_quantile])
    if hi <= lo:
        return None
    return saliency >= hi, saliency <= lo


def _fit_models(bgr: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV's GMM parameter arrays (background, foreground) fitted on the seed pixels only."""
    cv2 = _cv2()

    def samples(where: np.ndarray) -> np.ndarray:
        pixels = bgr[where]
        if len(pixels) < _GMM_COMPONENTS:  # k-means needs a sample per component
            pixels = np.resize(pixels, (_GMM_COMPONENTS, 3))
        return pixels

    fg_px, bg_px = samples(fg), samples(bg)
    aux = np.ascontiguousarray(np.concatenate([fg_px, bg_px])[None])
    aux_mask = np.concatenate([np.full(len(fg_px), cv2.GC_FGD, np.uint8),
                               np.full(len(bg_px), cv2.GC_BGD, np.uint8)])[None]
    bgd_model = np.zeros((1, 65), np.float64)
    fgd_model = np.zeros((1, 65), np.float64)
    cv2.grabCut(aux, aux_mask, None, bgd_model, fgd_model, 0, cv2.GC_INIT_WITH_MASK)
    return bgd_model, fgd_model


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a bool mask (ties: the first in raster order)."""
    cv2 = _cv2()
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8),
                                                               connectivity=8)
    if count <= 1:
        return np.zeros(mask.shape, dtype=bool)
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return labels == best


def grabcut_region(image: np.ndarray, saliency: np.ndarray, params: GrabCutParams) -> np.ndarray:
    """One class's GrabCut region (bool (H, W)) from its map (see the module docstring)."""
    cv2 = _cv2()
    seeded = seeds(saliency, params)
    if seeded is None:
        return np.zeros(saliency.shape, dtype=bool)
    fg, bg = seeded
    bgr = np.ascontiguousarray(image[:, :, ::-1])
    cv2.setRNGSeed(0)  # the GMMs start from k-means: make the result repeatable
    bgd_model, fgd_model = _fit_models(bgr, fg, bg)
    mask = np.full(saliency.shape, cv2.GC_PR_BGD, dtype=np.uint8)
    mask[fg] = cv2.GC_PR_FGD
    cv2.grabCut(bgr, mask, None, bgd_model, fgd_model, 1, cv2.GC_EVAL_FREEZE_MODEL)
    if params.iterations > 1:
        cv2.grabCut(bgr, mask, None, bgd_model, fgd_model, int(params.iterations) - 1,
                    cv2.GC_EVAL)
    region = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    return largest_component(region) if params.largest_component else region


def resolve_overlaps(regions: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """Label image from (K, H, W) bool regions: the highest map among the regions covering a
    pixel (ties: the lowest label), 0 where none does."""
    scores = np.where(regions, maps, -np.inf)
    labels = (np.argmax(scores, axis=0) + 1).astype(np.uint8)
    labels[~regions.any(axis=0)] = 0
    return labels


def segment_grabcut(
    source: MapSource,
    image: ImageLike | None = None,
    *,
    fg_quantile: float = GrabCutParams.fg_quantile,
    bg_quantile: float = GrabCutParams.bg_quantile,
    iterations: int = GrabCutParams.iterations,
    largest_component: bool = GrabCutParams.largest_component,
) -> Segmentation:
    """Simonyan et al.'s segmentation: one seeded GrabCut per class, overlaps by saliency.

    Args:
        source: a :class:`~dcsm.SaliencyResult` (for the baseline, ``method="simonyan"``) or a
            mapping from class name to (H, W) map in [0, 1] (then ``image`` is required).
        image: the image, when ``source`` is a mapping (or to override the result's image).
        fg_quantile, bg_quantile, iterations, largest_component: see :class:`GrabCutParams`.

    Returns:
        A :class:`Segmentation`; ``regions`` holds each class's own (possibly overlapping)
        GrabCut region, ``masks`` the non-overlapping ones of ``labels``.

    Raises:
        DcsmError: for a bad parameter, or maps that do not fit the image or [0, 1].
    """
    params = GrabCutParams(fg_quantile, bg_quantile, iterations, largest_component)
    img, names, maps = maps_and_image(source, image)
    return grabcut_segmentation(img, names, maps, params)


def grabcut_segmentation(image: np.ndarray, names: list[str], maps: np.ndarray,
                         params: GrabCutParams) -> Segmentation:
    """:func:`segment_grabcut` of an image and its maps already read and checked
    (:func:`~dcsm.segmentation.common.maps_and_image`): (H, W, 3) uint8, the class names and
    their (K, H, W) float32 maps in [0, 1]."""
    regions = np.stack([grabcut_region(image, m, params) for m in maps])
    labels = resolve_overlaps(regions, maps)
    return Segmentation(labels=labels, masks=masks_from_labels(labels, names), candidates=names,
                        method="grabcut", parameters=params.as_dict(),
                        regions={n: regions[k] for k, n in enumerate(names)})
