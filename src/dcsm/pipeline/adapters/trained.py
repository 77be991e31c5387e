"""Models trained by ``dcsm train``: ``load_model("checkpoint:PATH")``.

``PATH`` is a checkpoint file (``DIR/model.pt``, the best model, or ``DIR/last.pt``) or the
training directory itself (its ``model.pt``). The checkpoint carries the architecture, the class
names and the preprocessing, so nothing else is needed. The model is the fully convolutional
network it was trained as (see :mod:`dcsm.pipeline.adapters.fcn`), explained as the paper's: a
multi-label (sigmoid) classifier whose image-level score is the global **max** of its class
score map; default layers ``conv3_1`` ... ``conv5_3`` (VGG-16) or ``conv3_1`` ... ``conv5_2``
(``small_vgg``).

The file format is described in :mod:`dcsm.pipeline.adapters.checkpoint`. A checkpoint whose
weights have not completed an epoch of training (the ``last.pt`` of a run interrupted in its first
epoch) is refused.
"""

from __future__ import annotations

from pathlib import Path

from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing, float_triple
from dcsm.pipeline.adapters.checkpoint import epochs_completed, load_model_record
from dcsm.pipeline.adapters.fcn import build_backbone
from dcsm.pipeline.adapters.weights import load_into

PREFIX = "checkpoint:"


def checkpoint_adapter(path: str | Path, weights: str | Path | None = None) -> ModelAdapter:
    """The adapter of a dcsm training checkpoint (see the module docstring)."""
    if weights is not None:
        raise DcsmError("a checkpoint model carries its own weights; --weights is not used "
                        "with checkpoint:PATH")
    if str(path) == "":
        raise DcsmError("checkpoint:PATH needs a path (a checkpoint file or a training "
                        "directory)")
    _, record = load_model_record(path)
    names = [str(n) for n in record["class_names"]]
    backbone = build_backbone(str(record["arch"]), len(names), None,
                              record.get("arch_config") or None)
    load_into(backbone.model, record["model"], f"checkpoint '{path}'")
    pre = record["preprocessing"]
    try:
        preprocess = Preprocessing(mean=float_triple(pre["mean"]), std=float_triple(pre["std"]),
                                   channel_order=pre.get("channel_order", "RGB"))
    except (KeyError, TypeError, ValueError) as exc:
        raise DcsmError(f"checkpoint '{path}' has malformed preprocessing {pre!r}") from exc
    note = f", val mAP {record['best_map']:.3f}" if record.get("best_map") is not None else ""
    return ModelAdapter(
        name=f"{PREFIX}{path}",
        model=backbone.model.eval(),
        class_names=names,
        preprocess=preprocess,
        default_layers=list(record.get("default_layers") or backbone.default_layers),
        layer_aliases=backbone.layer_aliases,
        multilabel=True,
        pooling="max",
        min_input=backbone.min_input,
        gradcam_layer=backbone.gradcam_layer,
        description=f"dcsm-trained {record['arch']}, {len(names)} classes, "
                    f"{epochs_completed(record)} epochs{note}",
    )
