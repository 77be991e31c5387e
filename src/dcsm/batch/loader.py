"""Decoding images in worker processes while the model runs: a torch DataLoader.

Each sample is one image (inputs may differ in size, so nothing is stacked): the item's
position, the decoded ``(H, W, 3)`` uint8 array or None, and the reason it could not be read.
A file that cannot be read does not stop the loader; the runner records it as failed.
The workers end with the process that started them, even when it is killed
(:func:`dcsm.processes.follow_parent`), and :meth:`Decoding.close` stops them at once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass

import numpy as np
from torch.utils.data import DataLoader, Dataset

from dcsm.batch.inputs import InputItem
from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS, load_image
from dcsm.processes import ParentWatch


@dataclass
class Loaded:
    """One sample: ``items[index]`` decoded (``image``) or not (``error``)."""

    index: int
    image: np.ndarray | None
    error: str | None


class ImageDataset(Dataset):
    """Decodes ``items[i]`` with :func:`dcsm.io.load_image` (at most ``max_pixels`` pixels);
    errors become :class:`Loaded`."""

    def __init__(self, items: Sequence[InputItem],
                 max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
        self.items = list(items)
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> Loaded:
        item = self.items[index]
        try:
            return Loaded(index, load_image(item.path, self.max_pixels), None)
        except DcsmError as exc:
            return Loaded(index, None, str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad file must not stop the run
            return Loaded(index, None, f"cannot read image '{item.path}': "
                                       f"{type(exc).__name__}: {exc}")


def _keep(sample: Loaded) -> Loaded:
    return sample


class Decoding(Iterator[Loaded]):
    """The decoded images in order (:func:`iterate`); :meth:`close` stops the workers."""

    def __init__(self, samples: Iterator[Loaded]) -> None:
        self._samples: Iterator[Loaded] | None = samples

    def __next__(self) -> Loaded:
        if self._samples is None:
            raise StopIteration
        return next(self._samples)

    def close(self) -> None:
        """Stop the worker processes now (also after an interruption); idempotent."""
        samples, self._samples = self._samples, None
        shutdown = getattr(samples, "_shutdown_workers", None)  # torch's multi-worker iterator
        if shutdown is not None:
            with suppress(Exception):
                shutdown()


def iterate(items: Sequence[InputItem], workers: int = 2, prefetch: int = 4,
            max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Decoding:
    """The decoded images in order; ``workers`` processes decode ahead (0: in this process);
    an image of more than ``max_pixels`` pixels is refused from its header.

    The workers start here (not on the first ``next``) and follow this process
    (:class:`dcsm.processes.ParentWatch`); close the result to stop them.
    """
    if not items:
        return Decoding(iter(()))
    workers = max(0, min(workers, len(items)))
    loader = DataLoader(
        ImageDataset(items, max_pixels),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        # batch_size=None: torch hands collate_fn one sample, not the list its annotation states
        collate_fn=_keep,  # type: ignore[arg-type]
        prefetch_factor=prefetch if workers else None,
        persistent_workers=False,
        worker_init_fn=ParentWatch() if workers else None,
    )
    return Decoding(iter(loader))
