"""What an explanation returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

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


@dataclass
class BatchResult:
    """Class saliency maps for a batch of images given as a tensor.

    Attributes:
        maps: ``(N, K, H, W)`` float32 maps in [0, 1] on the input's device; ``maps[n, k]``
            is image n's map of its k-th class.
        classes: ``(N, K)`` class indices (CPU, int64).
        scores: ``(N, K)`` the classes' scores (probabilities) on each image (CPU).
        class_names: ``class_names[n][k]``, the name of ``classes[n, k]``.
        method: ``dcsm``, ``simonyan``, ``guided`` or ``gradcam``.
        model: the adapter's name.
        parameters: every setting that produced the maps.
        contrast: ``(N, K')`` the classes subtracted (the first K are ``classes``).
        layer_maps: with ``per_layer=True``, ``{layer: (N, K, H, W)}`` single-layer maps.
    """

    maps: torch.Tensor
    classes: torch.Tensor
    scores: torch.Tensor
    class_names: list[list[str]]
    method: str
    model: str
    parameters: dict[str, object] = field(default_factory=dict)
    contrast: torch.Tensor | None = None
    layer_maps: dict[str, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def candidates(self, n: int) -> list[Candidate]:
        """Image n's classes as :class:`Candidate` records."""
        return [Candidate(int(i), name, float(s)) for i, name, s in
                zip(self.classes[n].tolist(), self.class_names[n], self.scores[n].tolist(),
                    strict=True)]
