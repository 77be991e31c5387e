"""Reading images: any file Pillow decodes, a Pillow image or an array, to an ``(H, W, 3)`` uint8
RGB array, under a pixel limit checked before decoding; every problem a user can fix is a one-line
:class:`~dcsm.errors.DcsmError`."""

from __future__ import annotations

import contextlib
import math
import os
import re
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from dcsm.errors import DcsmError, one_line

#: The smallest accepted image side, in pixels.
MIN_SIDE = 8
#: The default limit on an image's pixels (width x height), checked from the file's header
#: before decoding: 50 million, a 8660 x 5773 photo; larger images need ``max_pixels`` /
#: ``--max-pixels``. The arrays of one take 150 MB, its maps 200 MB per class.
DEFAULT_MAX_PIXELS = 50_000_000


# Pillow modes holding one integer or float channel with a range other than 0..255.
_WIDE_GREY_MODES = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})
# Pillow modes with an alpha (or premultiplied alpha) channel.
_ALPHA_MODES = frozenset({"LA", "La", "PA", "RGBA", "RGBa"})


def check_max_pixels(max_pixels: int | None) -> int | None:
    """A validated pixel limit: a positive integer, or None for no limit."""
    if max_pixels is None:
        return None
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int | np.integer) \
            or max_pixels < 1:
        raise DcsmError(f"max_pixels must be a positive integer or None, got {max_pixels!r}")
    return int(max_pixels)


def _too_many_pixels(shown: str, width: int, height: int, max_pixels: int) -> DcsmError:
    return DcsmError(f"{shown} is {width}x{height} pixels ({width * height:,}), more than "
                     f"dcsm's limit of {max_pixels:,} (max_pixels, --max-pixels)")


def _check_pixels(shown: str, width: int, height: int, max_pixels: int | None) -> None:
    """DcsmError when ``width x height`` is above ``max_pixels`` or a side below MIN_SIDE."""
    if max_pixels is not None and width * height > max_pixels:
        raise _too_many_pixels(shown, width, height, max_pixels)
    if width < MIN_SIDE or height < MIN_SIDE:
        raise DcsmError(
            f"{shown} is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed"
        )


_PILLOW_LIMIT_LOCK = threading.Lock()


