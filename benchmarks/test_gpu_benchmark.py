"""The GPU benchmark's code, run on the CPU with its tiny setting (no GPU needed; seconds).

Part of ``make test`` (``benchmarks`` is one of pytest's test paths).
"""

from __future__ import annotations

import json

import gpu_benchmark
import numpy as np
import pytest
import torch


def test_tiny_run_agrees_and_reports_every_configuration(tmp_path):
    out = gpu_benchmark.main(["--tiny", "--json", str(tmp_path / "gpu.json")])
    assert out["agree"] is True
    rows = out["rows"]
    kinds = {(r["precision"], r["memory_format"], r["variant"]) for r in rows}
    for precision in ("fp32", "tf32", "bf16"):
        for fmt in gpu_benchmark.FORMATS:
            assert (precision, fmt, "dcsm auto") in kinds
    for fmt in gpu_benchmark.FORMATS:
        for variant in ("dcsm loop", "dcsm vmap", "peer"):
            assert ("bf16", fmt, variant) in kinds
    assert all(r["images_per_s"] > 0 and r["calls"] >= 1 for r in rows)
    # float32 rows are held to the rounding bound, the others to the precision tolerances
    assert all(r["diff_over_bound"] is not None for r in rows if r["precision"] == "fp32")
    assert all(r["mean_diff"] > 0 for r in rows if r["precision"] == "bf16")
    assert json.loads((tmp_path / "gpu.json").read_text())["best"]["bf16"] > 0
    runs = out["batch_runs"]
    assert [r["segment"] for r in runs] == [False, True]
    assert all(r["images"] == 4 and r["images_per_s"] > 0 for r in runs)
    assert runs[1]["writers"] == 1


def test_wrong_maps_are_caught(monkeypatch):
    real = gpu_benchmark.run_dcsm

    def swapped(case, x, classes, precision, batch):
        maps = real(case, x, classes, precision, batch)
        return maps if batch == "loop" else np.ascontiguousarray(maps[:, ::-1])

    monkeypatch.setattr(gpu_benchmark, "run_dcsm", swapped)
    # the `dcsm batch` runs do not compare maps (the test above covers them): skipped
    out = gpu_benchmark.main(["--tiny", "--precisions", "fp32", "--formats", "contiguous",
                              "--no-peer", "--no-batch-run"])
    assert out["agree"] is False
    assert [r["agrees"] for r in out["rows"]] == [True, False]


def test_a_missing_gpu_is_an_error_not_a_crash():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        gpu_benchmark.main([])
