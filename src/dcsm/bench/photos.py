"""Real photos for the grid pointing game, and the model's own class for each.

Sources: the photographs that ship inside installed packages (scikit-image's ``skimage.data``,
scikit-learn's sample images, matplotlib's sample data), or image files the user names. Each
source photo is a :class:`Photo`; photos of one scene (skimage's stereo motorcycle pair) share a
``group`` so that a grid never holds the same scene twice.

A photo becomes one or more :class:`View` s: square crops (by default at three zooms, 100 %,
75 % and 50 % of the short side, each at up to 3 x 3 positions; or only the centred square),
resized to the cell size, and classified **alone** by the model. A view is kept when the
model's top-1 probability on it is at least ``tau``; its class is that top-1. Of the views of one
photo, at most ``per_photo`` are kept, one per class, the most confident first. Most of these
photos show no single ImageNet class at full frame (the model spreads its probability over
"tabby", "tiger cat" and "Egyptian cat" for skimage's cat), so cropping is what gives enough
confidently recognised, distinct classes for 2 x 2 and 3 x 3 grids.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import matplotlib.cbook as cbook
import numpy as np
import torch
from PIL import Image

from dcsm.errors import DcsmError
from dcsm.io import load_image
from dcsm.optional import find
from dcsm.pipeline.adapters.base import ModelAdapter
from dcsm.pipeline.images import as_rgb_array

#: Crop sizes, as fractions of the photo's short side.
ZOOMS: tuple[float, ...] = (1.0, 0.75, 0.5)

#: skimage.data photographs (real photos; the synthetic and binary images are left out).
SKIMAGE_PHOTOS: tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass",
    "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page", "retina", "rocket",
    "text",
)


@dataclass(frozen=True)
class Photo:
    """A source photograph: ``name`` (e.g. ``skimage:coffee``), ``group`` (photos of one scene
    share it) and the (H, W, 3) uint8 RGB pixels."""

    name: str
    group: str
    image: np.ndarray


@dataclass(frozen=True)
class View:
    """A square crop of a photo, resized to the cell size and confidently classified alone.

    ``box`` is ``(y, x, side)`` in the photo's pixels; ``class_index``/``class_name`` the
    model's top-1 on the view and ``confidence`` its probability.
    """

    photo: str
    group: str
    box: tuple[int, int, int]
    image: np.ndarray
    class_index: int
    class_name: str
    confidence: float

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly description (without the pixels)."""
        return {"photo": self.photo, "box_yx_side": list(self.box), "class": self.class_name,
                "index": self.class_index, "confidence": round(self.confidence, 4)}


