r"""COCO-format instance annotations as photos with class masks.

A data set in COCO's official layout::

    DIR/annotations/instances_<split>.json    images, annotations, categories
    DIR/<split>/<file_name>                   the images the annotation file lists

(``<split>`` e.g. ``val2017``). Each image becomes a :class:`~dcsm.datasets.realphotos.
MaskedPhoto` named ``coco:<image id>``, read only when asked for (:meth:`CocoDataset.entries`,
:func:`load_coco`), so a split of any size streams through in constant memory:

* **Segmentations.** Polygons (a list of ``[x1, y1, x2, y2, ...]`` outlines, unioned) are
  rasterised by pycocotools, the reference implementation (optional extra ``coco``:
  ``pip install 'distinct-saliency[coco]'``); run-length encodings, uncompressed (``counts`` a
  list) and compressed (``counts`` a string), are decoded here (:func:`rle_decode`,
  :func:`rle_counts`), after checking that they describe exactly the image's pixels. A pixel
  lies in a polygon when pycocotools says so; an RLE run covers pixels in column-major order,
  background first.
* **Classes.** Each category's name is mapped to the name ``--labels coco`` uses
  (:func:`canonical_name`: COCO 2017's own names are dcsm's; older or hand-made spellings such as
  ``motorbike``, ``tvmonitor`` or ``hair dryer`` are mapped explicitly, :data:`ALIASES`). Names
  outside COCO's 80 are kept as they are: the benchmark reports them as classes the model cannot
  name.
* **Crowd regions** (``iscrowd`` 1: several objects in one outline) become void (255): no metric
  counts their pixels, except where a separately annotated object covers them.
* **Overlaps.** A class's mask is the union of its objects (``MaskedPhoto.class_masks``); the
  one-label-per-pixel ``labels`` array paints larger objects first, so a smaller object in front
  keeps its pixels.

A missing annotation file, one that does not parse or does not have COCO's structure, and a
missing image folder raise :class:`~dcsm.errors.DcsmError` when the data set is opened; a
missing or broken image, or a segmentation that does not fit its image, is the photo's own
DcsmError when it is loaded, so that a benchmark can record it and go on.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from dcsm.datasets.realphotos import MaskedPhoto, PhotoEntry, PhotoObject
from dcsm.datasets.voc import VOID
from dcsm.errors import DcsmError, first_line
from dcsm.io import load_image
from dcsm.optional import require
from dcsm.pipeline.adapters.groups import COCO_CLASSES

__all__ = ["ALIASES", "CocoDataset", "CocoImage", "annotation_path", "canonical_name",
           "coco_entries", "decode_segmentation", "load_coco", "rle_counts", "rle_decode"]

#: Other spellings of COCO's classes (PASCAL VOC's names, Darknet's ``coco.names``, hand-made
#: annotation files), by their normalised form (:func:`canonical_name`), and the name
#: ``--labels coco`` uses. COCO 2017's own 80 names map to themselves.
ALIASES: dict[str, str] = {
    "aeroplane": "airplane",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "pottedplant": "potted plant",
    "diningtable": "dining table",
    "tvmonitor": "tv",
    "tv monitor": "tv",
    "television": "tv",
    "hair dryer": "hair drier",
    "hairdrier": "hair drier",
    "cellphone": "cell phone",
    "mobile phone": "cell phone",
    "trafficlight": "traffic light",
    "firehydrant": "fire hydrant",
    "stopsign": "stop sign",
    "parkingmeter": "parking meter",
    "sportsball": "sports ball",
    "baseballbat": "baseball bat",
    "baseballglove": "baseball glove",
    "tennisracket": "tennis racket",
    "wineglass": "wine glass",
    "hotdog": "hot dog",
    "teddybear": "teddy bear",
    "doughnut": "donut",
}
#: The largest annotation file read (bytes); COCO 2017's train split is 448 MB.
MAX_ANNOTATION_BYTES = 4 << 30
#: The largest image side accepted from an annotation (pixels), checked before any decoding.
MAX_SIDE = 1 << 15
#: The most classes one photo may hold (its labels are uint8, 255 being void).
MAX_CLASSES_PER_PHOTO = VOID - 1

_COCO_NAMES = frozenset(COCO_CLASSES)
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+$")


def canonical_name(name: str) -> str:
    """The name ``--labels coco`` uses for a category called ``name``: lower case, runs of
    spaces, ``_`` and ``-`` made one space, then :data:`ALIASES` applied (``"TV_monitor"`` ->
    ``"tv"``). A name that is not a COCO class comes back normalised only."""
    key = " ".join(re.split(r"[\s_-]+", str(name).strip().lower())).strip()
    if key in _COCO_NAMES:
        return key
    return ALIASES.get(key, ALIASES.get(key.replace(" ", ""), key))


def annotation_path(folder: str | Path, split: str) -> Path:
    """``folder/annotations/instances_<split>.json``."""
    return Path(folder) / "annotations" / f"instances_{split}.json"


# ----------------------------------------------------------------------------- run lengths
_RLE_FIRST, _RLE_LAST = 48, 111  # the characters of a compressed RLE: '0' .. 'o'


def rle_counts(text: str) -> list[int]:
    """The run lengths of a compressed COCO RLE string.

    The format (pycocotools' ``maskApi``): each count is written in 5-bit groups, least
    significant first, one character each (its code minus 48); bit 0x20 of a character says
    another group follows, bit 0x10 of the last one is the sign. From the fourth count on, the
    number written is the difference to the count two places before (``"T3"`` is 100:
    ``'T'`` is 36 = 0x20 + 4, ``'3'`` is 3, 4 + 3 * 32 = 100).

    Raises:
        DcsmError: a character outside ``'0'..'o'``, a count cut short, or a negative count.
    """
    counts: list[int] = []
    value = shift = 0
    for position, char in enumerate(text):
        code = ord(char) - _RLE_FIRST
        if not 0 <= code <= _RLE_LAST - _RLE_FIRST:
            raise DcsmError(f"compressed RLE holds {char!r} at {position}, outside '0'..'o'")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value -= 1 << shift  # sign-extend the last group
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise DcsmError(f"compressed RLE decodes to a negative run ({value}) at {position}")
        counts.append(value)
        value = shift = 0
    if shift:
        raise DcsmError("compressed RLE ends in the middle of a count")
    return counts


def rle_decode(counts: Sequence[int], height: int, width: int) -> np.ndarray:
    """(height, width) bool mask from run lengths: runs of 0 and 1 alternating, 0 first,
    covering the pixels column by column (column-major, as COCO stores them).

    Raises:
        DcsmError: a negative run, or runs that do not add up to ``height * width``.
    """
    runs = np.asarray(counts, dtype=np.int64).ravel()
    if runs.size and runs.min() < 0:
        raise DcsmError("RLE holds a negative run")
    total = int(runs.sum())
    if total != height * width:
        raise DcsmError(f"RLE covers {total} pixels, the image has {height}x{width} = "
                        f"{height * width}")
    values = np.zeros(runs.size, dtype=bool)
    values[1::2] = True
    return np.repeat(values, runs).reshape(width, height).T.copy()


def _polygons(polygons: list[Any], height: int, width: int) -> np.ndarray:
    """Union of polygon outlines, rasterised by pycocotools (coordinates checked first)."""
    coco_mask = require("pycocotools.mask", "COCO's polygon outlines")
    margin = max(height, width)
    kept = []
    for poly in polygons:
        if not isinstance(poly, list) or len(poly) % 2:
            raise DcsmError("a polygon is not a list of x, y pairs")
        if len(poly) < 6:
            continue  # fewer than three corners: no area (COCO has a few such outlines)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in poly):
            raise DcsmError("a polygon holds a value that is not a number")
        xy = np.asarray(poly, dtype=np.float64)
        if not np.isfinite(xy).all() or (xy < -margin).any() \
                or (xy[0::2] > width + margin).any() or (xy[1::2] > height + margin).any():
            raise DcsmError(f"a polygon lies far outside its {width}x{height} image")
        kept.append(xy.tolist())
    if not kept:
        return np.zeros((height, width), dtype=bool)
    with warnings.catch_warnings():  # pycocotools 2.0's note on numpy 2's copy keyword
        warnings.simplefilter("ignore", DeprecationWarning)
        rles = coco_mask.frPyObjects(kept, height, width)
        return coco_mask.decode(coco_mask.merge(rles)).astype(bool)


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:  # noqa: ANN401 - JSON
    """(height, width) bool mask of one COCO ``segmentation``: a list of polygons, or an RLE
    dict (``{"size": [h, w], "counts": [...]}`` or with a compressed ``counts`` string).

    Raises:
        DcsmError: a segmentation of another form, an RLE whose size is not the image's or
            whose runs do not cover it exactly, a polygon that is not pairs of finite numbers.
    """
    if isinstance(segmentation, list):
        return _polygons(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        size = segmentation.get("size")
        if not (isinstance(size, list) and len(size) == 2 and size == [height, width]):
            raise DcsmError(f"RLE of size {str(size)[:40]}, the image is [{height}, {width}] "
                            "(height, width)")
        counts = segmentation["counts"]
        if isinstance(counts, str):
            if len(counts) > 8 * (height * width + 1):
                raise DcsmError("compressed RLE is longer than its image could need")
            counts = rle_counts(counts)
        elif not (isinstance(counts, list) and all(
                isinstance(c, int) and not isinstance(c, bool) for c in counts)):
            raise DcsmError("RLE counts are neither a string nor a list of integers")
        return rle_decode(counts, height, width)
    raise DcsmError(f"segmentation is a {type(segmentation).__name__}, neither polygons nor RLE")


# ----------------------------------------------------------------------------- the data set
@dataclass(frozen=True)
class CocoImage:
    """An image of the annotation file: its id, file name (inside ``DIR/<split>/``) and size."""

    id: int
    file_name: str
    height: int
    width: int


@dataclass(frozen=True)
class _Object:
    category: str
    crowd: bool
    segmentation: Any


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CocoDataset:
    """A COCO-format split on disk (``DIR/annotations/instances_<split>.json``, ``DIR/<split>/``).

    Attributes:
        root: the data set folder.
        split: the split's name.
        images: every image of the annotation file, by increasing id.
        class_names: the categories' names as ``--labels coco`` spells them, in category order.
        annotation_file: the annotation file read.
    """

    def __init__(self, folder: str | Path, split: str = "val2017") -> None:
        self.root = Path(folder)
        self.split = split
        if not isinstance(split, str) or not _SPLIT.match(split):
            raise DcsmError(f"--split '{split}' is not a split name (letters, digits, _ . -)")
        if not self.root.is_dir():
            raise DcsmError(f"COCO folder '{self.root}' does not exist or is not a folder")
        path = annotation_path(self.root, split)
        self.annotation_file = path
        if not path.is_file():
            found = sorted(p.name[len("instances_"):-len(".json")]
                           for p in (self.root / "annotations").glob("instances_*.json"))
            there = f" (splits there: {', '.join(found)})" if found else ""
            raise DcsmError(f"no annotations for split '{split}' in '{self.root}': "
                            f"'{path}' does not exist{there}; the COCO layout is "
                            "annotations/instances_<split>.json and <split>/<images>")
        self.image_dir = self.root / split
        if not self.image_dir.is_dir():
            raise DcsmError(f"COCO folder '{self.root}' has annotations for '{split}' but no "
                            f"image folder '{self.image_dir}'")
        data = self._read(path)
        self._parse(data, path)

    # ------------------------------------------------------------------ reading the file
    @staticmethod
    def _read(path: Path) -> Any:  # noqa: ANN401 - JSON
        try:
            size = path.stat().st_size
            if size > MAX_ANNOTATION_BYTES:
                raise DcsmError(f"annotation file '{path}' is {size / 2**30:.1f} GiB, more than "
                                f"the {MAX_ANNOTATION_BYTES / 2**30:.0f} GiB read")
            with path.open("rb") as f:
                return json.load(f)
        except DcsmError:
            raise
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise DcsmError(f"annotation file '{path}' does not parse as JSON: "
                            f"{first_line(exc)}") from None
        except (OSError, RecursionError, MemoryError) as exc:
            raise DcsmError(f"cannot read annotation file '{path}': {first_line(exc)}") from None

    def _parse(self, data: Any, path: Path) -> None:  # noqa: ANN401 - JSON
        def bad(what: str) -> DcsmError:
            return DcsmError(f"annotation file '{path}' is not in COCO's format: {what}")

        if not isinstance(data, dict):
            raise bad("the top level is not an object")
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise bad(f"no '{key}' list")
        categories: dict[int, str] = {}
        for c in data["categories"]:
            if not (isinstance(c, dict) and _is_int(c.get("id")) and isinstance(c.get("name"), str)
                    and c["name"].strip()):
                raise bad(f"category {str(c)[:60]} lacks an integer id or a name")
            if c["id"] in categories:
                raise bad(f"category id {c['id']} appears twice")
            categories[c["id"]] = canonical_name(c["name"])
        self.categories = categories
        self.class_names: tuple[str, ...] = tuple(dict.fromkeys(categories.values()))
        images: dict[int, CocoImage] = {}
        for im in data["images"]:
            if not (isinstance(im, dict) and _is_int(im.get("id"))
                    and isinstance(im.get("file_name"), str) and _is_int(im.get("height"))
                    and _is_int(im.get("width"))):
                raise bad(f"image {str(im)[:60]} lacks an integer id, height, width or a "
                          "file_name")
            if im["id"] in images:
                raise bad(f"image id {im['id']} appears twice")
            images[im["id"]] = CocoImage(im["id"], im["file_name"], im["height"], im["width"])
        objects: dict[int, list[_Object]] = {i: [] for i in images}
        for a in data["annotations"]:
            if not (isinstance(a, dict) and _is_int(a.get("image_id"))
                    and _is_int(a.get("category_id")) and "segmentation" in a):
                raise bad(f"annotation {str(a)[:60]} lacks an image_id, category_id or "
                          "segmentation")
            if a["image_id"] not in images:
                raise bad(f"annotation {a.get('id')} is of image {a['image_id']}, which the "
                          "file does not list")
            if a["category_id"] not in categories:
                raise bad(f"annotation {a.get('id')} has category {a['category_id']}, which the "
                          "file does not list")
            crowd = a.get("iscrowd", 0)
            if crowd not in (0, 1):
                raise bad(f"annotation {a.get('id')} has iscrowd {str(crowd)[:20]}, not 0 or 1")
            objects[a["image_id"]].append(
                _Object(categories[a["category_id"]], bool(crowd), a["segmentation"]))
        self.images: list[CocoImage] = [images[i] for i in sorted(images)]
        self._objects = objects
        if any(isinstance(o.segmentation, list) for objs in objects.values() for o in objs) \
                and importlib.util.find_spec("pycocotools") is None:
            raise DcsmError("the COCO annotations hold polygons, which need pycocotools: "
                            "pip install 'distinct-saliency[coco]'")

    # ------------------------------------------------------------------ photos
    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, image: CocoImage) -> Path:
        """Where the image's file is: ``DIR/<split>/<file_name>``.

        Raises:
            DcsmError: a file name that would leave the split's folder.
        """
        name = image.file_name
        parts = Path(name).parts
        if not name or Path(name).is_absolute() or ".." in parts or "\\" in name \
                or "\x00" in name:
            raise DcsmError(f"image {image.id}: file name '{name[:80]}' leaves '{self.image_dir}'")
        return self.image_dir / name

    def photo(self, image: CocoImage) -> MaskedPhoto:
        """The photo with its class masks (see the module's notes).

        Raises:
            DcsmError: the image is missing, unreadable or not the annotated size, the size is
                beyond the limits, or a segmentation does not fit it.
        """
        h, w = image.height, image.width
        limit = Image.MAX_IMAGE_PIXELS
        if not (0 < h <= MAX_SIDE and 0 < w <= MAX_SIDE) or (limit is not None and h * w > limit):
            raise DcsmError(f"image {image.id} is annotated as {w}x{h} pixels, beyond the "
                            f"limits ({MAX_SIDE} a side, {Image.MAX_IMAGE_PIXELS} in all)")
        path = self.image_path(image)
        if not path.is_file():
            raise DcsmError(f"image '{path}' does not exist")
        pixels = load_image(path)
        if pixels.shape[:2] != (h, w):
            raise DcsmError(f"image '{path}' is {pixels.shape[1]}x{pixels.shape[0]} but "
                            f"annotated as {w}x{h}")
        masks: list[tuple[_Object, np.ndarray]] = []
        for number, obj in enumerate(self._objects[image.id]):
            try:
                masks.append((obj, decode_segmentation(obj.segmentation, h, w)))
            except DcsmError as exc:
                raise DcsmError(f"image {image.id}, object {number + 1} ({obj.category}): "
                                f"{exc}") from None
        return _assemble(f"coco:{image.id}", pixels, masks, self.class_names)

    def entries(self) -> list[PhotoEntry]:
        """Every image as a :class:`PhotoEntry` (``coco:<id>``), by increasing id."""
        return [PhotoEntry(f"coco:{im.id}", functools.partial(self.photo, im))
                for im in self.images]


def _assemble(name: str, image: np.ndarray, masks: Sequence[tuple[_Object, np.ndarray]],
              order: Sequence[str]) -> MaskedPhoto:
    """The photo from its objects' masks: class masks (unions of the non-crowd objects), void
    (crowd regions no object covers), labels (larger objects painted first)."""
    shape = image.shape[:2]
    class_masks: dict[str, np.ndarray] = {}
    crowd = np.zeros(shape, dtype=bool)
    objects = []
    for obj, mask in masks:
        objects.append(PhotoObject(obj.category, int(mask.sum()), obj.crowd))
        if obj.crowd:
            crowd |= mask
        elif obj.category in class_masks:
            class_masks[obj.category] |= mask
        else:
            class_masks[obj.category] = mask.copy()
    class_masks = {c: m for c, m in class_masks.items() if m.any()}
    names = tuple(c for c in order if c in class_masks)
    if len(names) > MAX_CLASSES_PER_PHOTO:
        raise DcsmError(f"{name} holds {len(names)} classes, more than the "
                        f"{MAX_CLASSES_PER_PHOTO} a photo may have")
    covered = np.zeros(shape, dtype=bool)
    for m in class_masks.values():
        covered |= m
    labels = np.zeros(shape, dtype=np.uint8)
    labels[crowd & ~covered] = VOID
    value = {c: k + 1 for k, c in enumerate(names)}
    painted = [(obj, m) for obj, m in masks if not obj.crowd and obj.category in value]
    for k in np.argsort([-int(m.sum()) for _, m in painted], kind="stable"):
        obj, m = painted[k]
        labels[m] = value[obj.category]
    return MaskedPhoto(name, image, labels, names, "coco", class_masks, tuple(objects))


def coco_entries(folder: str | Path, split: str = "val2017") -> list[PhotoEntry]:
    """The photos of a COCO split (:class:`CocoDataset`), each read when loaded."""
    return CocoDataset(folder, split).entries()


def load_coco(folder: str | Path, split: str = "val2017", limit: int | None = None
              ) -> Iterator[MaskedPhoto]:
    """The photos of a COCO split, one at a time, by increasing image id; the first ``limit``
    only if given. A photo that cannot be read raises its DcsmError.

    Example::

        for photo in load_coco("data/coco", "val2017", limit=10):
            print(photo.name, photo.classes, photo.image.shape)
    """
    entries = coco_entries(folder, split)
    for entry in entries[:limit] if limit is not None else entries:
        yield entry.load()

