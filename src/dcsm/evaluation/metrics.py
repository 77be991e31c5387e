r"""Scores: the segmentation confusion matrix and IoU, and average precision for classifiers.

**Confusion matrix.** Over ``L`` labels (background 0 and the classes 1..L-1), ``C[g, p]``
counts the pixels whose ground truth is ``g`` and prediction ``p``, summed over the images of a
split; pixels whose ground truth is VOC's 255 ("void", object borders) are left out.

**IoU** of label l: :math:`C_{ll} / (\sum_p C_{lp} + \sum_g C_{gl} - C_{ll})`, i.e. true
positives over true positives, false positives and false negatives, over the whole split (as
the VOC benchmark does, not averaged per image). A label that neither occurs nor is predicted
anywhere has no IoU (NaN) and is left out of the mean; a label that occurs but is never
predicted, or is predicted but never occurs, has IoU 0. **mIoU** is the mean over the labels
with an IoU, background included.

**Average precision** (validation of the classifier): per class, the images sorted by score,
the mean of the precision at the rank of each positive image (non-interpolated AP); classes
without a positive image have no AP and are left out of the mean (mAP).
"""

from __future__ import annotations

import numpy as np

from dcsm.datasets.voc import VOID
from dcsm.errors import DcsmError


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_labels: int,
                     ignore: int = VOID) -> np.ndarray:
    """(num_labels, num_labels) int64 counts, rows ground truth, columns prediction."""
    truth = np.asarray(truth)
    prediction = np.asarray(prediction)
    if truth.shape != prediction.shape:
        raise DcsmError(f"prediction is {prediction.shape} but the ground truth is "
                        f"{truth.shape}")
    keep = truth != ignore
    t = truth[keep].astype(np.int64)
    p = prediction[keep].astype(np.int64)
    if t.size and (t.min() < 0 or t.max() >= num_labels):
        raise DcsmError(f"ground truth holds label {int(t.max())}, outside 0..{num_labels - 1} "
                        f"and {ignore}")
    if p.size and (p.min() < 0 or p.max() >= num_labels):
        raise DcsmError(f"prediction holds label {int(p.max())}, outside 0..{num_labels - 1}")
    counts = np.bincount(t * num_labels + p, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def iou_per_label(confusion: np.ndarray) -> np.ndarray:
    """IoU of every label (NaN where the label neither occurs nor is predicted)."""
    cm = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mean_iou(confusion: np.ndarray) -> float:
    """Mean IoU over the labels that have one (NaN if none does)."""
    iou = iou_per_label(confusion)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


def pixel_accuracy(confusion: np.ndarray) -> float:
    """Share of the scored pixels labelled correctly."""
    cm = np.asarray(confusion)
    total = cm.sum()
    return float(np.trace(cm) / total) if total else float("nan")


def average_precision(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-class AP from (N, C) scores and (N, C) 0/1 targets (NaN for classes with no
    positive)."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets) > 0.5
    if scores.shape != targets.shape or scores.ndim != 2:
        raise DcsmError(f"scores {scores.shape} and targets {targets.shape} must both be (N, C)")
    out = np.full(scores.shape[1], np.nan)
    for c in range(scores.shape[1]):
        positives = targets[:, c].sum()
        if positives == 0:
            continue
        order = np.argsort(-scores[:, c], kind="stable")
        hits = targets[order, c]
        precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
        out[c] = float(precision[hits].sum() / positives)
    return out


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """Mean of the per-class APs that exist (NaN if none)."""
    ap = average_precision(scores, targets)
    return float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
