"""``dcsm batch --batch-size``: images grouped by working-resolution size, one tensor batch per
group, the same outputs as one image at a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dcsm import cli
from dcsm.batch.loader import Loaded
from dcsm.batch.runner import batches

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "dcsm" / "data" / "chelsea_coffee.png"
FAST = ["--scales", "1,1.2", "--threads", "1", "--no-progress", "--workers", "0", "--no-pictures",
        "--writers", "0"]


def _loaded(index: int, h: int, w: int) -> Loaded:
    return Loaded(index, np.zeros((h, w, 3), np.uint8), None)


def test_grouping_by_working_size():
    samples = [_loaded(0, 60, 80), _loaded(1, 70, 70), _loaded(2, 60, 80), Loaded(3, None, "x"),
               _loaded(4, 1200, 1600), _loaded(5, 600, 800), _loaded(6, 60, 80)]
    groups = [[s.index for s in g] for g in batches(samples, 3, max_side=512)]
    # 1200x1600 and 600x800 share the working size 384x512; unreadable ones go alone
    assert groups == [[3], [0, 2, 6], [1], [4, 5]]
    assert [[s.index for s in g] for g in batches(samples, 1, 512)] == [[i] for i in range(7)]
    held = [[s.index for s in g] for g in batches(samples, 3, 512, hold=1)]
    assert sorted(i for g in held for i in g) == list(range(7)) and max(map(len, held)) <= 3


def test_batched_outputs_equal_one_at_a_time(tmp_path, capsys):
    src = Image.open(BUNDLED).convert("RGB")
    folder = tmp_path / "in"
    folder.mkdir()
    sizes = [(80, 64), (80, 64), (80, 64), (72, 72), (72, 72), (60, 100)]
    for i, (w, h) in enumerate(sizes):
        src.crop((i * 40, 0, i * 40 + 224, 224)).resize((w, h)).save(folder / f"im{i}.png")
    (folder / "broken.png").write_bytes(BUNDLED.read_bytes()[:200])
    outs = {}
    for size in (1, 4):
        out = tmp_path / f"out{size}"
        code = cli.main(["batch", str(folder), "--out", str(out), "--batch-size", str(size),
                         *FAST])
        printed = capsys.readouterr()
        assert code == 1, printed.err  # the broken file fails, the rest is done
        assert "6 done, 0 already done, 1 failed" in printed.out
        outs[size] = out
    for i in range(len(sizes)):
        a, b = outs[1] / f"im{i}", outs[4] / f"im{i}"
        sa = json.loads((a / "summary.json").read_text())
        sb = json.loads((b / "summary.json").read_text())
        assert [c["name"] for c in sa["candidates"]] == [c["name"] for c in sb["candidates"]]
        assert [c["name"] for c in sa["contrast_classes"]] == \
            [c["name"] for c in sb["contrast_classes"]]
        np.testing.assert_allclose([c["score"] for c in sa["candidates"]],
                                   [c["score"] for c in sb["candidates"]], atol=1e-5)
        with np.load(a / "maps.npz") as ma, np.load(b / "maps.npz") as mb:
            assert ma.files == mb.files
            for k in ma.files:
                assert ma[k].shape == (sizes[i][1], sizes[i][0])
                np.testing.assert_allclose(ma[k], mb[k], atol=1e-5)
                assert ma[k].max() > 0
