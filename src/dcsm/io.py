"""Image input and atomic output for dcsm.

Reading: :func:`load_image` turns any image file Pillow can decode into an ``(H, W, 3)`` uint8
RGB array, and reports every problem a user can fix as a one-line :class:`DcsmError`.

Writing: :func:`atomic_dir` and :func:`write_atomic` make sure that a run which is killed or
fails half-way never leaves an output directory or file that looks complete, and that one the
machine crashed under (power cut, kernel panic) is either the old or the new one, whole: the
data is flushed to the disk (``fsync``) before the rename, and the folder holding the new name
after it. The helpers
:func:`save_npz`, :func:`save_json`, :func:`save_png` and :func:`save_figure` are built on
:func:`write_atomic`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import secrets
import shutil
import threading
import unicodedata
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from dcsm.errors import DcsmError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "array_to_rgb",
    "atomic_dir",
    "check_max_pixels",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "json_text",
    "load_image",
    "pil_to_rgb",
    "refuse_replacing",
    "safe_filename",
    "save_figure",
    "save_json",
    "save_npz",
    "save_png",
    "write_atomic",
]

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
# Longest stem that safe_filename produces; well below every common file-system limit.
_MAX_STEM = 120


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) in ``text`` into single spaces."""
    return " ".join(text.split())


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


def _reason(exc: BaseException, max_pixels: int | None = None) -> str:
    """A short, single-line explanation of why Pillow could not read a file."""
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
    text = _one_line(str(exc))
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
        raise DcsmError(f"cannot read image '{shown}': {_reason(exc, max_pixels)}") from exc


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
                        f"{_reason(exc, max_pixels)}") from exc


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


# --------------------------------------------------------------------------------------------
# Atomic output
# --------------------------------------------------------------------------------------------

# fsync errors meaning "this file system or OS cannot sync this", not "the data is lost".
_SYNC_UNSUPPORTED = frozenset(
    {errno.EINVAL, errno.EBADF, errno.EROFS, getattr(errno, "ENOTSUP", errno.EINVAL),
     getattr(errno, "EOPNOTSUPP", errno.EINVAL)}
)


