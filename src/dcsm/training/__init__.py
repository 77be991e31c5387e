"""Multi-label training of fully convolutional classifiers (the paper's set-up).

* :mod:`dcsm.training.models`: the backbones (``vgg16``, ``small_vgg``; defined in
  :mod:`dcsm.pipeline.adapters.fcn`) as class-score-map networks with VGG-style layer names, and
  their
  optimiser groups.
* :mod:`dcsm.training.data`: reproducible batches with random resizing and flips.
* :mod:`dcsm.training.trainer`: :func:`train` (sigmoid BCE on globally max-pooled scores,
  atomic resumable checkpoints in :mod:`dcsm.pipeline.adapters.checkpoint`' format, validation mAP,
  mixed
  precision on a GPU).

The ``dcsm data`` and ``dcsm train`` commands are in :mod:`dcsm.cli`.

A trained model loads as ``dcsm.load_model("checkpoint:DIR/model.pt")``.
"""

from __future__ import annotations

from dcsm.training.models import BACKBONES, Backbone, build_backbone
from dcsm.training.trainer import (
    RunOptions,
    TrainConfig,
    TrainResult,
    load_checkpoint,
    train,
)

__all__ = [
    "BACKBONES",
    "Backbone",
    "RunOptions",
    "TrainConfig",
    "TrainResult",
    "build_backbone",
    "load_checkpoint",
    "train",
]
