"""Readers for PASCAL VOC 2012 and for SBD's image-level labels, from local folders.

**VOC 2012** (``VOCdevkit/VOC2012``): ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png``
(palette PNG: 0 background, 1..20 the classes, 255 "void", ignored in scoring) and
``ImageSets/Segmentation/<split>.txt`` (one image id a line). ``--data ROOT`` may name the folder
holding ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012`` itself. A ``class_names.txt`` in
``VOC2012`` (one name a line, label 1 first) replaces VOC's 20 class names; the synthetic set
(:mod:`dcsm.datasets.synthetic`) writes one.

**SBD** (Hariharan et al. 2011, ``benchmark_RELEASE/dataset``): ``cls/<id>.mat`` (a ``GTcls``
struct with ``Segmentation`` and ``CategoriesPresent``) and ``train.txt``/``val.txt``. Its
images are VOC 2012 images; ``img/<id>.jpg`` is used when ``JPEGImages`` lacks one.

**Image-level labels** of a split come from the segmentation masks (the classes present, void
and background left out) or, for images without a VOC mask, from SBD's ``CategoriesPresent``.
The split ``train_aug`` is the paper's augmented training set: VOC's segmentation ``train``,
SBD's ``train`` and ``val``, minus VOC's segmentation ``val`` (10,582 images with the full data).

Nothing is downloaded. A missing or malformed folder, split file, image or mask raises one
:class:`~dcsm.DcsmError` that says what is missing.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import loadmat

from dcsm.errors import DcsmError, first_line
from dcsm.io import DEFAULT_MAX_PIXELS, load_image

#: PASCAL VOC's 20 classes, label v is VOC_CLASSES[v - 1].
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
#: VOC's "void" label (object borders and ambiguous pixels): ignored when scoring.
VOID = 255
#: Optional file in VOC2012/ naming the classes, label 1 first.
CLASS_NAMES_FILE = "class_names.txt"
#: The paper's training split built from VOC and SBD.
TRAIN_AUG = "train_aug"
_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class LabelledImage:
    """An image of a split with its image-level labels (0-based class indices, sorted)."""

    id: str
    image: Path
    labels: tuple[int, ...]
    mask: Path | None = None


def find_voc_root(root: str | Path) -> Path:
    """The ``VOC2012`` folder under ``root`` (ROOT/VOCdevkit/VOC2012, VOCdevkit/VOC2012 or
    VOC2012 itself); DcsmError naming the paths tried."""
    root = Path(root)
    if not root.exists():
        raise DcsmError(f"data folder '{root}' does not exist")
    if not root.is_dir():
        raise DcsmError(f"data folder '{root}' is not a directory")
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() or (candidate / "ImageSets").is_dir():
            return candidate
    raise DcsmError(f"no PASCAL VOC 2012 folder in '{root}': expected "
                    f"'{root / 'VOCdevkit' / 'VOC2012'}' holding JPEGImages/, "
                    "SegmentationClass/ and ImageSets/Segmentation/")


def read_id_list(path: Path, what: str) -> list[str]:
    """Image ids from a split file (first token of each non-empty line)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DcsmError(f"{what} '{path}' is not a text file of image ids") from exc
    except OSError as exc:
        raise DcsmError(f"cannot read {what} '{path}': {exc.strerror or exc}") from exc
    ids = []
    for number, line in enumerate(lines, 1):
        fields = line.split()
        if not fields:
            continue
        if not _ID.match(fields[0]):
            raise DcsmError(f"{what} '{path}' line {number}: '{fields[0][:40]}' is not an "
                            "image id")
        ids.append(fields[0])
    if not ids:
        raise DcsmError(f"{what} '{path}' lists no images")
    return ids


def read_label_png(path: Path, num_classes: int) -> np.ndarray:
    """A VOC label PNG as (H, W) uint8; values must be 0..num_classes or 255."""
    try:
        with Image.open(path) as im:
            if im.mode not in ("P", "L"):
                raise DcsmError(f"mask '{path}' is a {im.mode} image; VOC masks are palette "
                                "(P) or grey (L) PNGs whose values are the labels")
            labels = np.asarray(im, dtype=np.uint8).copy()
    except DcsmError:
        raise
    except FileNotFoundError as exc:
        raise DcsmError(f"mask '{path}' does not exist") from exc
    except Exception as exc:  # noqa: BLE001 - Pillow fails on bad files in many ways
        raise DcsmError(f"cannot read mask '{path}': {first_line(exc)}") from exc
    bad = np.unique(labels[(labels > num_classes) & (labels != VOID)])
    if bad.size:
        raise DcsmError(f"mask '{path}' holds label {int(bad[0])}, but the data set has "
                        f"{num_classes} classes (labels 0..{num_classes} and {VOID})")
    return labels


