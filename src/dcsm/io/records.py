"""Resumable runs: a settings fingerprint and an append-only JSON-lines journal.

``dcsm batch`` (:mod:`dcsm.batch.manifest`) and ``dcsm evaluate``
(:mod:`dcsm.evaluation.compare`) both record their progress this way:

* :func:`check_settings` keeps ``settings.json`` beside the journal: the settings every record
  was made with, and their :func:`fingerprint` (the first 16 hex digits of the SHA-256 of the
  settings as canonical JSON). A rerun with other settings stops with an error naming the
  differences (:func:`differences`), unless forced, which replaces the file.
* :class:`Journal` appends one JSON object per line, each in one ``write`` call and flushed at
  once, under an exclusive lock (POSIX), so one process writes a file. A run killed while
  appending leaves at most one partial last line: :func:`read_records` skips it and the next
  :meth:`Journal.open` ends it, so later records stay readable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

from dcsm.errors import DcsmError, first_line
from dcsm.io import json_text, save_json

if sys.platform != "win32":
    import fcntl

    def _lock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
else:  # pragma: no cover - POSIX only; elsewhere the lock is skipped
    def _lock(fd: int) -> None:
        pass

__all__ = ["Journal", "check_settings", "differences", "fingerprint", "read_records"]


def fingerprint(settings: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``settings`` as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:  # noqa: ANN401 - JSON
    """What changed between two JSON values, one ``key: old -> new`` line per leaf."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name} (new)")
            elif key not in new:
                out.append(f"{name} (gone)")
            else:
                out.extend(differences(old[key], new[key], name))
        return out
    if old != new:
        return [f"{prefix or 'settings'}: {json.dumps(old, default=str)} -> "
                f"{json.dumps(new, default=str)}"]
    return []


def check_settings(path: Path, settings: Mapping[str, Any], force: bool, out: Path) -> str:
    """Record ``settings`` in ``path`` (a ``settings.json``), or check them against those
    recorded; the fingerprint.

    Raises:
        DcsmError: when the recorded settings differ and not ``force`` (naming ``out``, the
            folder whose outputs they made, and the first differences), or ``path`` cannot be
            read or written.
    """
    fp = fingerprint(settings)
    try:
        old = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        old = None
    except (OSError, ValueError) as exc:
        raise DcsmError(f"cannot read '{path}': {first_line(exc)}") from exc
    if isinstance(old, dict) and old.get("fingerprint") == fp:
        return fp
    if isinstance(old, dict) and not force:
        diff = differences(old.get("settings"),
                           dict(json.loads(json.dumps(settings, default=str))))
        shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
        raise DcsmError(f"'{out}' holds outputs made with other settings ({shown}); use "
                        "another --out, or --force to redo them with these settings")
    # Several processes (ranks) may get here at once: each writes the same content, atomically.
    save_json(Path(path), {"fingerprint": fp, "settings": dict(settings)})
    return fp


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON records of one journal file; partial or garbled lines are skipped."""
    try:
        with Path(path).open("rb") as f:
            for raw in f:
                if not raw.endswith(b"\n"):
                    continue  # a line cut short by a killed run
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(rec, dict):
                    yield rec
    except FileNotFoundError:
        return


class Journal:
    """An append-only JSON-lines file written by one process at a time.

    ``busy`` is the error message when another process holds the file.
    """

    def __init__(self, path: Path, busy: str | None = None) -> None:
        self.path = Path(path)
        self.busy = busy or f"another dcsm run is writing '{self.path}'"
        self._file: IO[bytes] | None = None

    def open(self) -> None:
        """Open (and lock) the file for appending, ending a line a killed run cut short.

        Raises:
            DcsmError: when the file cannot be written, or another process holds it.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = self.path.open("ab")
        except OSError as exc:
            raise DcsmError(f"cannot write '{self.path}': {exc.strerror or first_line(exc)}"
                            ) from exc
        try:
            _lock(f.fileno())
        except OSError:
            f.close()
            raise DcsmError(self.busy) from None
        try:
            if f.tell() > 0:
                with self.path.open("rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        f.write(b"\n")
                        f.flush()
        except OSError as exc:
            f.close()
            raise DcsmError(f"cannot write '{self.path}': {exc.strerror or first_line(exc)}"
                            ) from exc
        self._file = f

    def write(self, event: str, **fields: Any) -> None:
        """Append ``{"event": event, "time": ..., **fields}`` as one line, flushed at once.

        Raises:
            DcsmError: when the line cannot be written (a full disk).
            RuntimeError: when the journal is not open.
        """
        if self._file is None:
            raise RuntimeError(f"journal '{self.path}' is not open")
        rec = {"event": event, "time": round(time.time(), 3), **fields}
        line = json_text(rec, indent=None, nan_as_null=True, default=str) + "\n"
        try:
            self._file.write(line.encode("utf-8"))
            self._file.flush()
        except OSError as exc:
            raise DcsmError(f"cannot write '{self.path}': {exc.strerror or first_line(exc)}"
                            ) from exc

    def close(self) -> None:
        """Release the lock and close the file."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None

    def __enter__(self) -> Journal:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
