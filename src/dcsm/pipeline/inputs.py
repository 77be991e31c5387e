"""Input preparation: an image or a tensor batch made ready for the model.

An image (path, array, PIL image) is read (at most ``max_pixels`` pixels, checked before
decoding), resized to the working resolution (:func:`dcsm.pipeline.images.working_size`) and
preprocessed; a preprocessed float tensor ``(N, 3, H, W)`` is checked and resized the same way.
Also the checks of two settings every explainer takes: the scale ratios and the precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.images import (
    ImageLike,
    as_rgb_array,
    image_input,
    resize_tensor,
    working_size,
)

PRECISIONS: dict[str, torch.dtype | None] = {
    "float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    """Validated scale ratios."""
    out = tuple(float(s) for s in scales)
    if not out:
        raise DcsmError("at least one scale is needed")
    if any(not np.isfinite(s) or s <= 0 or s > 8 for s in out):
        raise DcsmError(f"scales must lie in (0, 8], got {list(out)}")
    return out


def check_precision(precision: str) -> torch.dtype | None:
    """The autocast dtype of a precision name."""
    if precision not in PRECISIONS:
        raise DcsmError(f"unknown precision '{precision}'; known: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


@dataclass
class Prepared:
    """An input ready for the model: the working-resolution tensor and how to return maps.

    ``x`` is ``(N, 3, h, w)`` on the model's device; maps are computed at ``(h, w)`` and resized
    to ``out_size``; ``image`` is the RGB array of a single image (None for tensors).
    """

    x: torch.Tensor
    out_size: tuple[int, int]
    image: np.ndarray | None
    out_device: torch.device


def prepare(adapter: ModelAdapter, image: ImageLike | torch.Tensor,
            max_side: int | None, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Prepared:
    """Turn an image (path, array, PIL) or a preprocessed tensor (N, 3, H, W) into model input.

    Images are read by :func:`dcsm.pipeline.images.as_rgb_array` (at most ``max_pixels`` pixels) and
    resized to the working resolution (:mod:`dcsm.pipeline.images`) before preprocessing; tensors
    are
    taken as preprocessed and resized the same way.
    """
    if isinstance(image, torch.Tensor):
        x = image.unsqueeze(0) if image.ndim == 3 else image
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            raise DcsmError(f"a tensor input must be (N, 3, H, W) or (3, H, W), got "
                            f"{tuple(image.shape)}")
        if not x.is_floating_point():
            raise DcsmError(f"a tensor input must be preprocessed floats, got {x.dtype}")
        if min(x.shape[-2:]) < 8:
            raise DcsmError(f"tensor images must be at least 8x8, got {tuple(x.shape[-2:])}")
        if not torch.isfinite(x).all():
            raise DcsmError("the input tensor holds NaN or infinite values")
        size = (int(x.shape[-2]), int(x.shape[-1]))
        work = working_size(*size, max_side)
        moved = x.detach().to(adapter.device, torch.float32)
        return Prepared(resize_tensor(moved, work), size, None, x.device)
    img = as_rgb_array(image, max_pixels)
    size = (img.shape[0], img.shape[1])
    x = image_input(adapter, img, working_size(*size, max_side))
    return Prepared(x, size, img, torch.device("cpu"))


__all__ = ["PRECISIONS", "Prepared", "check_precision", "check_scales", "prepare"]
