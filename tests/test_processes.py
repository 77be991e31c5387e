"""SIGTERM and SIGKILL: ``dcsm batch`` stopped either way leaves no process behind (its loader
workers and writer end with it), SIGTERM runs the Ctrl-C clean-up and exits 143, and a rerun
completes the run. The processes of a run are found through ``/proc`` as those of the session
it was started in (children keep their parent's session when the parent dies).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from batch_helpers import BUNDLED, batch_cmd, env, records
from PIL import Image

from dcsm import cli
from dcsm.processes import EXIT_TERMINATED, Terminated, sigterm_as_interrupt

ROOT = Path(__file__).resolve().parents[1]
N = 12
ARGS = ["--scales", "1", "--classes", "tabby,espresso", "--threads", "1", "--no-progress",
        "--no-pictures"]
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").exists(),
                                reason="finding a session's processes needs Linux's /proc")


def session_processes(session: int) -> list[int]:
    """Live (not zombie) processes of ``session``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path("/proc", entry, "stat").read_text()
        except OSError:  # ended meanwhile
            continue
        state, _ppid, _group, sid = stat[stat.rindex(")") + 2:].split()[:4]
        if int(sid) == session and state not in ("Z", "X"):
            found.append(int(entry))
    return found


def complete(d: Path) -> bool:
    """An output directory of ``--no-pictures`` holds its data, whole."""
    summary = json.loads((d / "summary.json").read_text())
    with np.load(d / "maps.npz") as npz:
        names = set(npz.files)
    return {p.name for p in d.iterdir()} == {"maps.npz", "summary.json"} and \
        names == {c["name"] for c in summary["candidates"]} == {"tabby", "espresso"}


def wait_for(condition, seconds: float, what: str) -> None:
    """Poll ``condition`` until true; fail saying ``what`` did not happen within ``seconds`` (a
    bound on a hang, not a measurement)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(what)
        time.sleep(0.05)


def stop_all(session: int) -> None:
    """Kill whatever is left of a session (so that a failing test leaks nothing)."""
    for pid in session_processes(session):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


# ----------------------------------------------------------------------------- SIGTERM
def test_sigterm_raises_terminated_once_then_is_restored():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_as_interrupt():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # interrupted by the handler at once
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # a second one: ignored, clean-up goes on
            time.sleep(0.01)
    assert signal.getsignal(signal.SIGTERM) is before
    assert issubclass(Terminated, KeyboardInterrupt)  # the Ctrl-C clean-up runs for it


# ----------------------------------------------------------------------------- children
FOLLOWER = textwrap.dedent("""
    import importlib.util, multiprocessing, os, sys, time

    spec = importlib.util.spec_from_file_location("processes", sys.argv[1])
    processes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(processes)

    def child(parent, use_prctl, ready):
        processes.follow_parent(parent, use_prctl=use_prctl)
        open(f"{ready}/{os.getpid()}", "w").close()
        time.sleep(600)

    if __name__ == "__main__":
        ctx = multiprocessing.get_context("spawn")
        kids = [ctx.Process(target=child, args=(os.getpid(), p, sys.argv[2]))
                for p in (True, False)]
        for k in kids:
            k.start()
        print(" ".join(str(k.pid) for k in kids), flush=True)
        time.sleep(600)
