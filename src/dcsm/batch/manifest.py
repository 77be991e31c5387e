"""The manifest of a batch run: which settings, which images done, which failed and why.

It lives in ``DIR/.dcsm-batch/``:

* ``settings.json``: the settings every output of ``DIR`` was made with and their fingerprint
  (the first 16 hex digits of the SHA-256 of the settings as canonical JSON). A run whose
  settings differ stops with an error naming the differences, unless told to start over
  (``--force``), which replaces the file; images are then redone as they come.
* ``rank-<R>.jsonl``: one JSON object per line, appended by rank R only (no two processes write
  one file; a lock refuses a second run with the same rank): ``start`` and ``end`` of each run,
  and per image ``done`` (written after its directory was renamed into place) or ``failed``
  (with the reason). Every record carries the fingerprint.

An image counts as done when a ``done`` record with the current fingerprint and output name
exists *and* its directory does: a run killed between the rename and the record redoes the
image, and a run killed while appending leaves at most one partial last line, which readers
skip. Every rank reads all ``rank-*.jsonl`` files, so a rerun may use another number of ranks.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dcsm.errors import DcsmError
from dcsm.io import save_json

try:  # POSIX only; elsewhere the lock is skipped
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

MANIFEST_DIR = ".dcsm-batch"


def fingerprint(settings: Mapping[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``settings`` as canonical JSON."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{prefix}.{key}" if prefix else str(key)
            if key not in old:
                out.append(f"{name} (new)")
            elif key not in new:
                out.append(f"{name} (gone)")
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    if old != new:
        return [f"{prefix or 'settings'}: {json.dumps(old, default=str)} -> "
                f"{json.dumps(new, default=str)}"]
    return []


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON records of one manifest file; partial or garbled lines are skipped."""
    try:
        with path.open("rb") as f:
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


@dataclass
class State:
    """What the manifest files say: the last ``done`` record per key (current fingerprint)
    and the last ``failed`` one."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, dict[str, Any]] = field(default_factory=dict)


class Manifest:
    """The manifest of output folder ``out``, as seen and written by one rank."""

    def __init__(self, out: Path, rank: int) -> None:
        self.out = Path(out)
        self.dir = self.out / MANIFEST_DIR
        self.rank = rank
        self.path = self.dir / f"rank-{rank}.jsonl"
        self._file: IO[bytes] | None = None

    # ------------------------------------------------------------------ settings
    @property
    def settings_path(self) -> Path:
        """``DIR/.dcsm-batch/settings.json``."""
        return self.dir / "settings.json"

    def check_settings(self, settings: Mapping[str, Any], force: bool = False) -> str:
        """Record ``settings`` for the folder, or check them against those recorded.

        Returns the fingerprint. Raises DcsmError if the folder's settings differ and not
        ``force``.
        """
        fp = fingerprint(settings)
        record = {"fingerprint": fp, "settings": dict(settings)}
        try:
            old = json.loads(self.settings_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            old = None
        except (OSError, ValueError) as exc:
            raise DcsmError(f"cannot read '{self.settings_path}': {exc}") from exc
        if isinstance(old, dict) and old.get("fingerprint") == fp:
            return fp
        if isinstance(old, dict) and not force:
            diff = _differences(old.get("settings"), dict(json.loads(json.dumps(
                settings, default=str))))
            shown = "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
            raise DcsmError(f"'{self.out}' holds outputs made with other settings ({shown}); "
                            "use another --out, or --force to redo them with these settings")
        # Every rank may get here at once: each writes the same content, atomically.
        save_json(self.settings_path, record)
        return fp

    # ------------------------------------------------------------------ reading
    def files(self) -> list[Path]:
        """Every rank's manifest file, sorted."""
        if not self.dir.is_dir():
            return []
        return sorted(self.dir.glob("rank-*.jsonl"))

    def state(self, fp: str) -> State:
        """Done and failed records with fingerprint ``fp``, from every rank's file."""
        st = State()
        for path in self.files():
            for rec in read_records(path):
                key = rec.get("key")
                if rec.get("fingerprint") != fp or not isinstance(key, str):
                    continue
                if rec.get("event") == "done":
                    st.done[key] = rec
                elif rec.get("event") == "failed":
                    st.failed[key] = rec
        return st

    def is_done(self, state: State, key: str, name: str) -> bool:
        """A done record for ``key`` under output ``name``, and its directory is there."""
        rec = state.done.get(key)
        return rec is not None and rec.get("output") == name and (self.out / name).is_dir()

    # ------------------------------------------------------------------ writing
    def open(self) -> None:
        """Open (and lock) this rank's file for appending."""
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            f = self.path.open("ab")
        except OSError as exc:
            raise DcsmError(f"cannot write the manifest '{self.path}': {exc.strerror}") from exc
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                raise DcsmError(f"another dcsm batch run is writing '{self.path}' (same output "
                                "folder and rank)") from None
        if f.tell() > 0:  # finish a line cut short by a killed run
            with self.path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    f.write(b"\n")
        self._file = f

    def write(self, event: str, **fields: Any) -> None:
        """Append one record (one ``write`` call, flushed at once)."""
        if self._file is None:
            raise RuntimeError("manifest not open")
        rec = {"event": event, "time": round(time.time(), 3), "rank": self.rank, **fields}
        line = json.dumps(rec, ensure_ascii=False, default=str) + "\n"
        self._file.write(line.encode("utf-8"))
        self._file.flush()

    def start(self, **fields: Any) -> None:
        """The ``start`` record: host, process and what this run is about to do."""
        self.write("start", host=socket.gethostname(), pid=os.getpid(), **fields)

    def close(self) -> None:
        """Release the lock and close the file."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()
            self._file = None