def as_rgb(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 from a grey, RGB or RGBA array (uint8, or bool as 0/255)."""
    a = np.asarray(image)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    return as_rgb_array(a)


def package_photos() -> list[Photo]:
    """The photographs shipped with scikit-image, scikit-learn and matplotlib that are installed.

    Raises DcsmError if none of these packages is installed.
    """
    photos: list[Photo] = []
    skd = find("skimage.data")
    if skd is not None:
        for name in SKIMAGE_PHOTOS:
            try:
                image = as_rgb(getattr(skd, name)())
            except (AttributeError, ImportError, OSError, ValueError):  # missing in this version
                continue
            photos.append(Photo(f"skimage:{name}", f"skimage:{name}", image))
        try:
            left, right, _ = skd.stereo_motorcycle()
        except (AttributeError, ImportError, OSError, ValueError):
            pass
        else:
            photos.append(Photo("skimage:motorcycle_left", "skimage:motorcycle", as_rgb(left)))
            photos.append(Photo("skimage:motorcycle_right", "skimage:motorcycle", as_rgb(right)))
    sklearn_data = find("sklearn.datasets")
    if sklearn_data is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sample = sklearn_data.load_sample_images()
        for filename, image in zip(sample.filenames, sample.images, strict=True):
            stem = os.path.splitext(os.path.basename(filename))[0]
            photos.append(Photo(f"sklearn:{stem}", f"sklearn:{stem}", as_rgb(image)))
    try:
        with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
            photos.append(Photo("matplotlib:grace_hopper", "matplotlib:grace_hopper",
                                np.asarray(im.convert("RGB"))))
    except (OSError, ValueError):
        pass
    if not photos:
        raise DcsmError("no packaged photos found: install scikit-image or scikit-learn, or "
                        "give photos with --images")
    return photos


def file_photos(paths: Iterable[str | os.PathLike[str]]) -> list[Photo]:
    """Photos read from files (each its own group); DcsmError for a missing or bad file."""
    photos = []
    for path in paths:
        name = os.fspath(path)
        photos.append(Photo(name, name, load_image(path)))
    return photos


def square_boxes(height: int, width: int, zooms: Sequence[float] = ZOOMS) -> list[tuple[int, int, int]]:  # noqa: E501
    """Square crops ``(y, x, side)``: for each zoom, side = zoom x the short side, at the start,
    centre and end of each axis (duplicates removed, in a fixed order)."""
    boxes: list[tuple[int, int, int]] = []
    short = min(height, width)
    for zoom in zooms:
        side = max(1, int(round(zoom * short)))
        ys = sorted({0, (height - side) // 2, height - side})
        xs = sorted({0, (width - side) // 2, width - side})
        boxes.extend((y, x, side) for y in ys for x in xs if (y, x, side) not in boxes)
    return boxes


def centre_box(height: int, width: int) -> tuple[int, int, int]:
    """The largest centred square ``(y, x, side)``."""
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def crop_resize(image: np.ndarray, box: tuple[int, int, int], cell: int) -> np.ndarray:
    """The square ``box`` of ``image`` resized to ``cell x cell`` (bicubic, antialiased)."""
    y, x, side = box
    crop = Image.fromarray(np.ascontiguousarray(image[y:y + side, x:x + side]))
    return np.asarray(crop.resize((cell, cell), Image.Resampling.BICUBIC))


@torch.no_grad()
def top1(adapter: ModelAdapter, images: Sequence[np.ndarray], batch: int = 16) -> list[tuple[int, float]]:  # noqa: E501
    """(class index, probability) of the model's top-1 for each image, each classified alone."""
    out: list[tuple[int, float]] = []
    for start in range(0, len(images), batch):
        x = torch.cat([adapter.preprocess(im) for im in images[start:start + batch]])
        probs = adapter.probabilities(adapter.pool(adapter.model(x.to(adapter.device))))
        values, indices = probs.max(dim=1)
        out.extend(zip(indices.tolist(), values.tolist(), strict=True))
    return out


def find_views(
    adapter: ModelAdapter,
    photos: Sequence[Photo],
    cell: int = 224,
    tau: float = 0.5,
    crops: bool = True,
    per_photo: int = 3,
) -> list[View]:
    """The confidently classified views of ``photos`` (see the module docstring)."""
    if not 0.0 <= tau <= 1.0:
        raise DcsmError(f"tau must lie in [0, 1], got {tau}")
    if per_photo < 1:
        raise DcsmError(f"per_photo must be at least 1, got {per_photo}")
    views: list[View] = []
    for photo in photos:
        h, w = photo.image.shape[:2]
        boxes = square_boxes(h, w) if crops else [centre_box(h, w)]
        images = [crop_resize(photo.image, b, cell) for b in boxes]
        best: dict[int, View] = {}
        for box, image, (index, prob) in zip(boxes, images, top1(adapter, images), strict=True):
            if prob < tau or (index in best and best[index].confidence >= prob):
                continue
            best[index] = View(photo.name, photo.group, box, image, index,
                               adapter.class_names[index], float(prob))
        ranked = sorted(best.values(), key=lambda v: (-v.confidence, v.class_index))
        views.extend(ranked[:per_photo])
    return views
