"""A seeded fuzz run over ``dcsm explain`` and ``dcsm segment``: whatever the input, no traceback.

Random bytes named .jpg/.png, truncated files, headers claiming more pixels than dcsm's limit
(or than Pillow's), a JPEG whose data is far too short for the size it claims, every Pillow
image mode, extreme sizes and odd option values (negative, nan, inf, huge, empty lists) go
through the command line with a tiny checkpoint model at ``--scales 1 --max-side 64``. Every
run must end with exit status 0, or 2 and exactly one stderr line ``dcsm: error: ...`` (or
argparse's ``dcsm CMD: error: ...``); the only other stderr lines allowed are
``dcsm: warning: ...``. Nothing half-written may be left in
``--out``: no temporary names, and every image folder complete.

The cases come from a fixed seed, so a failure names a case that reproduces; set
``DCSM_FUZZ_SEED`` and ``DCSM_FUZZ_CASES`` to explore further.
"""

from __future__ import annotations

import io
import os
import random
import re
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcsm import cli

SEED = int(os.environ.get("DCSM_FUZZ_SEED", "12"))
RANDOM_CASES = int(os.environ.get("DCSM_FUZZ_CASES", "60"))
ERROR = re.compile(r"^dcsm(?: [a-z]+)?: error: \S")
WARNING = re.compile(r"^dcsm: warning: \S")
# a space, a slash, a name Windows reserves, case twins, a file dcsm writes, a path, a NUL,
# mathtext that matplotlib cannot parse
CLASSES = ["cat", "tiger cat", "a/b", "CON", "Cat", "figure", "../../x", "a\x00b", "$\\frac{$"]
# image file names that are ".", "..", hidden, a device, control characters, case twins
ODD_NAMES = ["..png", ".png", "....png", "CON.png", "aux.tar.png", "a\x01b.png", "e\x1b[2J.png",
             "Cat.png", "cat.png", "dot..png"]

# Pillow mode -> a file format that stores it as such (La, RGBa and HSV: none does)
MODES = {"1": "PNG", "L": "PNG", "P": "PNG", "P+transparency": "PNG", "RGB": "JPEG",
         "RGBA": "PNG", "CMYK": "JPEG", "CMYK tiff": "TIFF", "I": "TIFF", "I;16": "PNG",
         "I;16B": "TIFF", "F": "TIFF", "F constant": "TIFF", "LA": "PNG", "PA": "TIFF",
         "YCbCr": "TIFF", "LAB": "TIFF", "RGBX": "TIFF"}
SUFFIX = {"PNG": "png", "JPEG": "jpg", "TIFF": "tif"}
SIZES = [(1, 1), (8, 8), (1, 5000), (5000, 8), (8, 5000), (7, 9), (9, 7), (300, 33)]
BROKEN = ["random.jpg", "random.png", "empty.png", "truncated.png", "truncated.jpg", "missing",
          "directory", "text.png", "bomb.png", "hugebomb.png", "claim.jpg", "claimprog.jpg"]

ODD = {
    "--scales": ["-1", "nan", "inf", "1e308", "0", "", ",", "1,,1.2", "0.001", "9", "1,1"],
    "--top-k": ["-1", "0", "1" * 40, "1", "nan", "1.5"],
    "--threshold": ["nan", "inf", "-inf", "-1", "2", "0", "1", "1e-300"],
    "--alpha": ["0", "-1", "nan", "1e308", "1e-308"],
    "--min-contrast": ["0", "1", "99999999", "-3"],
    "--max-side": ["31", "32", "1" * 30, "-64", "nan"],
    "--layers": ["", ",", "nope", "conv3_1", "conv3_1,conv3_1", "features.0"],
    "--classes": ["", ",", "99999", "-1", "cat,cat", "CON,a/b", "tiger cat", "0,1,2,3", "dog"],
    "--preset": ["released", "tuned", "nope"],
    "--method": ["simonyan", "guided", "gradcam"],
    "--gate": ["-1", "nan", "inf", "5", "0", "0.5", "1e-308"],
    "--precision": ["float16", "bfloat16", "float64"],
    "--upsample": ["upsample_first", "x"],
    "--backprop": ["plain"],
    "--device": ["meta", "nope", "cuda:99"],
    "--weights": ["random"],
    "--max-pixels": ["0", "-1", "1", "64", "4000", "1e3", "nan", "100000000"],
}
SEGMENT_ODD = {
    "--crf-iterations": ["-1", "0", "1", "1" * 12, "nan"],
    "--crf-bg-power": ["0", "-1", "nan", "1e308", "1e-308"],
    "--crf-background": ["otsu", "constant", "power", "mean"],
    "--crf-bg-threshold": ["0", "1", "0.999", "nan", "-0.2"],
    "--crf-sharpness": ["0", "-1", "nan", "1e308", "1e-308", "1"],
    "--crf-gaussian-sxy": ["0", "1e308", "1e-300"],
    "--crf-bilateral-srgb": ["1e-300", "1e308", "-5"],
    "--crf-gaussian-compat": ["0", "1e308"],
    "--grabcut-fg-quantile": ["0", "1", "0.5", "0.99999"],
    "--grabcut-bg-quantile": ["0.96", "0.00001"],
    "--grabcut-iterations": ["0", "1", "1" * 9],
    "--segmenter": ["grabcut", "nope"],
}
FLAGS = ["--no-subtract", "--full-resolution", "--per-layer"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory, tiny):
    """A checkpoint of a very narrow small_vgg: a real ``checkpoint:`` model, fast to run."""
    return tiny.narrow_checkpoint(tmp_path_factory.mktemp("fuzz-model"), list(CLASSES))