def fsync_file(path: Path) -> None:
    """Flush a written file's data and size to the disk, so a crash cannot lose or truncate it.

    File systems that cannot sync (some network and FUSE mounts) are skipped silently.

    Raises:
        OSError: when the file cannot be opened, or the disk reports a write error.
    """
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _SYNC_UNSUPPORTED:
            raise
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a directory's entries (files created or renamed in it) to the disk.

    Best effort: where directories cannot be opened or synced (Windows, some file systems)
    nothing happens; the rename itself is atomic there too.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """:func:`fsync_file` every file under ``root`` and :func:`fsync_dir` every directory (the
    deepest first, ``root`` last); links are not followed."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False):
        here = Path(dirpath)
        for name in filenames:
            path = here / name
            if not path.is_symlink():
                fsync_file(path)
        fsync_dir(here)



def remove_path(path: Path) -> None:
    """Remove a file, link or directory tree, ignoring errors."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def _make_parent(parent: Path, target: Path) -> None:
    """Create ``parent`` (and its parents) or raise a :class:`DcsmError` about ``target``."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DcsmError(f"cannot create the directory for '{target}': {_reason(exc)}") from exc


def refuse_replacing(final: Path, replace: Callable[[Path], bool] | None) -> None:
    """Raise a :class:`DcsmError` when ``final`` exists and ``replace`` (a test, as
    :func:`atomic_dir` takes) does not allow replacing it."""
    if replace is not None and (final.exists() or final.is_symlink()) and not replace(final):
        raise DcsmError(f"'{final}' already exists and is not an earlier dcsm output that dcsm "
                        "may replace (it holds other files); nothing was changed: move it away "
                        "or choose another output folder")


@contextlib.contextmanager
def atomic_dir(final: Path, replace: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Build a directory under a temporary name, then move it to ``final`` in one step.

    Yields a fresh, empty directory beside ``final`` (same parent, hidden name
    ``.{final.name}.partial-<random>``); the parent is created if needed. When the ``with``
    block ends normally the temporary directory replaces ``final``: an existing ``final`` is
    first renamed to a hidden trash name, the temporary directory is renamed to ``final``, and
    the trash is deleted. When the block raises (``KeyboardInterrupt`` included), the
    temporary directory is deleted and the exception propagates, and an existing ``final`` is
    left untouched. So a failed or interrupted run never leaves a ``final`` that looks
    complete. Before the rename every file and folder of the temporary directory is flushed to
    the disk, and after it the parent folder (:func:`fsync_tree`, :func:`fsync_dir`), so after a
    crash ``final`` is the old directory or the new one, complete.

    ``replace``: a test an existing ``final`` must pass to be replaced (for outputs,
    :func:`dcsm.outputs.is_previous_output`); it is asked before the block runs and again just
    before the rename, and when it says no nothing is changed and a :class:`DcsmError` is
    raised. None (default) replaces whatever ``final`` is.

    Raises:
        DcsmError: if the parent cannot be created, ``final`` exists and ``replace`` refuses
            it, or the flushes or renames fail.
    """
    final = Path(final)
    parent = final.parent
    refuse_replacing(final, replace)
    _make_parent(parent, final)
    tmp = parent / f".{final.name}.partial-{secrets.token_hex(6)}"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise DcsmError(f"cannot create output directory '{final}': {_reason(exc)}") from exc
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    try:
        fsync_tree(tmp)
    except OSError as exc:
        remove_path(tmp)
        raise DcsmError(f"cannot write output directory '{final}': {_reason(exc)}") from exc
    try:
        refuse_replacing(final, replace)
    except BaseException:
        remove_path(tmp)
        raise
    trash: Path | None = None
    try:
        if final.exists() or final.is_symlink():
            trash = parent / f".{final.name}.trash-{secrets.token_hex(6)}"
            os.rename(final, trash)
        os.rename(tmp, final)
    except OSError as exc:
        if trash is not None and not final.exists():
            with contextlib.suppress(OSError):
                os.rename(trash, final)
                trash = None
        remove_path(tmp)
        if trash is not None:
            remove_path(trash)
        raise DcsmError(f"cannot replace output directory '{final}': {_reason(exc)}") from exc
    fsync_dir(parent)
    if trash is not None:
        remove_path(trash)


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write a file through a temporary name, then move it to ``path`` in one step.

    ``write`` is called with a hidden temporary path in the same directory as ``path`` and
    with the same suffix (so writers that add a missing suffix, like :func:`numpy.savez`, write
    exactly where told). The temporary file is flushed to the disk (:func:`fsync_file`), then
    replaces ``path`` with :func:`os.replace`, and the folder's entry is flushed
    (:func:`fsync_dir`): after a crash ``path`` holds the old content or the new, whole. If
    ``write`` raises, the temporary file is removed; an ``OSError`` becomes a
    :class:`DcsmError`, anything else propagates unchanged. The parent directory is created
    if needed.

    Raises:
        DcsmError: if the directory cannot be created or the file cannot be written or moved.
    """
    path = Path(path)
    parent = path.parent
    _make_parent(parent, path)
    tmp = parent / f".{path.stem}.partial-{secrets.token_hex(6)}{path.suffix}"
    try:
        write(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        remove_path(tmp)
        raise DcsmError(f"cannot write '{path}': {_reason(exc)}") from exc
    except BaseException:
        remove_path(tmp)
        raise
    fsync_dir(parent)


def save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> dict[str, str]:
    """Atomically save named arrays as a compressed ``.npz`` file readable by :func:`np.load`;
    the key of each name in the file.

    The format is that of :func:`numpy.savez_compressed` (one ``<key>.npy`` member per array,
    deflate-compressed), written member by member so that any string key works, including keys
    with spaces or commas and keys such as ``"file"`` that ``savez_compressed``'s keyword
    arguments cannot take. Each name is stored under :func:`dcsm.names.npz_keys`: a safe name,
    distinct without regard to case, equal to the name itself for ordinary names (``"tiger
    cat"``), so no member can leave the archive's root (``"../../x"``), hold a NUL or collide
    with another. Object arrays are refused (they would need pickling).

    Returns:
        ``{name: key}``, in the order of ``arrays``.

    Raises:
        ValueError: for an empty or non-string key, or an object array.
        DcsmError: if the file cannot be written.
    """
    from dcsm.names import npz_keys

    items = []
    for key, value in arrays.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"npz keys must be non-empty strings, got {key!r}")
        items.append((key, np.asanyarray(value)))
    keys = npz_keys([key for key, _ in items])

    def write(tmp: Path) -> None:
        # Level 1: maps of 12-megapixel photos compress in a second instead of several, and
        # smooth maps shrink almost as much as at the default level 6.
        with zipfile.ZipFile(tmp, mode="w", compression=zipfile.ZIP_DEFLATED,
                             compresslevel=1) as archive:
            for key, value in items:
                with archive.open(f"{keys[key]}.npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, value, allow_pickle=False)

    write_atomic(Path(path), write)
    return keys


def _json_default(obj: Any) -> Any:
    """``json`` fallback: numpy scalars and arrays become Python numbers and lists."""
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _nan_to_null(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float (numpy's too, in arrays too) replaced by None,
    through dicts, lists and tuples."""
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _nan_to_null(obj.tolist())
    if isinstance(obj, Mapping):
        return {k: _nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nan_to_null(v) for v in obj]
    return obj


def json_text(obj: Any, indent: int | None = 2, nan_as_null: bool = False,
              default: Callable[[Any], Any] = _json_default) -> str:
    """``obj`` as strict JSON text (RFC 8259: no ``NaN`` or ``Infinity``), the one JSON writer
    of dcsm; without a trailing newline.

    Numpy scalars and arrays become Python numbers and (nested) lists, and paths strings (or
    what ``default`` makes of other objects); keys keep their order; non-ASCII characters are
    written as they are, not escaped. ``indent`` None writes one line (JSON lines).
    ``nan_as_null``: write NaN and infinite numbers as ``null``, where they mean "no value" (a
    metric over no items); otherwise such a number is an error.

    Raises:
        ValueError: for a NaN or infinite number without ``nan_as_null``.
        TypeError: for an object JSON cannot represent.
    """
    if nan_as_null:
        obj = _nan_to_null(obj)
    try:
        return json.dumps(obj, indent=indent, sort_keys=False, ensure_ascii=False,
                          allow_nan=False, default=default)
    except ValueError as exc:
        raise ValueError(f"NaN or infinity cannot be written as JSON: {exc}") from exc


def save_json(path: Path, obj: Any, nan_as_null: bool = False) -> None:
    """Atomically save ``obj`` as UTF-8 strict JSON (indent 2, key order kept, trailing
    newline): :func:`json_text`.

    Numpy scalars and arrays are converted to Python numbers and (nested) lists, and paths to
    strings. Non-ASCII characters are written as they are, not escaped. ``nan_as_null``: NaN
    and infinite numbers are written ``null`` (where they mean "no value"); otherwise they are
    an error, never the ``NaN`` strict JSON parsers refuse.

    Raises:
        ValueError: for a NaN or infinite number without ``nan_as_null``.
        TypeError: for an object JSON cannot represent.
        DcsmError: if the file cannot be written.
    """
    text = json_text(obj, nan_as_null=nan_as_null)

    def write(tmp: Path) -> None:
        tmp.write_text(text + "\n", encoding="utf-8")

    write_atomic(Path(path), write)


def save_png(path: Path, image: np.ndarray | Image.Image) -> None:
    """Atomically save an image as PNG (whatever the suffix of ``path``).

    ``image`` is a Pillow image or a uint8 array of shape ``(H, W)`` (grey), ``(H, W, 3)``
    (RGB) or ``(H, W, 4)`` (RGBA).

    Raises:
        ValueError: for an array of another dtype or shape.
        DcsmError: if the file cannot be written.
    """
    if isinstance(image, Image.Image):
        pil = image
    else:
        array = np.asarray(image)
        if array.dtype != np.uint8:
            raise ValueError(f"save_png needs a uint8 array, got dtype {array.dtype}")
        if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
            raise ValueError(
                f"save_png needs an (H, W), (H, W, 3) or (H, W, 4) array, got {array.shape}"
            )
        pil = Image.fromarray(np.ascontiguousarray(array))

    def write(tmp: Path) -> None:
        pil.save(tmp, format="PNG", compress_level=3)

    write_atomic(Path(path), write)


def save_figure(path: Path, fig: Figure, dpi: int = 100, tight: bool = True) -> None:
    """Atomically save a matplotlib figure; the format follows the suffix of ``path``.

    ``tight`` crops the figure to its drawn content (matplotlib's ``bbox_inches="tight"``).

    Raises:
        DcsmError: if the file cannot be written.
    """

    def write(tmp: Path) -> None:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)

    write_atomic(Path(path), write)


# --------------------------------------------------------------------------------------------
# File names
# --------------------------------------------------------------------------------------------


def safe_filename(name: str) -> str:
    """Turn a class name such as ``"tiger cat"`` or ``"crane/bird"`` into an ASCII file stem.

    Accents are dropped (``"café"`` becomes ``"cafe"``); ASCII letters, digits, ``-``, ``_``
    and ``.`` are kept; every run of other characters (spaces and slashes included) becomes a
    single ``_``; repeated ``_`` and ``.`` are collapsed; ``.``, ``_`` and ``-`` are stripped
    from both ends; the result then goes through :func:`dcsm.names.safe_name`. It is never
    empty (``"unnamed"``), never starts with ``.``, is at most 121 characters long and is never
    a device name Windows reserves (``"CON"`` becomes ``"CON_"``, ``"aux.x"`` ``"aux_.x"``).
    """
    from dcsm.names import safe_name

    ascii_name = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode("ascii")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", ascii_name)
    stem = re.sub(r"_{2,}", "_", stem)
    stem = re.sub(r"\.{2,}", ".", stem)
    stem = stem[:_MAX_STEM].strip("._-")
    return safe_name(stem)
