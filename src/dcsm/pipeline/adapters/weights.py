"""Reading weight files from disk with clear errors, and a digest of a model's weights.

No weight file is trusted: nothing in one can run code. ``torch.save`` files are read with
``torch.load(weights_only=True)`` (tensors and plain containers only), and pickles of numpy
arrays (:func:`load_array_pickle`) with an unpickler that knows no class or function but the
three numpy needs to rebuild an array.
"""

from __future__ import annotations

import hashlib
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch import nn

from dcsm.errors import DcsmError, first_line
from dcsm.io.torch_files import torch_load, torch_load_reason


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a state dict saved with ``torch.save`` (plain, or under ``state_dict``/``model``),
    by :func:`torch_load`: nothing in the file can run code."""
    path = Path(path)
    if not path.is_file():
        raise DcsmError(f"weights file '{path}' does not exist")
    try:
        obj = torch_load(path)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on junk in many ways
        raise DcsmError(f"cannot read weights file '{path}': {torch_load_reason(exc)}"
                        ) from exc
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, Mapping) and key in obj and isinstance(obj[key], Mapping):
            obj = obj[key]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DcsmError(f"weights file '{path}' does not hold a state dict of tensors")
    return dict(obj)


# The globals a pickle of plain numpy arrays refers to (numpy 1.x and 2.x spell the modules
# differently; protocol 5 rebuilds arrays from a buffer); rebuilding an array calls nothing else.
_ARRAY_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


def _latin1_bytes(text: str, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """What protocol 2 pickles of ``bytes`` call (``_codecs.encode(text, "latin1")``), for
    that encoding only: no other codec is looked up."""
    if encoding not in ("latin1", "latin-1") or errors != "strict" or not isinstance(text, str):
        raise pickle.UnpicklingError(f"it encodes text as {encoding!r}; only latin1 bytes are "
                                     "accepted")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler of numbers, strings, lists, tuples, dicts and numpy arrays, nothing else.

    Every class or function a pickle names goes through :meth:`find_class`, which admits only
    numpy's array reconstruction (:data:`_ARRAY_GLOBALS`): a pickle that names anything else
    (``os.system``, ``builtins.eval``, a class with a ``__reduce__``...) is refused before
    anything of it is called. Persistent ids are refused by :class:`pickle.Unpickler` itself.
    """

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file, fix_imports=False)

    def find_class(self, module: str, name: str) -> Any:  # noqa: ANN401 - pickle's protocol
        """The numpy reconstruction globals, and latin1 encoding for protocol 2's bytes;
        :class:`pickle.UnpicklingError` for any other."""
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) not in _ARRAY_GLOBALS:
            raise pickle.UnpicklingError(f"it names {module}.{name}, and only numpy arrays "
                                         "are accepted")
        return super().find_class(module, name)


def load_array_pickle(path: str | Path) -> Any:  # noqa: ANN401 - whatever plain data it holds
    """Read a pickle that may hold only plain data and numpy arrays (whatever the suffix).

    Numbers, strings, bytes, lists, tuples, dicts and ``numpy.ndarray`` / ``numpy.dtype``
    are rebuilt; a pickle naming any other class or function is refused without running any
    of it (see :class:`_ArrayUnpickler`). The caller checks the structure it expects.

    Raises:
        DcsmError: for a missing file, or one that is not such a pickle.
    """
    path = Path(path)
    if not path.is_file():
        raise DcsmError(f"weights file '{path}' does not exist")
    try:
        with path.open("rb") as f:
            return _ArrayUnpickler(f).load()
    except Exception as exc:  # noqa: BLE001 - unpickling junk fails in many ways
        raise DcsmError(f"cannot read weights file '{path}' as a pickle of numpy arrays: "
                        f"{first_line(exc)}") from exc


def is_torch_file(path: str | Path) -> bool:
    """Whether ``path`` is in ``torch.save``'s format: a ``.pt``/``.pth`` suffix (any case) or
    a zip archive (what ``torch.save`` writes whatever the name)."""
    path = Path(path)
    if path.suffix.lower() in (".pt", ".pth"):
        return True
    try:
        with path.open("rb") as f:
            return f.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def is_float_array(value: object) -> bool:
    """Whether ``value`` is a plain ``numpy.ndarray`` of floats (float16, 32 or 64)."""
    return type(value) is np.ndarray and value.dtype.kind == "f" and value.dtype.itemsize <= 8


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with a one-line DcsmError when they do not fit."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(
                f"{len(wrong)} of wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                f"vs {tuple(own[k].shape)})"
            )
        raise DcsmError(f"weights from {source} do not fit the model: " + "; ".join(parts))
    model.load_state_dict(state)


def weights_digest(model: nn.Module) -> str:
    """SHA-256 (16 hex digits) of a model's state: names, dtypes, shapes and values; what
    resumable runs (``dcsm batch``, ``dcsm evaluate``) fingerprint the model by."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]
