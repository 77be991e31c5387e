"""The checkpoint format of ``dcsm train``: what ``model.pt`` and ``last.pt`` hold, saving and
loading them.

Both the trainer (:mod:`dcsm.training.trainer`, which writes them) and the ``checkpoint:PATH``
model adapter (:mod:`dcsm.pipeline.adapters.trained`, which explains them) import this module, so
the
adapters never depend on the training code.

A checkpoint is a dict saved with ``torch.save`` and loaded with ``weights_only=True`` (plain
tensors, numbers, strings, lists and dicts; no pickled code). Every checkpoint holds:

==================  ============================================================================
key                 value
==================  ============================================================================
``format``          ``"dcsm-checkpoint"``
``version``         ``1`` (:data:`CHECKPOINT_VERSION`)
``kind``            ``"model"`` (``model.pt``) or ``"training"`` (``last.pt``)
``arch``            the architecture (:func:`dcsm.pipeline.adapters.fcn.build_backbone`):
``small_vgg``,
                    ``vgg16``
``arch_config``     its settings (``small_vgg``'s widths, blocks, ...)
``class_names``     the classes, in the order of the score map's channels
``preprocessing``   ``{"mean": [...], "std": [...], "channel_order": "RGB"}``
``default_layers``  the layers dcsm explains by default
``model``           the network's ``state_dict`` (CPU tensors)
``epochs``          the number of epochs completed when it was written
``history``         per completed epoch: losses, validation mAP, learning rate, time
``best_map``        the best validation mAP so far (None without validation)
``train_config``    the training settings; ``data`` the data root
==================  ============================================================================

``last.pt`` adds what continuing needs: ``optimizer``, ``scaler``, ``epoch``, ``step``,
``iteration`` and ``rng``. ``model.pt`` is written only once an epoch has completed: a model
that has not finished one epoch of training is not a model, and :func:`load_model_record`
(``checkpoint:PATH``) refuses it (an interrupted first epoch's ``last.pt``, or a ``model.pt``
an older dcsm wrote before training began).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dcsm.errors import DcsmError, first_line
from dcsm.io import write_atomic
from dcsm.io.torch_files import torch_load, torch_load_reason

if TYPE_CHECKING:
    from dcsm.pipeline.adapters.fcn import Backbone

CHECKPOINT_FORMAT = "dcsm-checkpoint"
CHECKPOINT_VERSION = 1
#: The file a training run resumes from.
LAST = "last.pt"
#: The exported model: the best epoch (the last one without validation).
MODEL = "model.pt"
_REQUIRED = ("arch", "class_names", "preprocessing", "model")


def model_record(backbone: Backbone, class_names: Sequence[str],
                 history: Sequence[Mapping[str, Any]] = (),
                 best_map: float | None = None) -> dict[str, Any]:
    """What explaining needs: architecture, classes, preprocessing, the weights, and how far
    training got (``history``: one entry per completed epoch)."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "arch": backbone.arch, "arch_config": dict(backbone.config),
        "class_names": list(class_names),
        "preprocessing": backbone.preprocess.as_dict(),
        "default_layers": list(backbone.default_layers),
        "model": {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()},
        "epochs": len(history),
        "history": [dict(h) for h in history],
        "best_map": best_map,
    }


def save_checkpoint(path: Path, record: Mapping[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: never half-written.

    Raises:
        DcsmError: when the file cannot be written (a full disk, no permission).
    """
    path = Path(path)

    def write(tmp: Path) -> None:
        try:
            torch.save(dict(record), tmp)
        except RuntimeError as exc:  # torch's zip writer reports a full disk this way
            raise OSError(first_line(exc)) from exc

    write_atomic(path, write)


def resolve(path: str | Path) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a training directory's
    ``model.pt``.

    Raises:
        DcsmError: when there is no such file, saying why for a training run that has not
            completed an epoch yet.
    """
    path = Path(path)
    if path.is_dir():
        model = path / MODEL
        if not model.is_file() and (path / LAST).is_file():
            raise DcsmError(f"the training run '{path}' has not completed an epoch yet, so it "
                            f"has no {MODEL}; continue it with `dcsm train --resume --out "
                            f"{path}`")
        path = model
    if not path.is_file():
        raise DcsmError(f"checkpoint '{path}' does not exist")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A dcsm checkpoint (a file, or a training directory: its ``model.pt``), checked for its
    format and keys; it may be one that has not completed an epoch (``last.pt`` to resume).

    Raises:
        DcsmError: for a missing or unreadable file, another format, or a missing key.
    """
    path = resolve(path)
    try:
        record = torch_load(path)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on junk in many ways
        raise DcsmError(f"cannot read checkpoint '{path}': {torch_load_reason(exc)}") from exc
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise DcsmError(f"'{path}' is not a dcsm checkpoint (written by dcsm train)")
    if record.get("version") != CHECKPOINT_VERSION:
        raise DcsmError(f"checkpoint '{path}' has format version {record.get('version')}; "
                        f"this dcsm reads version {CHECKPOINT_VERSION}")
    for key in _REQUIRED:
        if key not in record:
            raise DcsmError(f"checkpoint '{path}' lacks '{key}'")
    return record


def epochs_completed(record: Mapping[str, Any]) -> int:
    """The number of training epochs a checkpoint's weights have completed."""
    epochs = record.get("epochs")
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        return epochs
    return len(record.get("history") or [])  # written before the "epochs" key existed


def load_model_record(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(file, record) of a checkpoint to explain: :func:`load_checkpoint`, and refused unless
    its weights have completed at least one epoch of training.

    Raises:
        DcsmError: as :func:`load_checkpoint`, or for weights that have not finished an epoch.
    """
    file = resolve(path)
    record = load_checkpoint(file)
    if epochs_completed(record) < 1:
        hint = (f"continue the run with `dcsm train --resume --out {file.parent}`"
                if (file.parent / LAST).is_file() else "train it for at least one epoch")
        raise DcsmError(f"checkpoint '{file}' has not completed an epoch of training (its "
                        f"weights are close to the random initial ones); {hint}")
    return file, record
