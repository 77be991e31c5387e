"""Finding the images of a batch run and naming their output directories.

An input *source* turns the command's ``INPUT`` argument into a sorted list of
:class:`InputItem`. Two sources exist:

* a folder: every image file under it (recursively; hidden files and folders, and the output
  folder when it lies inside, are skipped), keyed by its path relative to the folder;
* a text file: one image path per line (blank lines and lines starting with ``#`` skipped;
  relative paths are relative to the text file's folder), keyed by the path as written;

* a PASCAL VOC split, written ``voc:ROOT:SPLIT`` (``voc:data/VOCdevkit:val``; ``train_aug``
  needs SBD beside it, see :mod:`dcsm.datasets.voc`), keyed by image id;

and a single image file is taken as a list of one. A new source is a function
``(spec, exclude) -> list[InputItem] | None`` registered with :func:`register_source`: it returns
None for a spec it does not handle, and is tried before the built-in ones.

Output names follow ``dcsm explain`` (:func:`dcsm.io.names.output_names`): ``DIR/<image stem>/``,
the stem made a safe name (:func:`dcsm.io.names.safe_name`). Stems shared by several inputs
(``a/cat.jpg`` and ``b/cat.jpg``; compared case-insensitively) are replaced, for those inputs
only, by the key with its folders joined by ``__`` (``a__cat``, ``b__cat``), then, if still
shared (``cat.jpg`` and ``cat.png`` in one folder), with the suffix kept (``a__cat_jpg``), then
numbered (``-2``, ``-3`` in key order). Names depend only on the whole sorted input list, so every
rank of a sharded run computes the same ones.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dcsm.datasets.voc import VOCDataset
from dcsm.errors import DcsmError
from dcsm.io.names import output_names

#: Suffixes (lower case) a folder walk takes as images.
IMAGE_SUFFIXES = frozenset({
    ".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
    ".pbm", ".pnm",
})


@dataclass(frozen=True)
class InputItem:
    """One image of a batch run.

    Attributes:
        key: the identity of the input in the manifest (relative POSIX path for a folder, the
            line as written for a list); the list is sorted by it.
        path: where to read the image.
        name: the output directory's name, ``DIR/<name>/``.
    """

    key: str
    path: Path
    name: str = ""


Source = Callable[[str, Path | None], "list[InputItem] | None"]
_SOURCES: list[Source] = []


def register_source(source: Source) -> None:
    """Add an input source, tried before those registered earlier and the built-in ones."""
    _SOURCES.insert(0, source)


def folder_items(folder: Path, exclude: Path | None = None) -> list[InputItem]:
    """Every image file under ``folder`` (see the module docstring), unsorted."""
    root = folder.resolve()
    skip = exclude.resolve() if exclude is not None else None
    items = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")
                       and not (skip is not None and (here / d).resolve() == skip)]
        for f in filenames:
            if f.startswith(".") or Path(f).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            rel = (here / f).relative_to(root).as_posix()
            items.append(InputItem(rel, folder / rel))
    return items


def list_items(list_file: Path) -> list[InputItem]:
    """The images named in a text file, one path per line (see the module docstring)."""
    try:
        text = list_file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DcsmError(f"'{list_file}' is neither an image nor a UTF-8 text file of image "
                        "paths") from exc
    except OSError as exc:
        raise DcsmError(f"cannot read '{list_file}': {exc.strerror or exc}") from exc
    base = list_file.parent
    items: dict[str, InputItem] = {}
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        key = os.path.normpath(entry).replace(os.sep, "/")
        path = Path(entry)
        items.setdefault(key, InputItem(key, path if path.is_absolute() else base / path))
    return list(items.values())


def _builtin(spec: str, exclude: Path | None) -> list[InputItem]:
    path = Path(spec)
    if path.is_dir():
        return folder_items(path, exclude)
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            return [InputItem(path.name, path)]
        return list_items(path)
    raise DcsmError(f"input '{spec}' does not exist (expected a folder of images, a text file "
                    "of image paths or an image)")


def assign_names(items: Iterable[InputItem]) -> list[InputItem]:
    """Sort by key and give each item its output directory name
    (:func:`dcsm.io.names.output_names` of the sorted keys; module docstring)."""
    ordered = sorted(items, key=lambda it: it.key)
    names = output_names([it.key for it in ordered])
    return [InputItem(it.key, it.path, n) for it, n in zip(ordered, names, strict=True)]


def voc_split_items(spec: str, exclude: Path | None = None) -> list[InputItem] | None:
    """The images of ``voc:ROOT:SPLIT`` (None for any other spec)."""
    if not spec.startswith("voc:"):
        return None
    root, sep, split = spec[len("voc:"):].rpartition(":")
    if not sep or not root or not split:
        raise DcsmError(f"expected voc:ROOT:SPLIT (e.g. voc:data/VOCdevkit:val), got '{spec}'")
    voc = VOCDataset(root)
    return [InputItem(key=image_id, path=voc.image_path(image_id))
            for image_id in sorted(set(voc.ids(split)))]


register_source(voc_split_items)


def discover(spec: str | os.PathLike[str], exclude: Path | None = None) -> list[InputItem]:
    """The sorted, named inputs of ``spec`` (a folder, a text file of paths, an image, or what a
    registered source accepts); ``exclude``: a folder a walk must not enter (the output).

    Raises:
        DcsmError: if ``spec`` does not exist, cannot be read, or names no image.
    """
    text = os.fspath(spec)
    items = None
    for source in _SOURCES:
        items = source(text, exclude)
        if items is not None:
            break
    if items is None:
        items = _builtin(text, exclude)
    if not items:
        raise DcsmError(f"no images found in '{text}'")
    return assign_names(items)
