r"""Dense CRF segmentation from class saliency maps (the paper's Fig. 1 (H)).

The fully connected CRF of Krähenbühl & Koltun (NIPS 2011), through ``pydensecrf2``, with
labels :math:`l \in \{0, 1, \dots, K\}`: background and the K candidate classes.

**Unaries.** From the class maps :math:`M_c \in [0, 1]` (c = 1..K), first, with ``normalize``
(the default), each map divided by its own maximum, :math:`\hat M_c = M_c / \max_x M_c(x)`, so
that every class peaks at 1 however weak its map is (the per-class normalisation of the CAM
pseudo-label steps in AffinityNet, Ahn & Kwak 2018, and IRN, Ahn et al. 2019); without it
:math:`\hat M_c = M_c`. The background then gets, by ``background``:

* ``"otsu"`` (the default): :math:`v_0(x) = \tau_{Otsu}`, Otsu's threshold (1979) of the
  image's values of :math:`\max_c \hat M_c`: the cut that best splits them into two groups, so
  the background score follows each image's maps, low for sparse maps (an ImageNet classifier's
  on a real photo), high for dense ones (a classifier trained on the data set);
* ``"constant"``: :math:`v_0(x) = \tau` (``bg_threshold``), IRN's fixed background score;
* ``"power"``: :math:`v_0(x) = \big(1 - \max_c \hat M_c(x)\big)^{\beta}`, a pixel is background
  as much as no class claims it (:math:`\beta` = ``bg_power``; AffinityNet uses 4 to 32 on
  normalised maps);

and each class :math:`v_c(x) = \hat M_c(x)`. Then

.. math::

    P_l(x) = \frac{\max(v_l(x), \epsilon)^{\gamma}}{\sum_{l'} \max(v_{l'}(x), \epsilon)^{\gamma}},
    \qquad \psi_u(l, x) = -\log P_l(x), \qquad \epsilon = 10^{-5},

with the unaries' sharpness :math:`\gamma` (``sharpness``, default ``DEFAULT_SHARPNESS``). The
pairwise terms below are normalised, so a label's neighbours pull on a pixel with up to about
``bilateral_compat + gaussian_compat`` nats; maps in [0, 1] against a background score give
unaries that differ by one or two nats at most, and with :math:`\gamma = 1` the CRF hands whole
objects to the background when most similar-coloured pixels are background. :math:`\gamma`
scales every unary difference; the argmax of the unaries (``iterations=0``) does not depend on
it.

The defaults were chosen on two data sets, never on the images they are reported on
(docs/RESULTS.md): real photos with real masks and ImageNet classifiers (``dcsm bench masks``;
normalisation and sharpness 10 by leave-one-photo-out) and 80 training images of the synthetic
set with a classifier trained on it. A constant background fits one of them only (0.2 on the
real photos, 0.4 to 0.6 on the synthetic set, each failing on the other); Otsu's threshold is
close to the best constant on each. The rule dcsm used before (``power``, :math:`\beta` = 1, no
normalisation, sharpness 1) dropped objects whose map is right but never bright;
``normalize=False, background="power", bg_power=1, sharpness=1`` gives it back.

**Pairwise terms** (Potts compatibility, weights ``compat``):

.. math::

    \psi_p(l_i, l_j) = [l_i \ne l_j] \Big(
        w_g \exp\big(-\tfrac{|p_i - p_j|^2}{2\theta_\gamma^2}\big)
      + w_b \exp\big(-\tfrac{|p_i - p_j|^2}{2\theta_\alpha^2}
                     - \tfrac{|I_i - I_j|^2}{2\theta_\beta^2}\big)\Big)

with positions p in pixels and colours I in 0..255 RGB: the Gaussian (smoothness) kernel with
:math:`\theta_\gamma` = ``gaussian_sxy`` (3) and :math:`w_g` = ``gaussian_compat`` (3); the
bilateral (appearance) kernel with :math:`\theta_\alpha` = ``bilateral_sxy`` (80),
:math:`\theta_\beta` = ``bilateral_srgb`` (13) and :math:`w_b` = ``bilateral_compat`` (10).
Mean-field inference runs ``iterations`` (10) steps; each pixel takes the label of its largest
marginal (ties: the lowest label). ``iterations=0`` gives the unaries' own argmax.

The pairwise defaults are those of ``pydensecrf``'s own example (Gaussian 3 px / weight 3,
bilateral 80 px / 13 levels / weight 10), with 10 mean-field steps. On the bundled test image
they pull the maps' blurred borders onto the objects' edges (``benchmarks/segmentation_iou.py``
compares settings); :math:`\beta = 2` grows the objects into similar-coloured background,
:math:`\beta = 0.5` leaves parts of them out. The kernels are in pixels: for images much larger
than a few hundred pixels a side, scale the ``sxy`` values with the image.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Literal

import numpy as np

from dcsm.errors import DcsmError
from dcsm.pipeline.images import ImageLike
from dcsm.segmentation.common import (
    MapSource,
    Segmentation,
    map_power,
    maps_and_image,
    masks_from_labels,
    undo_power,
)

#: Probabilities are clipped at this value before the logarithm of the unary.
EPSILON = 1e-5
#: The background rules of the unaries (see the module docstring).
BACKGROUNDS: tuple[str, ...] = ("constant", "otsu", "power")
#: Histogram bins of :func:`otsu_threshold`.
OTSU_BINS = 256
#: The default constant background score :math:`\tau`.
DEFAULT_BG_THRESHOLD = 0.2
#: The default sharpness :math:`\gamma` of the unaries.
DEFAULT_SHARPNESS = 10.0


#: The most mean-field steps :class:`CRFParams` accepts.
MAX_CRF_ITERATIONS = 1000
#: The largest kernel feature (image side / sxy, 255 / srgb) the CRF's lattice is given: its
#: integer coordinates overflow, and corrupt memory, some way above (about 7e7).
MAX_FEATURE = 1e6
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class CRFParams:
    """Settings of :func:`segment_crf` (see the module docstring for the model).

    Attributes:
        bg_power: :math:`\\beta` in :math:`v_0 = (1 - \\max_c \\hat M_c)^\\beta`
            (``background="power"``); > 0.
        iterations: mean-field steps; 0 to :data:`MAX_CRF_ITERATIONS`.
        gaussian_sxy: spatial standard deviation of the smoothness kernel, pixels; > 0.
        gaussian_compat: weight of the smoothness kernel; >= 0.
        bilateral_sxy: spatial standard deviation of the appearance kernel, pixels; > 0.
        bilateral_srgb: colour standard deviation of the appearance kernel, 0..255 units; > 0.
        bilateral_compat: weight of the appearance kernel; >= 0.
        background: ``"otsu"`` (:math:`v_0` = Otsu's threshold of :math:`\\max_c \\hat M_c`),
            ``"constant"`` (:math:`v_0 = \\tau`) or ``"power"``.
        bg_threshold: :math:`\\tau`, the constant background score; in (0, 1).
        normalize: divide each class map by its maximum before the unaries.
        sharpness: :math:`\\gamma`, the power of the unary scores; > 0.
    """

    bg_power: float = 1.0
    iterations: int = 10
    gaussian_sxy: float = 3.0
    gaussian_compat: float = 3.0
    bilateral_sxy: float = 80.0
    bilateral_srgb: float = 13.0
    bilateral_compat: float = 10.0
    background: Literal["otsu", "constant", "power"] = "otsu"
    bg_threshold: float = DEFAULT_BG_THRESHOLD
    normalize: bool = True
    sharpness: float = DEFAULT_SHARPNESS

    def __post_init__(self) -> None:
        if self.background not in BACKGROUNDS:
            raise DcsmError(f"unknown CRF background rule {self.background!r}; known: "
                            f"{', '.join(BACKGROUNDS)}")
        if not isinstance(self.normalize, bool | np.bool_):
            raise DcsmError(f"CRF normalize must be True or False, got {self.normalize!r}")
        tau = self.bg_threshold
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 < tau < 1:
            raise DcsmError(f"CRF bg_threshold must be a number in (0, 1), got {tau!r}")
        positive = ("bg_power", "gaussian_sxy", "bilateral_sxy", "bilateral_srgb", "sharpness")
        for name in (*positive, "gaussian_compat", "bilateral_compat"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DcsmError(f"CRF {name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise DcsmError(f"CRF {name} must be finite, got {value}")
            if abs(value) > _FLOAT32_MAX:  # the CRF computes in float32
                raise DcsmError(f"CRF {name} must be at most {_FLOAT32_MAX:.3g}, got {value}")
            if name in positive and value <= 0:
                raise DcsmError(f"CRF {name} must be positive, got {value}")
            if value < 0:
                raise DcsmError(f"CRF {name} must not be negative, got {value}")
        it = self.iterations
        if isinstance(it, bool) or not isinstance(it, int | np.integer) or it < 0:
            raise DcsmError(f"CRF iterations must be a whole number >= 0, got {it!r}")
        if it > MAX_CRF_ITERATIONS:  # mean field settles in tens of steps; more is a typo
            raise DcsmError(f"CRF iterations must be at most {MAX_CRF_ITERATIONS}, got {it}")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form (written to ``summary.json``)."""
        out: dict[str, object] = {}
        for k, v in asdict(self).items():
            if k == "iterations":
                out[k] = int(v)
            elif k == "background":
                out[k] = str(v)
            elif k == "normalize":
                out[k] = bool(v)
            else:
                out[k] = float(v)
        return out


def normalized_maps(maps: np.ndarray) -> np.ndarray:
    """Each (K, H, W) map divided by its maximum (a map that is zero everywhere stays zero)."""
    peaks = maps.reshape(maps.shape[0], -1).max(axis=1) if maps.size else np.zeros(0)
    scale = np.where(peaks > 0, peaks, 1.0).astype(np.float64)
    return (maps / scale[:, None, None]).astype(np.float32)


def otsu_threshold(values: np.ndarray) -> float:
    """Otsu's threshold of values in [0, 1]: the cut of their histogram (:data:`OTSU_BINS`
    bins) that maximises the variance between the two sides. 0.5 for constant values."""
    hist, edges = np.histogram(np.clip(values, 0.0, 1.0), bins=OTSU_BINS, range=(0.0, 1.0))
    weight = hist.astype(np.float64)
    total = weight.sum()
    if total == 0:
        return 0.5
    centres = (edges[:-1] + edges[1:]) / 2
    below = np.cumsum(weight)[:-1]                      # pixels at or below cut i
    above = total - below
    mass = np.cumsum(weight * centres)[:-1]
    valid = (below > 0) & (above > 0)
    if not valid.any():
        return 0.5
    mean_below = np.where(valid, mass / np.maximum(below, 1), 0.0)
    mean_above = np.where(valid, (mass[-1] + weight[-1] * centres[-1] - mass)
                          / np.maximum(above, 1), 0.0)
    between = np.where(valid, below * above * (mean_below - mean_above) ** 2, -1.0)
    return float(edges[1:-1][int(np.argmax(between))])


def background_probability(maps: np.ndarray, bg_power: float = 1.0,
                           background: str = "power",
                           bg_threshold: float = DEFAULT_BG_THRESHOLD) -> np.ndarray:
    """:math:`v_0` for stacked (K, H, W) maps in [0, 1] (already normalised if wanted):
    :math:`(1 - \\max_c M_c)^\\beta` (``power``), :math:`\\tau` everywhere (``constant``) or
    Otsu's threshold of :math:`\\max_c M_c` everywhere (``otsu``)."""
    if background == "constant":
        return np.full(maps.shape[1:], bg_threshold, dtype=np.float32)
    if background == "otsu":
        tau = otsu_threshold(maps.max(axis=0)) if maps.size else 0.5
        return np.full(maps.shape[1:], tau, dtype=np.float32)
    return np.power(1.0 - maps.max(axis=0), bg_power).astype(np.float32)


def unary_probabilities(maps: np.ndarray, bg_power: float = 1.0, *,
                        background: str = "power", bg_threshold: float = DEFAULT_BG_THRESHOLD,
                        normalize: bool = False, sharpness: float = 1.0) -> np.ndarray:
    """The CRF's (K + 1, H, W) label probabilities :math:`P_l` (row 0 background).

    ``maps`` is (K, H, W) in [0, 1]; see the module docstring for the rule. The keyword
    defaults here are the plain rule (no normalisation, ``power``); :class:`CRFParams` holds
    the segmenter's defaults.
    """
    if normalize:
        maps = normalized_maps(maps)
    values = np.concatenate([background_probability(maps, bg_power, background,
                                                    bg_threshold)[None], maps])
    values = np.maximum(values.astype(np.float64), EPSILON)
    if sharpness != 1.0:  # in logs: the small values' powers would underflow
        logs = sharpness * np.log(values)
        values = np.exp(logs - logs.max(axis=0, keepdims=True))
    return (values / values.sum(axis=0, keepdims=True)).astype(np.float32)


def _densecrf() -> ModuleType:
    try:
        import pydensecrf.densecrf as densecrf
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise DcsmError("the CRF needs pydensecrf2: pip install pydensecrf2") from exc
    return densecrf


def _check_features(params: CRFParams, height: int, width: int) -> None:
    """DcsmError when a kernel width is so small for this image that the lattice's features
    (positions / sxy, colours / srgb) would exceed :data:`MAX_FEATURE`."""
    side = max(height, width)
    widths = []
    if params.gaussian_compat > 0:
        widths.append(("gaussian_sxy", params.gaussian_sxy, side))
    if params.bilateral_compat > 0:
        widths += [("bilateral_sxy", params.bilateral_sxy, side),
                   ("bilateral_srgb", params.bilateral_srgb, 255)]
    for name, value, span in widths:
        if span / value > MAX_FEATURE:
            raise DcsmError(f"CRF {name} {value:g} is too small for a {width}x{height} image: "
                            f"use at least {span / MAX_FEATURE:.3g}")


def crf_marginals(image: np.ndarray, probabilities: np.ndarray, params: CRFParams) -> np.ndarray:
    """Mean-field marginals (L, H, W) of the dense CRF on ``image`` with unaries -log P."""
    densecrf = _densecrf()
    n_labels, height, width = probabilities.shape
    _check_features(params, height, width)
    crf = densecrf.DenseCRF2D(width, height, n_labels)
    unary = -np.log(np.maximum(probabilities, EPSILON)).reshape(n_labels, -1)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    if params.gaussian_compat > 0:
        crf.addPairwiseGaussian(sxy=float(params.gaussian_sxy),
                                compat=float(params.gaussian_compat))
    if params.bilateral_compat > 0:
        crf.addPairwiseBilateral(sxy=float(params.bilateral_sxy),
                                 srgb=float(params.bilateral_srgb),
                                 rgbim=np.require(image, np.uint8, ["C", "W"]),  # no views
                                 compat=float(params.bilateral_compat))
    q = np.asarray(crf.inference(int(params.iterations)), dtype=np.float32)
    return q.reshape(n_labels, height, width)


def segment_crf(
    source: MapSource,
    image: ImageLike | None = None,
    *,
    bg_power: float = CRFParams.bg_power,
    iterations: int = CRFParams.iterations,
    gaussian_sxy: float = CRFParams.gaussian_sxy,
    gaussian_compat: float = CRFParams.gaussian_compat,
    bilateral_sxy: float = CRFParams.bilateral_sxy,
    bilateral_srgb: float = CRFParams.bilateral_srgb,
    bilateral_compat: float = CRFParams.bilateral_compat,
    background: Literal["otsu", "constant", "power"] = CRFParams.background,
    bg_threshold: float = CRFParams.bg_threshold,
    normalize: bool = CRFParams.normalize,
    sharpness: float = CRFParams.sharpness,
    map_gamma: float | None = None,
) -> Segmentation:
    """Segment the image into background and the candidate classes with a dense CRF.

    Args:
        source: a :class:`~dcsm.SaliencyResult` (its image and maps, in candidate order) or a
            mapping from class name to (H, W) map in [0, 1] (then ``image`` is required).
        image: the image, when ``source`` is a mapping (or to override the result's image).
        bg_power, iterations, gaussian_sxy, gaussian_compat, bilateral_sxy, bilateral_srgb,
            bilateral_compat, background, bg_threshold, normalize, sharpness: see
            :class:`CRFParams` and the module docstring.
        map_gamma: the power the maps were raised to relative to their maximum, undone first
            (default: a result's ``gamma`` parameter, 1 for a mapping; see
            :func:`dcsm.segmentation.segment`).

    Returns:
        A :class:`Segmentation` with the marginals in ``probabilities``.

    Raises:
        DcsmError: for a bad parameter, or maps that do not fit the image or [0, 1].
    """
    params = CRFParams(bg_power, iterations, gaussian_sxy, gaussian_compat, bilateral_sxy,
                       bilateral_srgb, bilateral_compat, background, bg_threshold, normalize,
                       sharpness)
    gamma = map_power(source, map_gamma)
    img, names, maps = maps_and_image(source, image)
    return crf_segmentation(img, names, undo_power(maps, gamma), params)


def crf_segmentation(image: np.ndarray, names: list[str], maps: np.ndarray,
                     params: CRFParams) -> Segmentation:
    """:func:`segment_crf` of an image and its maps already read and checked
    (:func:`~dcsm.segmentation.common.maps_and_image`): (H, W, 3) uint8, the class names and
    their (K, H, W) float32 maps in [0, 1]."""
    unaries = unary_probabilities(maps, params.bg_power, background=params.background,
                                  bg_threshold=params.bg_threshold, normalize=params.normalize,
                                  sharpness=params.sharpness)
    q = crf_marginals(image, unaries, params)
    labels = np.argmax(q, axis=0).astype(np.uint8)
    masks = masks_from_labels(labels, names)
    return Segmentation(labels=labels, masks=masks, candidates=names, method="crf",
                        parameters=params.as_dict(), regions=dict(masks), probabilities=q)
