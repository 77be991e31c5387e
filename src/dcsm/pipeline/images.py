"""Turning user images into tensors at the working resolution and the scales the method needs.

**Working resolution.** Images larger than ``max_side`` pixels on their long side (default
:data:`DEFAULT_MAX_SIDE`, 512) are explained at that size and their maps are returned at the
image's own size (bilinear). ImageNet classifiers are trained on 224 x 224 crops of photos whose
objects fill much of the frame, and the paper runs its PASCAL VOC model on VOC's photos, at most
500 pixels a side, times 1 to 1.6; 512 keeps that regime for any photo. A 12-megapixel photo run
at its own size shows the model objects 8 to 18 times larger than it was trained on: classes then
come from texture (a dog's fur read as "barn spider"), and time and memory grow with the pixel
count (``benchmarks/working_resolution.py`` measures both). ``max_side=None`` asks for the full
resolution; :meth:`dcsm.DistinctSaliency.estimate_memory` says what it will take.

Images go through Pillow's antialiased resize as uint8 before the normalisation, so a large photo
is never held as a full-size float tensor. Tensors (already preprocessed) are resized with
antialiased bilinear interpolation.

**Pixel limit.** Paths, PIL images and arrays are read by one set of rules
(:func:`as_rgb_array`), with at most ``max_pixels`` pixels (default
:data:`dcsm.io.DEFAULT_MAX_PIXELS`, 50 million), checked from a file's header before anything
is decoded; the explainers take ``max_pixels`` too.

**Display sizes.** :func:`shrink_image` and :func:`shrink_map` bring photos and maps down to the
sizes previews (:data:`PREVIEW_SIDE`) and figures (:data:`FIGURE_SIDE`) are drawn at.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS, array_to_rgb, load_image, pil_to_rgb
from dcsm.pipeline.adapters.base import ModelAdapter

ImageLike = np.ndarray | Image.Image | str | os.PathLike[str]
DEFAULT_MAX_SIDE = 512


def as_rgb_array(image: ImageLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a path, a PIL image or a uint8 array (grey, RGB or RGBA), by
    the same rules whichever it is (:func:`dcsm.io.load_image`): at most ``max_pixels`` pixels
    (checked before decoding) and at least 8 a side, EXIF orientation applied, 16-bit and
    float images rescaled from their own range, transparency composited over white."""
    if isinstance(image, str | os.PathLike):
        return load_image(image, max_pixels)
    if isinstance(image, Image.Image):
        return pil_to_rgb(image, max_pixels)
    return array_to_rgb(image, max_pixels)


def scaled_size(height: int, width: int, scale: float, min_side: int) -> tuple[int, int]:
    """``round(scale * size)``, enlarged (keeping the aspect) so the short side >= min_side."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    short = min(h, w)
    if short < min_side:
        f = min_side / short
        h, w = max(min_side, round(h * f)), max(min_side, round(w * f))
    return h, w


def check_max_side(max_side: int | None) -> int | None:
    """A validated working-resolution bound (None: the full resolution)."""
    if max_side is None:
        return None
    if isinstance(max_side, bool) or not isinstance(max_side, int | np.integer) or max_side < 32:
        raise DcsmError(f"max_side must be an integer of at least 32 or None, got {max_side}")
    return int(max_side)


def working_size(height: int, width: int, max_side: int | None,
                 min_short: int = 0) -> tuple[int, int]:
    """``(height, width)`` shrunk, keeping the aspect, so the long side is at most ``max_side``
    (None: unchanged), each side rounded and at least 1.

    ``min_short``: shrink no further than keeps the short side at ``min_short`` pixels (or its
    own size, if smaller), so that an 8 x 5000 strip is not squeezed to one pixel: the long
    side is then ``ceil(long * min(short, min_short) / short)`` instead. The one rule every
    shrinking in dcsm follows (the working resolution, the segmentation's working size, the
    previews and figures).
    """
    long, short = max(height, width), min(height, width)
    if max_side is None or long <= max_side:
        return height, width
    side = max_side
    if min_short > 0 and short > 0:
        side = max(side, math.ceil(long * min(short, min_short) / short))
        if side >= long:
            return height, width
    f = side / long
    return max(1, round(height * f)), max(1, round(width * f))


def resize_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bilinear resize of ``(N, C, h, w)`` to ``size`` (a no-op at that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def image_input(adapter: ModelAdapter, image: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The preprocessed (1, 3, h, w) input of an RGB uint8 image resized to ``size``."""
    return adapter.preprocess(resize_image(image, size)).to(adapter.device)


def scaled_input(adapter: ModelAdapter, x: torch.Tensor, scale: float) -> torch.Tensor:
    """The working-resolution input ``x`` at ``scale`` (the model's fixed size, if it has one)."""
    if adapter.input_size is not None:
        return resize_tensor(x, adapter.input_size)
    size = scaled_size(x.shape[-2], x.shape[-1], scale, adapter.min_input)
    return resize_tensor(x, size)


def model_input(adapter: ModelAdapter, image: np.ndarray, scale: float) -> torch.Tensor:
    """The preprocessed (1, 3, h, w) input for ``image`` (at its own size) at ``scale``."""
    x = adapter.preprocess(image).to(adapter.device)
    return scaled_input(adapter, x, scale)


def reference_scale(scales: tuple[float, ...] | list[float]) -> int:
    """Index of the scale closest to 1 (the image as given)."""
    return min(range(len(scales)), key=lambda i: (abs(scales[i] - 1.0), scales[i]))


# ----------------------------------------------------------------------------- display sizes
#: The long side of the PNG previews of large photos (the maps stay at full size).
PREVIEW_SIDE = 2048
#: The long side of the images in the drawn figures.
FIGURE_SIDE = 1024


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 image resized (Pillow's antialiased bilinear) to ``size`` = (h, w); the
    image itself at that size."""
    h, w = size
    if (h, w) == image.shape[:2]:
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


def resize_map(m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float map resized (bilinear, in float32) to ``size`` = (h, w); the map itself at that
    size."""
    h, w = size
    if (h, w) == m.shape:
        return m
    pil = Image.fromarray(np.ascontiguousarray(m, dtype=np.float32), mode="F")
    return np.asarray(pil.resize((w, h), Image.Resampling.BILINEAR), dtype=np.float32)


def shrink_image(image: np.ndarray, side: int) -> np.ndarray:
    """An RGB uint8 image resized (antialiased) so its long side is at most ``side``."""
    return resize_image(image, working_size(image.shape[0], image.shape[1], side))


def shrink_map(m: np.ndarray, side: int) -> np.ndarray:
    """A float map resized (bilinear) so its long side is at most ``side``."""
    return resize_map(m, working_size(m.shape[0], m.shape[1], side))