# ----------------------------------------------------------------------------- the inputs
def pixels(rng: random.Random, height: int, width: int) -> np.ndarray:
    return np.random.default_rng(rng.getrandbits(32)).integers(
        0, 256, (height, width, 3), dtype=np.uint8)


def mode_image(rng: random.Random, mode: str, folder: Path, name: str) -> Path:
    """A small image stored in Pillow mode ``mode``."""
    width, height = rng.choice([(40, 30), (8, 8), (16, 70), (90, 12)])
    rgb = Image.fromarray(pixels(rng, height, width))
    wide = np.random.default_rng(rng.getrandbits(32)).integers(0, 60000, (height, width))
    if mode == "P+transparency":
        im = rgb.convert("P")
        im.info["transparency"] = 0
    elif mode == "PA":
        im = rgb.convert("P").convert("PA")
    elif mode == "I":
        im = Image.fromarray(wide.astype(np.int32), mode="I")
    elif mode in ("I;16", "I;16B"):
        order = "<u2" if mode == "I;16" else ">u2"
        im = Image.frombytes(mode, (width, height), wide.astype(order).tobytes())
    elif mode.startswith("F"):
        values = np.full((height, width), 5.0) if mode == "F constant" else wide * 1e-3
        im = Image.fromarray(values.astype(np.float32), mode="F")
    else:
        im = rgb.convert(mode.split()[0])
    fmt = MODES[mode]
    path = folder / f"{name}.{SUFFIX[fmt]}"
    im.save(path, format=fmt)
    with Image.open(path) as saved:  # the file holds the mode meant (JPEG decodes to RGB/CMYK)
        assert saved.mode == {"P+transparency": "P", "I;16": "I;16", "RGBX": "RGB",
                              "CMYK tiff": "CMYK"}.get(mode, mode.split()[0]) or fmt == "JPEG"
    return path


def broken_input(rng: random.Random, kind: str, folder: Path, name: str) -> Path:
    """A file no image reader should accept (or no file at all)."""
    if kind == "missing":
        return folder / f"{name}-missing.png"
    if kind == "directory":
        path = folder / f"{name}.png"
        path.mkdir()
        return path
    stem, suffix = kind.split(".")
    refused = stem in ("bomb", "hugebomb", "claim", "claimprog")  # named so: always exit 2
    path = folder / (f"{name}-{stem}.{suffix}" if refused else f"{name}.{suffix}")
    if stem == "random":
        path.write_bytes(rng.randbytes(rng.randint(1, 3000)))
    elif stem == "empty":
        path.write_bytes(b"")
    elif stem == "text":
        path.write_text("not an image\n")
    elif stem in ("bomb", "hugebomb"):  # a valid header (over dcsm's or Pillow's limit)
        side = rng.choice([7100, 9000, 12000]) if stem == "bomb" else 20000
        ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr)
                         + png_chunk(b"IDAT", zlib.compress(b"\0" * 99)) + png_chunk(b"IEND", b""))
    elif stem.startswith("claim"):  # a real JPEG's header rewritten to claim a large size
        buffer = io.BytesIO()
        Image.fromarray(pixels(rng, 48, 48)).save(buffer, format="JPEG",
                                                  progressive=stem == "claimprog")
        data = bytearray(buffer.getvalue())
        frame = data.index(b"\xff\xc2" if stem == "claimprog" else b"\xff\xc0")
        struct.pack_into(">HH", data, frame + 5, rng.randint(3000, 7000), rng.randint(2000, 7000))
        path.write_bytes(bytes(data))
    else:  # truncated
        buffer = io.BytesIO()
        Image.fromarray(pixels(rng, 40, 50)).save(buffer, format="PNG" if suffix == "png"
                                                  else "JPEG")
        data = buffer.getvalue()
        path.write_bytes(data[:rng.randint(1, len(data) - 1)])
    return path


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def sized_image(rng: random.Random, size: tuple[int, int], folder: Path, name: str) -> Path:
    width, height = size
    path = folder / f"{name}-{width}x{height}.png"
    Image.fromarray(pixels(rng, height, width)).save(path)
    return path


