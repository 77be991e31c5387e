"""Training and validation batches with image-level labels, planned ahead and reproducible.

Every epoch's batches are drawn up front from ``numpy.random.default_rng([seed, epoch])``: the
order of the images, one square side per batch (random resizing: every image of the batch is
resized to ``side x side``, bilinear with antialiasing) and a horizontal flip per image. So an
epoch's batches depend on nothing but the seed and the epoch, whatever the number of data-loader
workers, and a run resumed at batch k of an epoch sees exactly the batches it would have seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from dcsm.datasets.voc import LabelledImage
from dcsm.io import load_image
from dcsm.pipeline.adapters.base import Preprocessing
from dcsm.pipeline.images import scaled_size

#: One planned sample: (image index, square side or 0 for the image as it is, flip).
Key = tuple[int, int, bool]


def multi_hot(labels: Sequence[int], num_classes: int) -> torch.Tensor:
    """A float vector with 1 at each label."""
    y = torch.zeros(num_classes)
    y[list(labels)] = 1.0
    return y


class LabelledImages(torch.utils.data.Dataset):
    """Images and multi-hot targets, indexed by planned keys ``(index, side, flip)``.

    ``side`` > 0 resizes the image to ``side x side``; ``side`` 0 keeps it (enlarged, keeping
    the aspect, when its short side is below ``min_input``).
    """

    def __init__(self, items: Sequence[LabelledImage], num_classes: int,
                 preprocess: Preprocessing, min_input: int = 32) -> None:
        self.items = list(items)
        self.num_classes = num_classes
        self.preprocess = preprocess
        self.min_input = min_input

    def __len__(self) -> int:
        """Number of images."""
        return len(self.items)

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:
        """(3, h, w) float input and (classes,) target of one planned sample."""
        index, side, flip = key
        item = self.items[index]
        image = load_image(item.image)
        h, w = image.shape[:2]
        size = (side, side) if side > 0 else scaled_size(h, w, 1.0, self.min_input)
        if size != (h, w):
            image = np.asarray(Image.fromarray(image).resize((size[1], size[0]),
                                                             Image.Resampling.BILINEAR))
        if flip:
            image = image[:, ::-1]
        x = self.preprocess(np.ascontiguousarray(image))[0]
        return x, multi_hot(item.labels, self.num_classes)


@dataclass(frozen=True)
class ResizePlan:
    """Random resizing: square sides from ``min_size`` to ``max_size`` in steps of ``step``."""

    min_size: int
    max_size: int
    step: int

    def sides(self) -> list[int]:
        """Every side a batch may get."""
        return list(range(self.min_size, self.max_size + 1, self.step))


def epoch_batches(n: int, batch_size: int, epoch: int, seed: int, plan: ResizePlan,
                  flip: bool = True) -> list[list[Key]]:
    """The planned batches of one epoch (see the module docstring)."""
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(n)
    sides = plan.sides()
    batches = []
    for start in range(0, n, batch_size):
        chunk = order[start:start + batch_size]
        side = int(sides[int(rng.integers(len(sides)))])
        flips = rng.random(len(chunk)) < 0.5
        batches.append([(int(i), side, bool(f and flip)) for i, f in zip(chunk, flips,
                                                                         strict=True)])
    return batches


def size_batches(items: Sequence[LabelledImage], batch_size: int, min_input: int
                 ) -> list[list[Key]]:
    """Validation batches at each image's own size: images of equal size batched together."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, item in enumerate(items):
        with Image.open(item.image) as im:
            w, h = im.size
            if im.getexif().get(0x0112) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees
                w, h = h, w
        by_size.setdefault(scaled_size(h, w, 1.0, min_input), []).append(i)
    batches = []
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            batches.append([(i, 0, False) for i in indices[start:start + batch_size]])
    return batches