@contextlib.contextmanager
def _pillow_limit(max_pixels: int | None) -> Iterator[None]:
    """Pillow's decompression-bomb check made to agree with dcsm's pixel limit.

    dcsm checks the size from the header itself, so Pillow's warning (above
    ``PIL.Image.MAX_IMAGE_PIXELS``, 89,478,485 by default) is not shown. Pillow refuses images of
    more than twice that with an error, which dcsm words with its own limit when that is lower
    (the default); when ``max_pixels`` is higher (or None) Pillow's limit is lifted while dcsm
    reads the image, under a lock, and put back.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pillow = Image.MAX_IMAGE_PIXELS
        if pillow is None or (max_pixels is not None and max_pixels <= 2 * pillow):
            yield
            return
        with _PILLOW_LIMIT_LOCK:
            pillow = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = pillow


def error_reason(exc: BaseException, max_pixels: int | None = None) -> str:
    """A short, single-line explanation of why a file could not be read (by Pillow) or written."""
    if isinstance(exc, Image.DecompressionBombError):
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
        pillow = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None and (pillow is None or max_pixels <= 2 * pillow):
            return f"it has {size}, more than dcsm's limit of {max_pixels:,} (max_pixels, " \
                   "--max-pixels)"
        return f"it has {size}, more than Pillow's limit (PIL.Image.MAX_IMAGE_PIXELS)"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format"
    if isinstance(exc, PermissionError):
        return "permission denied"
    text = one_line(str(exc))
    return text if text else type(exc).__name__


# JPEG frame markers (SOF0..SOF15; C4, C8 and CC are other markers); of those, the Huffman-coded
# DCT frames: baseline, extended sequential and progressive.
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_HUFFMAN_DCT_FRAMES = frozenset({0xC0, 0xC1, 0xC2})


def _jpeg_scan_start(fp: IO[bytes]) -> tuple[int, int] | None:
    """The frame marker of a JPEG stream and the offset where its first scan's data begins,
    read from the markers; None where they cannot be told."""
    fp.seek(0)
    if fp.read(2) != b"\xff\xd8":
        return None
    frame = None
    while True:
        byte = fp.read(1)
        if not byte:
            return None
        if byte != b"\xff":
            continue  # junk between segments, which decoders skip
        marker = fp.read(1)
        while marker == b"\xff":  # fill bytes
            marker = fp.read(1)
        if not marker or marker[0] == 0xD9:
            return None
        code = marker[0]
        if code in (0x00, 0x01) or 0xD0 <= code <= 0xD8:  # no length field
            continue
        field = fp.read(2)
        if len(field) < 2 or int.from_bytes(field, "big") < 2:
            return None
        length = int.from_bytes(field, "big")
        if code in _JPEG_FRAMES and frame is None:
            frame = code
        if code == 0xDA:
            return None if frame is None else (frame, fp.tell() + length - 2)
        fp.seek(length - 2, os.SEEK_CUR)


def _check_jpeg_data(im: Image.Image, shown: str) -> None:
    """DcsmError for a Huffman-coded JPEG whose compressed data is too short for its size.

    libjpeg fills what a file lacks with grey without an error when the data ends in a
    marker, so a few kilobytes can claim millions of pixels. Every 8x8 block of the first
    component needs a Huffman code of at least one bit in the first scan that holds it, so the
    data after the first scan's header must hold at least ``blocks / 8`` bytes.
    """
    if not isinstance(im, JpegImagePlugin.JpegImageFile) or not im.layer:
        return
    fp = getattr(im, "fp", None)
    if fp is None:
        return
    position = fp.tell()
    try:
        found = _jpeg_scan_start(fp)
        size = fp.seek(0, os.SEEK_END)
    finally:
        fp.seek(position)
    if found is None or found[0] not in _HUFFMAN_DCT_FRAMES:
        return
    width, height = im.size
    h_max = max(max(c[1] for c in im.layer), 1)
    v_max = max(max(c[2] for c in im.layer), 1)
    _, h, v, _ = im.layer[0]
    blocks = math.ceil(math.ceil(width * h / h_max) / 8) * math.ceil(
        math.ceil(height * v / v_max) / 8)
    data = size - found[1]
    if data * 8 < blocks:
        raise DcsmError(f"cannot read {shown}: it is truncated or corrupt ({max(data, 0):,} "
                        f"bytes of compressed data cannot hold the {width}x{height} pixels "
                        f"its header declares)")


def _decode(im: Image.Image, shown: str, max_pixels: int | None) -> np.ndarray:
    """The ``(H, W, 3)`` uint8 RGB array of an opened Pillow image, upright.

    The size (from the header: nothing is decoded yet for an image opened from a file) is
    checked against ``max_pixels`` and :data:`MIN_SIDE`, and a JPEG's data against its size,
    before the pixels are decoded. Pillow's errors propagate; ``shown`` names the image.
    """
    width, height = im.size
    _check_pixels(shown, width, height, max_pixels)
    _check_jpeg_data(im, shown)
    im.load()
    upright = ImageOps.exif_transpose(im)
    return _to_rgb_array(im if upright is None else upright)


def _rescale_to_uint8(values: np.ndarray) -> np.ndarray:
    """Map a single-channel array linearly from its own min..max onto 0..255.

    Non-finite values become 0; a constant image becomes all 0.
    """
    data = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(data)
    if not finite.any():
        return np.zeros(data.shape, dtype=np.uint8)
    low = float(data[finite].min())
    high = float(data[finite].max())
    if high <= low:
        return np.zeros(data.shape, dtype=np.uint8)
    scaled = (np.where(finite, data, low) - low) * (255.0 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Composite an ``(H, W, 4)`` uint8 RGBA array over an opaque white background."""
    colour = rgba[..., :3].astype(np.float64)
    alpha = rgba[..., 3:4].astype(np.float64) / 255.0
    out = colour * alpha + 255.0 * (1.0 - alpha)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _to_rgb_array(im: Image.Image) -> np.ndarray:
    """Convert a loaded Pillow image of any mode to an ``(H, W, 3)`` uint8 RGB array."""
    mode = im.mode
    if mode in _WIDE_GREY_MODES:
        grey = _rescale_to_uint8(np.asarray(im))
        return np.repeat(grey[:, :, np.newaxis], 3, axis=2)
    has_alpha = mode in _ALPHA_MODES or "transparency" in im.info
    if has_alpha:
        return _composite_on_white(np.asarray(im.convert("RGBA"), dtype=np.uint8))
    if mode != "RGB":
        im = im.convert("RGB")
    return np.array(im, dtype=np.uint8)