""")


@LINUX_PROC
def test_children_end_with_a_killed_parent(tmp_path):
    """Both ways a child follows its parent (the kernel's parent-death signal, and the watch
    thread used where there is none) end it when the parent is killed with SIGKILL."""
    script = tmp_path / "follower.py"
    script.write_text(FOLLOWER)
    ready = tmp_path / "ready"
    ready.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(ROOT / "src/dcsm/processes.py"),
                             str(ready)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        kids = [int(p) for p in proc.stdout.readline().split()]
        assert len(kids) == 2 and set(kids) <= set(session_processes(proc.pid))
        wait_for(lambda: len(list(ready.iterdir())) == 2, 60, "the children did not start")
        proc.kill()
        proc.wait(timeout=30)
        wait_for(lambda: not set(kids) & set(session_processes(proc.pid)), 30,
                 "a child outlived its killed parent")
    finally:
        stop_all(proc.pid)
        proc.stdout.close()


# ----------------------------------------------------------------------------- dcsm batch
@pytest.fixture(scope="module")
def many_images(tmp_path_factory) -> Path:
    """12 small crops of the bundled image: a run that lasts a few seconds."""
    folder = tmp_path_factory.mktemp("signal_inputs") / "imgs"
    folder.mkdir()
    src = Image.open(BUNDLED).convert("RGB")
    for i in range(N):
        x = i * 18
        src.crop((x, 0, x + 224, 224)).resize((64, 56)).save(folder / f"im{i:02d}.png")
    return folder


def start_batch(images: Path, out: Path, log: Path) -> subprocess.Popen:
    """``dcsm batch`` with 2 loader workers and 1 writer, in a session of its own, once it is
    mid-run: an image done by it and every worker process up."""
    before = len([r for r in records(out) if r["event"] == "done"]) if out.exists() else 0
    with log.open("w") as f:
        proc = subprocess.Popen(batch_cmd(str(images), "--out", str(out), *ARGS, "--workers",
                                          "2", "--writers", "1"), env=env(), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)

    def mid_run() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"dcsm batch ended early ({proc.returncode}): {log.read_text()}")
        done = [r for r in records(out) if r["event"] == "done"] if out.exists() else []
        # the run itself, 2 loader workers and the writer (and the resource tracker)
        return len(done) > before and len(session_processes(proc.pid)) >= 4

    wait_for(mid_run, 300, "dcsm batch did not get under way")
    return proc


@LINUX_PROC
def test_batch_stopped_by_sigterm_or_sigkill_leaves_no_process(many_images, tmp_path, capsys):
    out = tmp_path / "out"
    # SIGTERM (docker stop, a job scheduler): Ctrl-C's clean-up, status 143, nothing left.
    proc = start_batch(many_images, out, tmp_path / "term.log")
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == EXIT_TERMINATED
        log = (tmp_path / "term.log").read_text()
        assert log.strip().splitlines()[-1] == "dcsm: terminated", log
        assert "Traceback" not in log
        wait_for(lambda: not session_processes(proc.pid), 30,
                 "a loader worker or writer outlived dcsm batch stopped by SIGTERM")
    finally:
        stop_all(proc.pid)
    assert not [p.name for p in out.iterdir() if ".partial-" in p.name or ".trash-" in p.name]
    assert all(complete(d) for d in out.iterdir() if not d.name.startswith("."))
    after_term = [r for r in records(out) if r["event"] == "done"]
    assert 1 <= len(after_term) < N

    # SIGKILL: nothing can be cleaned up, but every child ends with the run.
    proc = start_batch(many_images, out, tmp_path / "kill.log")
    try:
        proc.kill()
        assert proc.wait(timeout=60) == -signal.SIGKILL
        wait_for(lambda: not session_processes(proc.pid), 30,
                 "a loader worker or writer outlived dcsm batch killed by SIGKILL")
    finally:
        stop_all(proc.pid)

    # The rerun resumes and completes.
    assert cli.main(["batch", str(many_images), "--out", str(out), *ARGS, "--writers", "0",
                     "--workers", "0"]) == 0
    done = len([r for r in records(out) if r["event"] == "done"])
    summary = capsys.readouterr().out
    assert f"{N} of {N} images:" in summary and " 0 failed" in summary
    start = [r for r in records(out) if r["event"] == "start"][-1]
    assert start["skipped"] > len(after_term) and start["skipped"] + start["pending"] == N
    assert done >= N
    visible = sorted(d.name for d in out.iterdir() if not d.name.startswith("."))
    assert visible == [f"im{i:02d}" for i in range(N)] and all(complete(out / n)
                                                                for n in visible)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".dcsm-batch"]
