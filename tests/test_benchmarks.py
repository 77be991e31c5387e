"""The speed benchmarks still run and still compare like with like; the profile adds up.

Each benchmark checks that every variant it times gives the library's maps and exits 1 when one
does not; these tests run them on their smallest settings (one timed call, no timing asserted)
so that a change to the library's defaults cannot silently leave a benchmark timing something
else (``make bench`` once compared the tuned default with a paper-settings reference loop).
The GPU benchmark's own tests (``benchmarks/test_gpu_benchmark.py``) run its tiny setting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args],
                          capture_output=True, text=True, env=env, timeout=600, check=False)


def test_bench_batched_variants_give_the_librarys_maps():
    proc = _run("bench_batched.py", "--threads", "1", "--repeats", "1", "--no-memory",
                "--variants", "dcsm (default),reference loop", "--max-side", "224")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "all maps agree with the library within 1e-05: yes" in proc.stdout
    assert "scales [1.0, 1.2, 1.4, 1.6]" in proc.stdout  # the paper's settings
    assert "chelsea_coffee.png 224x112" in proc.stdout  # shrunk by --max-side


def test_throughput_variants_agree_and_costs_add_up(tmp_path):
    out = tmp_path / "tp.json"
    proc = _run("throughput.py", "--threads", "1", "--models", "squeezenet1_1", "--repeats",
                "1", "--budget", "1", "--batch-sizes", "2", "--size", "96", "--no-runner",
                "--variants", "dcsm,peer: repeated + autograd.grad", "--json", str(out),
                "--matmul-repeats", "0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["agree"] is True
    model = result["models"]["squeezenet1_1"]
    costs = model["costs"]
    k = 3
    # the cost model: dcsm = forward - unused classifier rows + K truncated backwards without
    # the classifier; the strongest peer = K forwards + K truncated backwards
    assert costs["dcsm"] == pytest.approx(
        costs["forward"] - costs["classifier rows not computed"]
        + k * (costs["truncated backward per class"] - costs["classifier backward per class"]))
    assert costs["peer: repeated + autograd.grad"] == pytest.approx(
        k * (costs["forward"] + costs["truncated backward per class"]))
    assert 0 < costs["classifier rows not computed"] < costs["forward"]
    assert all(row["agrees"] for row in model["rows"].values())
    assert model["batches"] and all(b["agrees"] for b in model["batches"].values())


def test_profile_stages_cover_the_time(tmp_path):
    out = tmp_path / "prof.json"
    proc = _run("profile_explain.py", "--models", "squeezenet1_1", "--size", "96", "--calls",
                "1", "--json", str(out))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [model] = json.loads(out.read_text())["models"]
    shares = model["shares"]
    assert sum(shares.values()) == pytest.approx(1.0)
    convs = (shares["convolutions and matrix products, forward"]
             + shares["convolutions and matrix products, backward"])
    assert 0.2 < convs < 1.0 and shares["max pooling"] > 0
    assert shares["batch normalisation"] == 0  # SqueezeNet has none
