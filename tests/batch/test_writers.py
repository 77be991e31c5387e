"""Writer processes: the segmentation and the files are made beside the model, the outcomes come
back in the inputs' order, a job's error is recorded, a dead writer loses no image, and the
outputs are those of writing in turn."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from batch_helpers import BUNDLED, assert_same_outputs, env, read_outputs, records
from PIL import Image

from dcsm.batch.runner import Writers, default_writers

ARGS = ["--scales", "1", "--classes", "tabby,espresso", "--threads", "1", "--no-progress",
        "--workers", "0"]


def _job(value: int, parent: int, die_on: int | None = None) -> tuple[int, int]:
    """A writer job: value squared and the process it ran in; fails on 3; with ``die_on`` the
    worker process ends itself there (as one killed for memory)."""
    time.sleep(0.05 * (value % 3))  # outcomes complete out of order
    if value == 3:
        raise ValueError("three is refused")
    if value == die_on and os.getpid() != parent:
        os._exit(9)
    return value * value, os.getpid()


def test_outcomes_come_in_order_with_errors_and_run_in_another_process():
    writers = Writers(1, ahead=2, job=_job)
    parent = os.getpid()
    outcomes = []
    try:
        for v in range(7):
            if v == 5:  # known to have failed: comes back in its turn, behind the jobs
                outcomes += writers.fail(f"item {v}", RuntimeError("unreadable"))
            else:
                outcomes += writers.submit(f"item {v}", v, parent)
            assert len(writers.jobs) <= 2
        outcomes += writers.drain()
    finally:
        writers.close()
    assert [tag for tag, _, _ in outcomes] == [f"item {v}" for v in range(7)]
    for v, (_, value, error) in enumerate(outcomes):
        if v == 3:
            assert value is None and isinstance(error, ValueError)
        elif v == 5:
            assert value is None and str(error) == "unreadable"
        else:
            assert error is None and value[0] == v * v and value[1] != parent


def test_a_dead_writer_loses_nothing():
    writers = Writers(1, job=_job)
    parent = os.getpid()
    try:
        outcomes = []
        for v in range(6):
            outcomes += writers.submit(v, v, parent, 4)
        outcomes += writers.drain()
    finally:
        writers.close()
    assert [tag for tag, _, _ in outcomes] == list(range(6))
    values = {tag: value for tag, value, error in outcomes if error is None}
    assert sorted(values) == [0, 1, 2, 4, 5]  # 3 is the job's own error
    assert values[4] == (16, parent)  # the worker died on it: done here instead
    assert writers.pool is None


def test_no_process_means_in_turn_here():
    writers = Writers(0, job=_job)
    first = writers.submit("a", 2, os.getpid())
    assert first == [("a", (4, os.getpid()), None)] and not writers.jobs


def test_default_writers(monkeypatch, squeeze):
    from dcsm import DistinctSaliency

    ex = DistinctSaliency(squeeze)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(torch, "get_num_threads", lambda: cores)
    assert default_writers(ex) == 0  # every core to the model
    monkeypatch.setattr(torch, "get_num_threads", lambda: max(1, (cores or 1) - 1))
    assert default_writers(ex) == (1 if (cores or 1) > 1 else 0)
    # torchrun with one process per core: no core is free for writers
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(cores))
    assert default_writers(ex) == 0
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "not a number")
    assert default_writers(ex) == (1 if (cores or 1) > 1 else 0)
    # the model on a GPU: the spare cores write, from 1 to 8
    gpu = SimpleNamespace(adapter=SimpleNamespace(device=torch.device("cuda")))
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert default_writers(gpu, decoders=2) == 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert default_writers(gpu, decoders=2) == 5
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # one process per GPU, 8 GPUs, 8 cores
    assert default_writers(gpu, decoders=2) == 1


def test_batch_with_a_writer_equals_writing_in_turn(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = Image.open(BUNDLED).convert("RGB")
    for i in range(5):
        src.crop((i * 40, 0, i * 40 + 224, 224)).resize((72, 64)).save(folder / f"im{i}.png")
    (folder / "im2x.png").write_bytes(b"not a png")  # between the others
    extra = ["--segment", "--crf-iterations", "3"]
    outs = {}
    for writers in ("0", "1"):
        out = tmp_path / f"out{writers}"
        proc = subprocess.run([sys.executable, "-m", "dcsm", "batch", str(folder), "--out",
                               str(out), *ARGS, *extra, "--writers", writers], env=env(),
                              capture_output=True, text=True, timeout=600, check=False)
        assert proc.returncode == 1, proc.stderr  # the broken file
        assert "5 done, 0 already done, 1 failed" in proc.stdout
        outs[writers] = out
        recs = records(out)
        assert recs[0]["writers"] == int(writers)
        done = [r["output"] for r in recs if r["event"] in ("done", "failed")]
        assert done == ["im0", "im1", "im2", "im2x", "im3", "im4"]  # the inputs' order
        assert [r["stage"] for r in recs if r["event"] == "failed"] == ["read"]
    assert_same_outputs(read_outputs(outs["1"]), read_outputs(outs["0"]))
    assert not any(Path(outs["1"]).glob(".*partial*"))