def labels_in_mask(mask: np.ndarray) -> tuple[int, ...]:
    """0-based class indices present in a label mask (background and void left out)."""
    return tuple(int(v) - 1 for v in np.unique(mask) if 0 < v < VOID)


class SBD:
    """SBD's image-level labels (``benchmark_RELEASE/dataset``: ``cls/``, ``train.txt``...)."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DcsmError(f"SBD folder '{root}' does not exist")
        for candidate in (root / "benchmark_RELEASE" / "dataset", root / "dataset", root):
            if (candidate / "cls").is_dir():
                self.root = candidate
                break
        else:
            raise DcsmError(f"no SBD data in '{root}': expected "
                            f"'{root / 'benchmark_RELEASE' / 'dataset' / 'cls'}' (SBD's "
                            "cls/<id>.mat files)")

    def ids(self, split: str) -> list[str]:
        """Ids of SBD's ``train`` or ``val`` list."""
        path = self.root / f"{split}.txt"
        if not path.is_file():
            raise DcsmError(f"SBD split file '{path}' does not exist")
        return read_id_list(path, "SBD split file")

    def labels(self, image_id: str, num_classes: int = len(VOC_CLASSES)) -> tuple[int, ...]:
        """0-based class indices of one image, from ``cls/<id>.mat``."""
        path = self.root / "cls" / f"{image_id}.mat"
        if not path.is_file():
            raise DcsmError(f"SBD annotation '{path}' does not exist")
        try:
            gt = loadmat(path, squeeze_me=True, struct_as_record=False)["GTcls"]
        except Exception as exc:  # noqa: BLE001 - scipy raises many types on bad files
            raise DcsmError(f"cannot read SBD annotation '{path}': {exc}") from exc
        present = getattr(gt, "CategoriesPresent", None)
        if present is None:
            seg = getattr(gt, "Segmentation", None)
            if seg is None:
                raise DcsmError(f"SBD annotation '{path}' has neither CategoriesPresent nor "
                                "Segmentation")
            present = [v for v in np.unique(np.asarray(seg)) if 0 < v < VOID]
        values = sorted({int(v) for v in np.atleast_1d(np.asarray(present)).ravel()})
        if any(not 1 <= v <= num_classes for v in values):
            raise DcsmError(f"SBD annotation '{path}' names class {values}, outside "
                            f"1..{num_classes}")
        return tuple(v - 1 for v in values)

    def image(self, image_id: str) -> Path:
        """SBD's own copy of an image."""
        return self.root / "img" / f"{image_id}.jpg"