def any_input(rng: random.Random, folder: Path, name: str) -> Path:
    kind = rng.choice(["mode", "mode", "size", "broken"])
    if kind == "mode":
        return mode_image(rng, rng.choice(list(MODES)), folder, name)
    if kind == "size":
        return sized_image(rng, rng.choice(SIZES), folder, name)
    return broken_input(rng, rng.choice(BROKEN), folder, name)


def odd_options(rng: random.Random, command: str, count: int) -> list[str]:
    pool = dict(ODD) | (SEGMENT_ODD if command == "segment" else {})
    options: list[str] = []
    for _ in range(count):
        name = rng.choice(list(pool))
        options += [name, rng.choice(pool[name])]
    if rng.random() < 0.15:
        options.append(rng.choice(FLAGS))
    return options


def cases(model: str, folder: Path) -> list[list[str]]:
    """Every mode, every size and every kind of broken file once, then random mixtures."""
    rng = random.Random(SEED)
    inputs: list[list[Path]] = []
    inputs += [[mode_image(rng, mode, folder, f"mode{i}")] for i, mode in enumerate(MODES)]
    inputs += [[sized_image(rng, size, folder, f"size{i}")] for i, size in enumerate(SIZES)]
    inputs += [[broken_input(rng, kind, folder, f"broken{i}")] for i, kind in enumerate(BROKEN)]
    inputs += [[any_input(rng, folder, f"any{i}-{k}") for k in range(rng.choice([1, 1, 2]))]
               for i in range(RANDOM_CASES)]
    made = []
    for i, images in enumerate(inputs):
        command = rng.choice(["explain", "explain", "segment"])
        options = odd_options(rng, command, rng.choice([0, 0, 1, 1, 2, 3]))
        made.append([command, *map(str, images), "--out", str(folder / f"out{i}"), "--model",
                     model, "--scales", "1", "--max-side", "64", *options])
    return made


# ----------------------------------------------------------------------------- the checks
def half_written(out: Path, command: str, foreign: tuple[str, ...] = ()) -> list[str]:
    """Temporary names, and image folders without every file, under ``out`` (``foreign``: the
    user's own folders there)."""
    if not out.exists():
        return []
    found = []
    for entry in out.iterdir():
        if ".partial-" in entry.name or ".trash-" in entry.name:
            found.append(f"temporary {entry.name}")
        elif entry.is_dir() and entry.name not in foreign:
            needed = ["summary.json", "maps.npz", "figure.png"]
            if command == "segment":
                needed += ["labels.png", "masks.npz", "segmentation.png"]
            missing = [n for n in needed if not (entry / n).is_file()]
            if missing:
                found.append(f"{entry.name} lacks {', '.join(missing)}")
    return found