def load_image(path: str | os.PathLike[str],
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file into an ``(H, W, 3)`` uint8 RGB array.

    * The size is read from the header and checked before anything is decoded: more than
      ``max_pixels`` pixels (width x height; default :data:`DEFAULT_MAX_PIXELS`, 50 million;
      None: no limit) or a side under 8 pixels is refused. Pillow's own decompression-bomb
      limit is made to agree (see :func:`_pillow_limit`).
    * Truncated or corrupt data is refused, never filled in: Pillow's errors are reported
      (``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is False unless your code sets it), and a
      JPEG whose compressed data is too short for the size its header declares is refused
      before decoding.
    * The EXIF orientation tag, if any, is applied, so the array is upright.
    * Every Pillow mode is accepted. Grey ("L", "1"), palette ("P"), "CMYK", "YCbCr" and the
      like are converted to RGB. 16-bit, 32-bit integer and float images ("I;16", "I", "F")
      are rescaled linearly from the image's own minimum..maximum to 0..255 (a constant image
      becomes all 0).
    * Transparency (an alpha channel, or a palette or colour-key ``transparency`` entry) is
      composited over a **white** background.
    * Of a multi-frame image (animated GIF, multi-page TIFF, ...) only the first frame is read.

    :func:`pil_to_rgb` and :func:`array_to_rgb` apply the same rules to a Pillow image and an
    array.

    Raises:
        DcsmError: with a single-line message naming ``path`` if the file is missing, is a
            directory, cannot be read or decoded (corrupt or truncated data, unknown format),
            has more than ``max_pixels`` pixels, or is smaller than 8 pixels on a side.
    """
    max_pixels = check_max_pixels(max_pixels)
    shown = os.fspath(path)
    file = Path(shown)
    if not file.exists():
        raise DcsmError(f"image '{shown}' does not exist")
    if file.is_dir():
        raise DcsmError(f"image '{shown}' is a directory, not an image file")
    try:
        with _pillow_limit(max_pixels), Image.open(file) as opened:
            opened.seek(0)
            return _decode(opened, f"image '{shown}'", max_pixels)
    except DcsmError:
        raise
    except Exception as exc:  # Pillow raises many types for bad data
        raise DcsmError(f"cannot read image '{shown}': {error_reason(exc, max_pixels)}") from exc


def pil_to_rgb(image: Image.Image, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A Pillow image as :func:`load_image` reads a file: the same checks (the size before
    decoding, for an image opened but not loaded yet), EXIF orientation, modes, bit depths
    and transparency. Its current frame is read.

    Raises:
        DcsmError: for too many pixels, a side under 8 pixels, or data Pillow cannot decode.
    """
    max_pixels = check_max_pixels(max_pixels)
    try:
        with _pillow_limit(max_pixels):
            return _decode(image, "the PIL image", max_pixels)
    except DcsmError:
        raise
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for bad data
        raise DcsmError(f"cannot convert a PIL image of mode {image.mode} to RGB: "
                        f"{error_reason(exc, max_pixels)}") from exc


def array_to_rgb(array: np.ndarray, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A uint8 array as :func:`load_image` reads a file: ``(H, W)`` grey, ``(H, W, 3)`` RGB or
    ``(H, W, 4)`` RGBA (composited over white), checked against ``max_pixels`` and the 8-pixel
    minimum side.

    Raises:
        DcsmError: for another dtype or shape, too many pixels, or a side under 8 pixels.
    """
    max_pixels = check_max_pixels(max_pixels)
    arr = np.asarray(array)
    if arr.dtype != np.uint8:
        raise DcsmError(f"image arrays must be uint8, got {arr.dtype}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise DcsmError(f"image arrays must be (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}")
    _check_pixels("the image array", arr.shape[1], arr.shape[0], max_pixels)
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.shape[2] == 4:
        return _composite_on_white(arr)
    return np.ascontiguousarray(arr)
