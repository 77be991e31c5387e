"""What an explanation returns."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from dcsm.errors import DcsmError
from dcsm.io.names import npz_keys
from dcsm.pipeline.candidates import Candidate
from dcsm.pipeline.images import FIGURE_SIDE, shrink_image, shrink_map

# dcsm.io.viz and matplotlib.pyplot are imported by the methods that draw: `import dcsm` does
# not load matplotlib (a quarter of its import time).
if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: The long side, in pixels, of the pictures a result shows of itself in a notebook.
DISPLAY_SIDE = 640


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
        """The JSON summary written next to the maps.

        ``map_keys`` maps each array's key in ``maps.npz`` to its class name
        (:func:`dcsm.io.names.npz_keys`: the class name itself unless it is not a safe file name or
        differs only in case from another).
        """
        return {
            "model": self.model,
            "method": self.method,
            "image_size": {"height": int(self.image.shape[0]), "width": int(self.image.shape[1])},
            "parameters": self.parameters,
            "candidates": [c.as_dict() for c in self.candidates],
            "contrast_classes": [c.as_dict() for c in self.contrast],
            "map_keys": {key: name for name, key in npz_keys(list(self.maps)).items()},
        }

    # ------------------------------------------------------------------------- display
    def class_name(self, cls: str | int) -> str:
        """The key in ``maps`` of a class given by name or by the model's class index.

        Raises:
            DcsmError: if the result holds no map of that class (one line, naming those it has).
        """
        if isinstance(cls, str) and cls in self.maps:
            return cls
        if isinstance(cls, (int, np.integer)) and not isinstance(cls, bool):
            for c in self.candidates:
                if c.index == int(cls) and c.name in self.maps:
                    return c.name
        raise DcsmError(f"no map of class {cls!r} in this result; it has "
                        f"{', '.join(self.maps) or 'none'}")

    def overlay(self, cls: str | int, alpha: float = 0.5, cmap: str = "viridis") -> np.ndarray:
        """Class ``cls``'s map over the image: an ``(H, W, 3)`` uint8 array the image's size.

        Drawn by :func:`dcsm.io.viz.overlay` with opacity ``alpha`` and colormap ``cmap``.

        ``cls`` is a class name (a key of ``maps``) or the model's index of a candidate.

        Raises:
            DcsmError: for a class without a map, an opacity outside [0, 1] or an unknown
                colormap.
        """
        from dcsm.io.viz import overlay

        return overlay(self.image, self.maps[self.class_name(cls)], alpha, cmap)

    def _titles(self) -> dict[str, str]:
        """Each map's title: its class name and score."""
        return {c.name: f"{c.name} ({c.score:.3f})" for c in self.candidates if c.name in self.maps}

    def figure(self, style: str = "overlay", cmap: str | None = None, alpha: float = 0.5,
               figure: Figure | None = None) -> Figure:
        """The image and each class's map, titled with its score.

        Drawn by :func:`dcsm.io.viz.maps_figure`, the image at most
        :data:`~dcsm.pipeline.images.FIGURE_SIDE` pixels a side.

        ``style`` ``"overlay"`` draws each map over the image through ``cmap`` (viridis by
        default) with a colour bar; ``"paper"`` draws grey maps side by side. ``figure``: draw
        into this figure instead of a new Agg-backed one.
        """
        return self._figure(FIGURE_SIDE, style=style, cmap=cmap, alpha=alpha, figure=figure)

    def _figure(self, side: int, **options: Any) -> Figure:  # noqa: ANN401
        """:func:`dcsm.io.viz.maps_figure` of the image and maps shrunk to ``side`` pixels."""
        from dcsm.io.viz import maps_figure

        small = shrink_image(self.image, side)
        maps = {n: shrink_map(m, side) for n, m in self.maps.items()}
        return maps_figure(small, maps, self._titles(), f"{self.method} ({self.model})",
                           **options)

    def show(self, style: str = "overlay", cmap: str | None = None, alpha: float = 0.5) -> None:
        """Draw :meth:`figure` with ``matplotlib.pyplot`` and show it.

        In a notebook the figure shows inline; elsewhere, in pyplot's window.
        """
        import matplotlib.pyplot as plt

        fig = plt.figure()
        self.figure(style, cmap, alpha, figure=fig)
        plt.show()

    def _repr_png_(self) -> bytes:
        """The notebook's PNG of the result.

        It is :meth:`figure` (the image, each class's map over it with its score, a colour bar)
        at most :data:`DISPLAY_SIDE` pixels a panel.
        """
        from dcsm.io.viz import figure_to_png

        return figure_to_png(self._figure(DISPLAY_SIDE))

    def _repr_html_(self) -> str:
        """The notebook's HTML of the result.

        A line naming the model and method, then the image and each class's map over it
        (:meth:`overlay`, viridis, opacity 0.5) as embedded PNGs at most :data:`DISPLAY_SIDE`
        pixels a side, captioned with the class and score.
        """
        from dcsm.io.viz import html_gallery, overlay

        small = shrink_image(self.image, DISPLAY_SIDE)
        scores = {c.name: c.score for c in self.candidates}
        items = [("image", f"image ({self.image.shape[1]}x{self.image.shape[0]})", small)]
        for name, m in self.maps.items():
            caption = f"{name} {scores[name]:.3f}" if name in scores else name
            items.append((name, caption, overlay(small, shrink_map(m, DISPLAY_SIDE))))
        head = (f"<p><b>{html.escape(self.method)}</b> maps of {len(self.maps)} "
                f"class{'es' if len(self.maps) != 1 else ''} ({html.escape(self.model)})</p>")
        return head + html_gallery(items)


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
        merged, contrast_merged: ``merged[n][k]``, the look-alike classes merged into image n's
            k-th class (:attr:`dcsm.pipeline.candidates.Candidate.merged`), and the same for the
            contrast
            classes; None where nothing was recorded.
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
    merged: list[list[tuple[str, ...]]] | None = None
    contrast_merged: list[list[tuple[str, ...]]] | None = None

    def __len__(self) -> int:
        """The number of images in the batch."""
        return int(self.maps.shape[0])

    def _contrast_names(self) -> list[list[str]]:
        if self.contrast_names is None:
            raise ValueError("a batch result with contrast classes needs their names")
        return self.contrast_names

    def _contrast_scores(self) -> torch.Tensor:
        if self.contrast_scores is None:
            raise ValueError("a batch result with contrast classes needs their scores")
        return self.contrast_scores

    def results(self, images: list[np.ndarray]) -> list[SaliencyResult]:
        """One :class:`SaliencyResult` per image, its maps brought to that image's size.

        ``images[n]`` is image n as an RGB uint8 array, at its own (full) size; the batch was
        explained at a working resolution of the same aspect.
        """
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
            k_contrast = 0 if self.contrast is None else int(self.contrast.shape[1])
            contrast_merged = [()] * k_contrast if self.contrast_merged is None else \
                self.contrast_merged[n]
            contrast = [] if self.contrast is None else [
                Candidate(int(i), name, float(score), tuple(m)) for i, name, score, m in zip(
                    self.contrast[n].tolist(), self._contrast_names()[n],
                    self._contrast_scores()[n].tolist(), contrast_merged, strict=True)]
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
        merged = [()] * int(self.classes.shape[1]) if self.merged is None else self.merged[n]
        return [Candidate(int(i), name, float(s), tuple(m)) for i, name, s, m in
                zip(self.classes[n].tolist(), self.class_names[n], self.scores[n].tolist(),
                    merged, strict=True)]
