"""What the tests of ``dcsm batch`` share: the bundled image, small inputs, the subprocess
command and environment, and reading what a run wrote."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from dcsm.batch import manifest

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "dcsm" / "data" / "chelsea_coffee.png"
FAST = ["--scales", "1", "--classes", "tabby,espresso", "--threads", "1", "--no-progress",
        "--writers", "0"]
SIZES = [(96, 64), (64, 64), (80, 48), (72, 72), (64, 96), (100, 60), (56, 56)]


def make_images(folder: Path) -> Path:
    """Seven small crops/resizes of the bundled image, two sharing the stem ``img0``."""
    src = Image.open(BUNDLED).convert("RGB")
    (folder / "sub").mkdir(parents=True)
    for i, (w, h) in enumerate(SIZES[:-1]):
        src.crop((i * 30, 0, i * 30 + 224, 224)).resize((w, h)).save(folder / f"img{i}.png")
    w, h = SIZES[-1]
    src.resize((w, h)).save(folder / "sub" / "img0.jpg", quality=95)
    return folder


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), e.get("PYTHONPATH", "")])
    e["OMP_NUM_THREADS"] = "1"
    return e


def batch_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "dcsm", "batch", *args]


def read_outputs(out: Path) -> dict[str, dict[str, object]]:
    """Every visible output directory: its arrays (npz), summary, and other files' bytes."""
    result = {}
    for d in sorted(p for p in out.iterdir() if not p.name.startswith(".")):
        entry: dict[str, object] = {}
        for f in sorted(d.iterdir()):
            if f.suffix == ".npz":
                with np.load(f) as npz:
                    entry[f.name] = {k: npz[k] for k in npz.files}
            elif f.name == "summary.json":
                entry[f.name] = json.loads(f.read_text())
            else:
                entry[f.name] = f.read_bytes()
        result[d.name] = entry
    return result


def assert_same_outputs(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert sorted(a[name]) == sorted(b[name]), name
        for f, va in a[name].items():
            vb = b[name][f]
            if isinstance(va, dict) and f.endswith(".npz"):
                assert sorted(va) == sorted(vb)
                for k in va:
                    assert va[k].dtype == vb[k].dtype and np.array_equal(va[k], vb[k]), (name, k)
            else:
                assert va == vb, (name, f)


def records(out: Path) -> list[dict]:
    recs = []
    for path in sorted((out / manifest.MANIFEST_DIR).glob("rank-*.jsonl")):
        recs += list(manifest.read_records(path))
    return recs


