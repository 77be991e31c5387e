"""Turning user images into tensors at the scales the method needs."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dcsm.adapters.base import ModelAdapter
from dcsm.errors import DcsmError
from dcsm.io import load_image

ImageLike = np.ndarray | Image.Image | str | os.PathLike


def as_rgb_array(image: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB from an array (uint8 grey or RGB/RGBA), a PIL image or a path."""
    if isinstance(image, str | os.PathLike):
        return load_image(image)
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        raise DcsmError(f"image arrays must be uint8, got {arr.dtype}")
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise DcsmError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}")
    if min(arr.shape[:2]) < 8:
        raise DcsmError(f"image is {arr.shape[1]}x{arr.shape[0]} pixels; at least 8x8 is needed")
    return np.ascontiguousarray(arr[:, :, :3])


def scaled_size(height: int, width: int, scale: float, min_side: int) -> tuple[int, int]:
    """``round(scale * size)``, enlarged (keeping the aspect) so the short side >= min_side."""
    h, w = max(1, round(height * scale)), max(1, round(width * scale))
    short = min(h, w)
    if short < min_side:
        f = min_side / short
        h, w = max(min_side, round(h * f)), max(min_side, round(w * f))
    return h, w


def model_input(adapter: ModelAdapter, image: np.ndarray, scale: float) -> torch.Tensor:
    """The preprocessed (1, 3, h, w) input for ``image`` at ``scale``."""
    x = adapter.preprocess(image)
    size = scaled_size(image.shape[0], image.shape[1], scale, adapter.min_input)
    if size != tuple(x.shape[-2:]):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x.to(adapter.device)


def reference_scale(scales: tuple[float, ...] | list[float]) -> int:
    """Index of the scale closest to 1 (the image as given)."""
    return min(range(len(scales)), key=lambda i: (abs(scales[i] - 1.0), scales[i]))
