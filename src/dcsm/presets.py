"""Named settings of the method.

``paper`` (default) follows the paper's text: scales 1, 1.2, 1.4, 1.6; Eq. 2 on each layer's
maps; ``tanh(3 M / max M)`` per layer and scale; the mean over layers and scales (Eq. 3);
candidates from the image as given.

``released`` follows the authors' MatConvNet code (``shimoda-uec/mat_dcsm``, ``dcsm.m``):
scales 0.8, 1, 1.2; each pairwise difference of the upsampled max-abs maps divided by its own
maximum, passed through ``tanh(3 x)``, clipped at zero and summed over layers, other classes and
scales; one final ``tanh(3 s / max s)``; candidates are the classes over the threshold at any
scale, and the set they are contrasted with is topped up to at least four by summed score. (The
released code also pads the image into a 500 x 500 canvas first; dcsm works on the image as
given.)

``tuned`` is dcsm's own choice, measured on the grid pointing game (``dcsm bench gridpg``,
``docs/RESULTS.md``): each class's map minus only the strongest other candidate's at each
location (:func:`dcsm.contrast.subtract_strongest`), ``tanh(M / max M)`` (alpha 1), the image at
scale 1 only, per-model layers (``layers``): EfficientNet-Lite0's stride-16 blocks
``block5``..``block10`` and SqueezeNet 1.1's ``fire3``..``fire5`` (strides 4 and 8), any other
model its default layers; and candidates ranked by the locations of the class score map they win
(the ``score_map`` rule of :mod:`dcsm.candidates`) rather than by the pooled scores.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

from dcsm.candidates import CANDIDATE_RULES, CandidateRule
from dcsm.contrast import CONTRASTS
from dcsm.errors import DcsmError
from dcsm.layer_maps import UPSAMPLE_ORDERS, UpsampleOrder

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
    description: str = ""
    layers: tuple[tuple[str, tuple[str, ...]], ...] = ()

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
        description="the authors' MatConvNet code: per-pair normalised tanh contrasts summed over "
                    "layers, classes and scales 0.8-1.2",
    ),
    "tuned": Preset(
        name="tuned", scales=(1.0,), fusion="paper", candidate_rule="score_map",
        min_contrast=1, contrast="strongest", alpha=1.0,
        layers=(("efficientnet_lite0", tuple(f"block{i}" for i in range(5, 11))),
                ("squeezenet1_1", ("fire3", "fire4", "fire5"))),
        description="tuned on the grid pointing game (docs/RESULTS.md): only the strongest other "
                    "class subtracted, tanh(M/max M), scale 1; EfficientNet-Lite0 blocks 5-10 "
                    "(stride 16), SqueezeNet fire3-5 (strides 4-8), other models their defaults; "
                    "candidates ranked by the score map's locations they win",
    ),
}


def get_preset(name: str | Preset) -> Preset:
    """A preset by name."""
    if isinstance(name, Preset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise DcsmError(f"unknown preset '{name}'; known: {', '.join(PRESETS)}") from None