class VOCDataset:
    """A VOC 2012 layout folder (the real one or the synthetic set), optionally with SBD."""

    def __init__(self, root: str | Path, sbd: str | Path | SBD | None = None) -> None:
        self.root = find_voc_root(root)
        missing = [name + "/" for name in ("JPEGImages", "ImageSets/Segmentation")
                   if not (self.root / name).is_dir()]
        if missing:
            raise DcsmError(f"VOC folder '{self.root}' is missing: {', '.join(missing)}")
        self.class_names = self._read_class_names()
        self.sbd = sbd if isinstance(sbd, SBD) or sbd is None else SBD(sbd)

    def _read_class_names(self) -> list[str]:
        path = self.root / CLASS_NAMES_FILE
        if not path.exists():
            return list(VOC_CLASSES)
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
        if not names or len(set(names)) != len(names) or len(names) >= VOID:
            raise DcsmError(f"'{path}' must list distinct class names, one a line, "
                            f"at most {VOID - 1}")
        return names

    @property
    def num_classes(self) -> int:
        """Number of object classes (background not counted)."""
        return len(self.class_names)

    @property
    def label_names(self) -> list[str]:
        """``["background", *class_names]``: the name of each label value."""
        return ["background", *self.class_names]

    # ----------------------------------------------------------------- paths
    def splits(self) -> list[str]:
        """The segmentation splits present (``train``, ``val``, ...)."""
        return sorted(p.stem for p in (self.root / "ImageSets" / "Segmentation").glob("*.txt"))

    def ids(self, split: str) -> list[str]:
        """Image ids of a segmentation split (``train_aug`` needs SBD)."""
        if split == TRAIN_AUG and not (self.root / "ImageSets" / "Segmentation"
                                       / f"{split}.txt").exists():
            return [item.id for item in self._train_aug_items(check=False)]
        path = self.root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not path.is_file():
            known = ", ".join(self.splits()) or "none"
            raise DcsmError(f"split '{split}' not found: '{path}' does not exist (splits "
                            f"there: {known})")
        return read_id_list(path, "split file")

    def image_path(self, image_id: str) -> Path:
        """``JPEGImages/<id>.jpg`` (or SBD's copy when VOC lacks it and SBD has it)."""
        path = self.root / "JPEGImages" / f"{image_id}.jpg"
        if not path.exists() and self.sbd is not None and self.sbd.image(image_id).exists():
            return self.sbd.image(image_id)
        return path

    def mask_path(self, image_id: str) -> Path:
        """``SegmentationClass/<id>.png``."""
        return self.root / "SegmentationClass" / f"{image_id}.png"

    def load_image(self, image_id: str,
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """(H, W, 3) uint8 RGB (:func:`dcsm.io.load_image`: at most ``max_pixels`` pixels)."""
        return load_image(self.image_path(image_id), max_pixels)

    def load_mask(self, image_id: str) -> np.ndarray:
        """(H, W) uint8 labels: 0 background, v the v-th class, 255 void."""
        path = self.mask_path(image_id)
        if not path.is_file():
            raise DcsmError(f"mask '{path}' does not exist")
        return read_label_png(path, self.num_classes)

    # ----------------------------------------------------------------- checked lists
    def _check_files(self, split: str, ids: Sequence[str], masks: bool) -> None:
        if not ids:
            raise DcsmError(f"split '{split}' lists no images")
        missing_images = [i for i in ids if not self.image_path(i).is_file()]
        if missing_images:
            raise DcsmError(
                f"split '{split}' lists {len(missing_images)} image(s) missing from "
                f"'{self.root / 'JPEGImages'}' (e.g. {missing_images[0]}.jpg)")
        if masks:
            if not (self.root / "SegmentationClass").is_dir():
                raise DcsmError(f"VOC folder '{self.root}' is missing: SegmentationClass/")
            missing_masks = [i for i in ids if not self.mask_path(i).is_file()]
            if missing_masks:
                raise DcsmError(
                    f"split '{split}' lists {len(missing_masks)} image(s) with no mask in "
                    f"'{self.root / 'SegmentationClass'}' (e.g. {missing_masks[0]}.png)")

    def segmentation_items(self, split: str) -> list[LabelledImage]:
        """Every image of a split with its mask and the labels the mask holds (checked)."""
        ids = self.ids(split)
        self._check_files(split, ids, masks=True)
        out = []
        for i in ids:
            mask = self.load_mask(i)
            out.append(LabelledImage(i, self.image_path(i), labels_in_mask(mask),
                                     self.mask_path(i)))
        return out

    def labelled_items(self, split: str) -> list[LabelledImage]:
        """Every image of a split with its image-level labels, from the masks or SBD."""
        if split == TRAIN_AUG and not (self.root / "ImageSets" / "Segmentation"
                                       / f"{split}.txt").exists():
            return self._train_aug_items(check=True)
        ids = self.ids(split)
        return self._items(split, ids, check=True)

    def _items(self, split: str, ids: Sequence[str], check: bool) -> list[LabelledImage]:
        if check:
            self._check_files(split, ids, masks=False)
        out = []
        missing = []
        for i in ids:
            if self.mask_path(i).is_file():
                mask = self.load_mask(i)
                out.append(LabelledImage(i, self.image_path(i), labels_in_mask(mask),
                                         self.mask_path(i)))
            elif self.sbd is not None:
                out.append(LabelledImage(i, self.image_path(i),
                                         self.sbd.labels(i, self.num_classes)))
            else:
                missing.append(i)
        if missing:
            raise DcsmError(
                f"split '{split}': {len(missing)} image(s) have no mask in "
                f"'{self.root / 'SegmentationClass'}' (e.g. {missing[0]}.png) and no SBD "
                "folder was given for their labels (--sbd)")
        return out

    def _train_aug_items(self, check: bool) -> list[LabelledImage]:
        if self.sbd is None:
            raise DcsmError(f"split '{TRAIN_AUG}' needs SBD's labels: give the SBD folder "
                            "(--sbd PATH/benchmark_RELEASE)")
        val = set(self.ids("val"))
        seen: set[str] = set()
        ids: list[str] = []
        for i in [*self.ids("train"), *self.sbd.ids("train"), *self.sbd.ids("val")]:
            if i not in val and i not in seen:
                seen.add(i)
                ids.append(i)
        return self._items(TRAIN_AUG, ids, check) if check else [
            LabelledImage(i, self.image_path(i), ()) for i in ids]
