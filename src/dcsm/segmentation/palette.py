"""Label images in the PASCAL VOC palette.

The VOC palette gives label i the colour whose red, green and blue bits are the bits of i
interleaved: bit 3j of i is bit 7 - j of red, bit 3j + 1 of green, bit 3j + 2 of blue. So 0 is
black (background), 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), ..., 255 (224, 224, 192).
``labels.png`` is a palette ("P" mode) PNG whose pixel values are the labels themselves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io import save_png


def voc_palette(n: int = 256) -> np.ndarray:
    """The first ``n`` (<= 256) colours of the PASCAL VOC palette, (n, 3) uint8."""
    if not 0 <= n <= 256:
        raise DcsmError(f"the VOC palette has 256 colours, asked for {n}")
    i = np.arange(n, dtype=np.int64)
    rgb = np.zeros((n, 3), dtype=np.int64)
    for j in range(8):
        for channel in range(3):
            rgb[:, channel] |= ((i >> (3 * j + channel)) & 1) << (7 - j)
    return rgb.astype(np.uint8)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 2 or arr.dtype != np.uint8:
        raise DcsmError(f"labels must be a 2-D uint8 array, got {arr.dtype} {arr.shape}")
    return arr


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """The labels' VOC colours, (H, W, 3) uint8."""
    return voc_palette()[_check_labels(labels)]


def labels_image(labels: np.ndarray) -> Image.Image:
    """A "P" mode Pillow image holding ``labels`` as pixel values, with the VOC palette."""
    im = Image.fromarray(np.ascontiguousarray(_check_labels(labels)))  # "L"
    im.putpalette(voc_palette().ravel().tolist())  # makes it "P", values unchanged
    return im


def save_labels(path: Path, labels: np.ndarray) -> None:
    """Atomically write ``labels`` as a VOC-palette PNG (read back with
    ``np.asarray(PIL.Image.open(path))``)."""
    save_png(Path(path), labels_image(labels))


def label_overlay(image: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The labels' colours blended over the image: ``round((1 - a) * image + a * colour)``
    for foreground labels, and the background (label 0) darkened to 40 %."""
    colours = colorize_labels(labels).astype(np.float64)
    picture = np.asarray(image, dtype=np.float64)[:, :, :3]
    if picture.shape[:2] != labels.shape:
        raise DcsmError(f"labels are {labels.shape[1]}x{labels.shape[0]} pixels but the image "
                        f"is {picture.shape[1]}x{picture.shape[0]}")
    fg = (labels > 0)[:, :, None]
    out = np.where(fg, (1 - alpha) * picture + alpha * colours, 0.4 * picture)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
