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
        contrast_names, contrast_scores: their names and scores, per image.
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
    contrast_names: list[list[str]] | None = None
    contrast_scores: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.maps.shape[0])

    def results(self, images: list[np.ndarray]) -> list[SaliencyResult]:
        """One :class:`SaliencyResult` per image, its maps brought to that image's size.

        ``images[n]`` is image n as an RGB uint8 array, at its own (full) size; the batch was
        explained at a working resolution of the same aspect.
        """
        import torch.nn.functional as F

        if len(images) != len(self):
            raise ValueError(f"{len(images)} images for a batch of {len(self)}")
        out = []
        for n, image in enumerate(images):
            size = (int(image.shape[0]), int(image.shape[1]))

            def full(m: torch.Tensor, size: tuple[int, int] = size) -> np.ndarray:
                if tuple(m.shape[-2:]) != size:
                    m = F.interpolate(m[None].float(), size=size, mode="bilinear",
                                      align_corners=False)[0]
                return m.clamp(0, 1).cpu().numpy().astype(np.float32)

            maps = full(self.maps[n])
            names = self.class_names[n]
            contrast = [] if self.contrast is None else [
                Candidate(int(i), name, float(score)) for i, name, score in zip(
                    self.contrast[n].tolist(), self.contrast_names[n],  # type: ignore[index]
                    self.contrast_scores[n].tolist(), strict=True)]  # type: ignore[union-attr]
            result = SaliencyResult(image=image, maps=dict(zip(names, maps, strict=True)),
                                    candidates=self.candidates(n), method=self.method,
                                    model=self.model, parameters=dict(self.parameters),
                                    contrast=contrast)
            if self.layer_maps is not None:
                per_layer = {layer: full(m[n]) for layer, m in self.layer_maps.items()}
                result.layer_maps = {name: {layer: per_layer[layer][k] for layer in per_layer}
                                     for k, name in enumerate(names)}
            out.append(result)
        return out

    def candidates(self, n: int) -> list[Candidate]:
        """Image n's classes as :class:`Candidate` records."""
        return [Candidate(int(i), name, float(s)) for i, name, s in
                zip(self.classes[n].tolist(), self.class_names[n], self.scores[n].tolist(),
                    strict=True)]
