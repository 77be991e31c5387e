"""Data sets in the PASCAL VOC 2012 layout: readers for VOC and SBD, and a generated set.

* :class:`VOCDataset`: ``VOCdevkit/VOC2012`` (images, masks, split lists), optionally with
  :class:`SBD`'s image-level labels; ``labelled_items(split)`` gives image-level labels for
  training, ``segmentation_items(split)`` images with masks for evaluation.
* :func:`write_synthetic`: a seeded multi-object data set with exact masks, in the same layout
  (``dcsm data synthetic --out ROOT``).
"""

from __future__ import annotations

from dcsm.datasets.synthetic import CLASSES as SYNTHETIC_CLASSES
from dcsm.datasets.synthetic import SyntheticConfig, generate_sample, write_synthetic
from dcsm.datasets.voc import (
    SBD,
    TRAIN_AUG,
    VOC_CLASSES,
    VOID,
    LabelledImage,
    VOCDataset,
    find_voc_root,
    labels_in_mask,
)

__all__ = [
    "SBD",
    "SYNTHETIC_CLASSES",
    "TRAIN_AUG",
    "VOC_CLASSES",
    "VOID",
    "LabelledImage",
    "SyntheticConfig",
    "VOCDataset",
    "find_voc_root",
    "generate_sample",
    "labels_in_mask",
    "write_synthetic",
]
