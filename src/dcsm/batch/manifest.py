"""The manifest of a batch run: which settings, which images done, which failed and why.

It lives in ``DIR/.dcsm-batch/`` and is built on :mod:`dcsm.io.records`:

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

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dcsm.io.records import Journal, check_settings, fingerprint, read_records

__all__ = ["MANIFEST_DIR", "Manifest", "State", "fingerprint", "read_records"]

MANIFEST_DIR = ".dcsm-batch"


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
        self._journal = Journal(self.path, busy=f"another dcsm batch run is writing "
                                                f"'{self.path}' (same output folder and rank)")

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
        return check_settings(self.settings_path, settings, force, self.out)

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
        self._journal.open()

    def write(self, event: str, **fields: Any) -> None:
        """Append one record (one ``write`` call, flushed at once)."""
        self._journal.write(event, rank=self.rank, **fields)

    def start(self, **fields: Any) -> None:
        """The ``start`` record: host, process and what this run is about to do."""
        self.write("start", host=socket.gethostname(), pid=os.getpid(), **fields)

    def close(self) -> None:
        """Release the lock and close the file."""
        self._journal.close()
