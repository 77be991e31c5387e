"""What an explanation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dcsm.candidates import Candidate


@dataclass
class SaliencyResult:
    """Class saliency maps for one image.

    Attributes:
        image: the (H, W, 3) uint8 RGB image explained.
        maps: one float32 (H, W) map in [0, 1] per candidate, keyed by class name, in the order
            of ``candidates``.
        candidates: the classes explained, with their scores.
        method: ``dcsm``, ``simonyan``, ``guided`` or ``gradcam``.
        model: the adapter's name.
        parameters: every setting that produced the maps (JSON-friendly).
        layer_maps: with ``per_layer=True``, ``layer_maps[class][layer]`` single-layer maps
            (averaged over scales), as in the paper's Fig. 2.
        contrast: the classes subtracted (equal to ``candidates`` unless a preset tops them up).
    """

    image: np.ndarray
    maps: dict[str, np.ndarray]
    candidates: list[Candidate]
    method: str
    model: str
    parameters: dict[str, object] = field(default_factory=dict)
    layer_maps: dict[str, dict[str, np.ndarray]] | None = None
    contrast: list[Candidate] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """The JSON summary written next to the maps."""
        return {
            "model": self.model,
            "method": self.method,
            "image_size": {"height": int(self.image.shape[0]), "width": int(self.image.shape[1])},
            "parameters": self.parameters,
            "candidates": [c.as_dict() for c in self.candidates],
            "contrast_classes": [c.as_dict() for c in self.contrast],
        }
