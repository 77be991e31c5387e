"""The working resolution: what a bound on the long side buys on 12-megapixel photos.

Part 1, classes. Real photos shipped in scikit-image and scikit-learn are enlarged to a phone
camera's 4032 pixels (bicubic: no new detail, only a model's view of objects 8 to 18 times larger
than its training crops) and explained with the default model and preset at several working
sizes (``max_side``). For each, the top class and whether it is the photo's top class at 640
pixels (the size the photo was taken for), and the seconds per photo.

Part 2, the command. ``dcsm explain`` on one 4032 x 3024 photo with every default, in a
subprocess: wall time and peak resident memory (``ru_maxrss``), against the issue's bound of 20 s
and 3 GB on two cores, and the full-resolution memory estimate dcsm would print.

Usage::

    PYTHONPATH=src python benchmarks/working_resolution.py [--sizes 224,320,512,768,1024]
        [--model efficientnet_lite0] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import dcsm
from dcsm.pipeline.presets import DEFAULT_PRESET

PHONE_SIDE = 4032
PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "china.jpg", "flower.jpg")


def photo(name: str) -> np.ndarray:
    """A real photo shipped in scikit-image (``data.<name>``) or scikit-learn (a file name)."""
    if name.endswith(".jpg"):
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)
    from skimage import data

    return getattr(data, name)()


def resized(image: np.ndarray, side: int) -> np.ndarray:
    h, w = image.shape[:2]
    f = side / max(h, w)
    size = (round(w * f), round(h * f))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))


def classes_part(adapter: dcsm.ModelAdapter, sizes: list[int]) -> None:
    print(f"\n## Top class of {PHONE_SIDE}-pixel photos by working size ({adapter.name}, "
          f"{DEFAULT_PRESET} preset, the default)\n")
    header = "| photo | at 640 px | " + " | ".join(f"max_side {s}" for s in sizes) + " |"
    print(header)
    print("|" + "---|" * (2 + len(sizes)))
    agree = {s: 0 for s in sizes}
    seconds = {s: 0.0 for s in sizes}
    for name in PHOTOS:
        image = photo(name)
        ref = dcsm.explain(adapter, resized(image, 640), top_k=1, max_side=None)
        want = ref.candidates[0].name
        big = resized(image, PHONE_SIDE)
        cells = []
        for s in sizes:
            t0 = time.perf_counter()
            got = dcsm.explain(adapter, big, top_k=1, max_side=s).candidates[0]
            seconds[s] += time.perf_counter() - t0
            agree[s] += got.name == want
            cells.append(f"{got.name} {got.score:.2f}" + ("" if got.name == want else " (x)"))
        print(f"| {name} | {want} {ref.candidates[0].score:.2f} | " + " | ".join(cells) + " |")
    n = len(PHOTOS)
    print("| **same top class as at 640 px** | | "
          + " | ".join(f"{agree[s]}/{n}" for s in sizes) + " |")
    print("| **seconds per photo** | | "
          + " | ".join(f"{seconds[s] / n:.2f}" for s in sizes) + " |")


def command_part(threads: int) -> None:
    image = resized(photo("chelsea"), PHONE_SIDE)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "phone.jpg"
        Image.fromarray(image).save(path, quality=92)
        cmd = [sys.executable, "-m", "dcsm", "explain", str(path), "--out", str(Path(tmp) / "o")]
        env = {"OMP_NUM_THREADS": str(threads), "PATH": "/usr/bin:/bin"}
        import os

        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                             os.environ.get("PYTHONPATH", "")])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(f"\n## `dcsm explain` on a {image.shape[1]} x {image.shape[0]} photo, every default\n")
    print(f"- exit {proc.returncode}: {proc.stdout.strip() or proc.stderr.strip()}")
    print(f"- wall time {wall:.1f} s (bound 20 s), peak resident memory {peak:.2f} GiB "
          "(bound 3 GB)")
    full = dcsm.DistinctSaliency(dcsm.load_model(), max_side=None)
    need = full.estimate_memory(image.shape[0], image.shape[1])
    print(f"- `--full-resolution` would need about {need / 2**30:.1f} GiB (dcsm's estimate)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="224,320,512,768,1024")
    parser.add_argument("--model", default=dcsm.DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes.split(",")]
    command_part(args.threads)
    classes_part(dcsm.load_model(args.model), sizes)


if __name__ == "__main__":
    main()