def tree(root: Path, skip: Path | None = None) -> dict[str, bytes | None]:
    """Every path under ``root`` but ``skip`` and what it holds (None for a folder)."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*")) if skip is None or not p.is_relative_to(skip)}


def check(args: list[str], capsys, foreign: tuple[str, ...] = ()) -> tuple[int, list[str]]:
    """Run one case; the exit status and the stderr lines, every rule asserted (``foreign``:
    the user's own folders in ``--out``)."""
    with warnings.catch_warnings():  # Pillow's decompression-bomb warning must not leak
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        code = cli.main(args)  # an exception escaping main fails the test with its traceback
    _, err = capsys.readouterr()
    lines = err.splitlines()
    errors = [line for line in lines if ERROR.match(line)]
    others = [line for line in lines if not ERROR.match(line) and not WARNING.match(line)
              and not line.startswith("dcsm: full resolution ")]
    shown = " ".join(args)
    assert code in (0, 2), f"exit {code}: {shown}\n{err}"
    assert others == [], f"unexpected stderr: {shown}\n{err}"
    assert len(errors) == (1 if code == 2 else 0), f"exit {code}: {shown}\n{err}"
    out = Path(args[args.index("--out") + 1])
    assert half_written(out, args[0], foreign) == [], shown
    return code, lines


def test_fuzz_explain_and_segment(tiny_model, tmp_path, capsys):
    outcomes = {0: 0, 2: 0}
    for args in cases(tiny_model, tmp_path):
        code, _ = check(args, capsys)
        outcomes[code] += 1
        if any(re.search(r"-(bomb|hugebomb|claim|claimprog)\.", a) for a in args):
            assert code == 2, f"a bomb or a JPEG too short for its size was read: {args}"
    # the seed reaches both outcomes often: the fuzz is not all rejections
    assert outcomes[0] >= 10 and outcomes[2] >= 10, outcomes


def test_fuzz_with_the_default_model(tmp_path, capsys):
    """The shipped model through the odd sizes and modes that pass (softmax, top-k)."""
    rng = random.Random(SEED)
    images = [sized_image(rng, (5000, 8), tmp_path, "wide"),
              mode_image(rng, "I;16", tmp_path, "deep"),
              mode_image(rng, "PA", tmp_path, "alpha")]
    for i, image in enumerate(images):
        extra = [[], ["--classes", "0,999", "--preset", "released"], ["--top-k", "3"]][i]
        code, _ = check(["explain", str(image), "--out", str(tmp_path / f"o{i}"), "--scales",
                         "1", "--max-side", "64", *extra], capsys)
        assert code == 0


@pytest.mark.parametrize("command", ["explain", "segment"])
def test_fuzz_odd_names_and_broken_models(tiny_model, tmp_path, capsys, command):
    """Image names that are ".", "..", devices or control characters, into an ``--out`` that
    holds the user's own files, and a folder of the user's in the way, and models whose scores
    are NaN or infinite: exit 0 or 2 with one line, nothing half-written, nothing changed
    outside ``--out`` and none of the user's files in it."""
    from dcsm.pipeline.adapters.checkpoint import model_record, save_checkpoint
    from dcsm.pipeline.adapters.fcn import build_backbone

    rng = random.Random(SEED)
    images = tmp_path / "images"
    images.mkdir()
    paths = [str(sized_image(rng, (30, 20), images, "x").rename(images / name))
             for name in ODD_NAMES]
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("the user's\n")
    (out / "own").mkdir()
    (out / "own" / "data.csv").write_text("1,2\n")
    mine = tree(out)
    outside = tree(tmp_path, skip=out)
    code, _ = check([command, *paths, "--out", str(out), "--model", tiny_model, "--scales", "1",
                     "--max-side", "64"], capsys, foreign=("own",))
    assert code == 0
    made = sorted(p.name for p in out.iterdir() if p.name not in ("notes.txt", "own"))
    assert len({m.casefold() for m in made}) == len(ODD_NAMES), made
    # a folder of the user's where an output would go: refused, nothing changed
    (out / "CON_").rename(out / "CON_.old")
    (out / "CON_").mkdir()
    (out / "CON_" / "draft.txt").write_text("mine\n")
    before = tree(out)
    code, lines = check([command, paths[3], "--out", str(out), "--model", tiny_model,
                         "--scales", "1", "--max-side", "64"], capsys, foreign=("own", "CON_"))
    assert code == 2 and "not an earlier dcsm output" in lines[-1]
    assert tree(out) == before
    for value in (float("nan"), float("inf"), float("-inf")):
        torch.manual_seed(0)
        backbone = build_backbone("small_vgg", len(CLASSES), config={
            "widths": [4, 4, 6, 6, 8], "convs": [1, 1, 1, 1, 1], "fc": 8})
        with torch.no_grad():
            next(iter(backbone.model.parameters())).fill_(value)
        broken = tmp_path / f"broken{value}.pt"
        save_checkpoint(broken, model_record(backbone, CLASSES, history=[{"epoch": 1}]))
        fresh = tmp_path / f"out-{value}"
        code, lines = check([command, paths[0], "--out", str(fresh), "--model",
                             f"checkpoint:{broken}", "--scales", "1", "--max-side", "64"],
                            capsys)
        assert code == 2 and "NaN or infinite" in lines[-1], lines
        assert not fresh.exists() or list(fresh.iterdir()) == []
    after = tree(out)
    assert all(after.get(k, "gone") == v for k, v in mine.items())
    now = tree(tmp_path, skip=out)
    assert all(now.get(k, "gone") == v for k, v in outside.items())
    assert all(k.startswith(("broken", "out-")) for k in set(now) - set(outside))  # the test's
    assert not any(".partial-" in p.name or ".trash-" in p.name for p in tmp_path.rglob("*"))
