"""Data-set scale runs: ``dcsm batch`` and its parts.

* :mod:`dcsm.batch.inputs`: the images of a folder or a list of paths, sorted and given output
  names (:func:`discover`); new sources (a VOC split) plug in with :func:`register_source`.
* :mod:`dcsm.batch.shard`: ranks from torchrun's environment, the deterministic split, the
  device of each rank, the optional process group for the final summary.
* :mod:`dcsm.batch.manifest`: settings fingerprint and the per-rank JSON-lines records.
* :mod:`dcsm.batch.loader`: a torch DataLoader decoding images in worker processes.
* :mod:`dcsm.batch.runner`: the resumable loop (:func:`run`); :mod:`dcsm.batch.progress` its bar.

The ``dcsm batch`` command's options are in :mod:`dcsm.cli.batch`. Names load on first use, so
importing the package stays light.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_NAMES = {
    "InputItem": "inputs",
    "discover": "inputs",
    "register_source": "inputs",
    "Rank": "shard",
    "Manifest": "manifest",
    "BatchOptions": "runner",
    "BatchReport": "runner",
    "run": "runner",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str) -> Any:
    """Load ``dcsm.batch.<module>`` when one of its names is first asked for."""
    if name in _NAMES:
        return getattr(import_module(f"dcsm.batch.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
