"""Weakly supervised segmentation scores: confusion matrix, IoU, mAP, the method comparison.

* :mod:`dcsm.evaluation.metrics`: :func:`confusion_matrix` (VOC's 255 ignored),
  :func:`iou_per_label`, :func:`mean_iou`, :func:`average_precision`.
* :mod:`dcsm.evaluation.compare`: :func:`evaluate`, Simonyan et al. + GrabCut against dcsm and
  its ablations on a VOC-layout split (``dcsm evaluate``).
"""

from __future__ import annotations

from dcsm.evaluation.compare import DEFAULT_METHODS, METHODS, Method, evaluate
from dcsm.evaluation.metrics import (
    average_precision,
    confusion_matrix,
    iou_per_label,
    mean_average_precision,
    mean_iou,
    pixel_accuracy,
)

__all__ = [
    "DEFAULT_METHODS",
    "METHODS",
    "Method",
    "average_precision",
    "confusion_matrix",
    "evaluate",
    "iou_per_label",
    "mean_average_precision",
    "mean_iou",
    "pixel_accuracy",
]
