"""Atomic output: a run that is killed or fails half-way never leaves a directory or file that
looks complete.

:func:`atomic_dir` and :func:`write_atomic` write under a temporary name and rename; a machine that
crashed under them (power cut, kernel panic) leaves the old or the new one, whole: the data is
flushed to the disk (``fsync``) before the rename, and the folder holding the new name after it.
:func:`save_npz`, :func:`save_json`, :func:`save_png` and :func:`save_figure` are built on
:func:`write_atomic`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io.images import error_reason
from dcsm.io.names import npz_keys

if TYPE_CHECKING:
    from matplotlib.figure import Figure

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
        raise DcsmError(f"cannot create the directory for '{target}': {error_reason(exc)}") from exc


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
        raise DcsmError(f"cannot create output directory '{final}': {error_reason(exc)}") from exc
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    try:
        fsync_tree(tmp)
    except OSError as exc:
        remove_path(tmp)
        raise DcsmError(f"cannot write output directory '{final}': {error_reason(exc)}") from exc
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
        raise DcsmError(f"cannot replace output directory '{final}': {error_reason(exc)}") from exc
    fsync_dir(parent)
    if trash is not None:
        remove_path(trash)


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
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
        raise DcsmError(f"cannot write '{path}': {error_reason(exc)}") from exc
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
    arguments cannot take. Each name is stored under :func:`dcsm.io.names.npz_keys`: a safe name,
    distinct without regard to case, equal to the name itself for ordinary names (``"tiger
    cat"``), so no member can leave the archive's root (``"../../x"``), hold a NUL or collide
    with another. Object arrays are refused (they would need pickling).

    Returns:
        ``{name: key}``, in the order of ``arrays``.

    Raises:
        ValueError: for an empty or non-string key, or an object array.
        DcsmError: if the file cannot be written.
    """
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
