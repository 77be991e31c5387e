"""Tests for dcsm.io: image loading in every Pillow mode, errors, atomic output, file names."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image, ImageFile

from dcsm.errors import DcsmError
from dcsm.io import (
    atomic_dir,
    load_image,
    safe_filename,
    save_figure,
    save_json,
    save_npz,
    save_png,
    write_atomic,
)

SIZE = (10, 9)  # Pillow size: width 10, height 9


def _save(im: Image.Image, path: Path, **params: object) -> Path:
    im.save(path, **params)
    return path


def _assert_one_line_naming(exc: pytest.ExceptionInfo[DcsmError], path: Path) -> None:
    message = str(exc.value)
    assert "\n" not in message and "\r" not in message
    assert message.strip() == message and message
    assert path.name in message


# ------------------------------------------------------------------ modes


def test_rgb_values_kept(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(9, 10, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels, "RGB"), tmp_path / "rgb.png")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (9, 10, 3)
    np.testing.assert_array_equal(out, pixels)


def test_accepts_str_path(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", SIZE, (1, 2, 3)), tmp_path / "s.png")
    assert tuple(load_image(str(path))[0, 0]) == (1, 2, 3)


def test_mode_l(tmp_path: Path) -> None:
    path = _save(Image.new("L", SIZE, 100), tmp_path / "grey.png")
    out = load_image(path)
    assert out.shape == (9, 10, 3)
    assert (out == 100).all()


def test_mode_1(tmp_path: Path) -> None:
    im = Image.new("1", SIZE, 0)
    im.putpixel((3, 4), 1)
    path = _save(im, tmp_path / "bits.png")
    out = load_image(path)
    assert tuple(out[4, 3]) == (255, 255, 255)
    assert tuple(out[0, 0]) == (0, 0, 0)
    assert int(out.sum()) == 3 * 255


def test_mode_la(tmp_path: Path) -> None:
    im = Image.new("LA", SIZE, (100, 255))
    im.putpixel((0, 0), (100, 0))
    im.putpixel((1, 0), (0, 128))
    path = _save(im, tmp_path / "la.png")
    out = load_image(path)
    assert tuple(out[5, 5]) == (100, 100, 100)
    assert tuple(out[0, 0]) == (255, 255, 255)
    expected = round(255 * (1 - 128 / 255))  # black at alpha 128 over white
    assert tuple(out[0, 1]) == (expected,) * 3


def test_rgba_transparent_is_white(tmp_path: Path) -> None:
    im = Image.new("RGBA", SIZE, (200, 0, 0, 0))
    im.putpixel((2, 2), (10, 20, 30, 255))
    path = _save(im, tmp_path / "rgba.png")
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[2, 2]) == (10, 20, 30)


def test_rgba_half_alpha_blends_with_white(tmp_path: Path) -> None:
    colour = np.array([200, 0, 60], dtype=np.float64)
    path = _save(Image.new("RGBA", SIZE, (200, 0, 60, 128)), tmp_path / "half.png")
    out = load_image(path)
    a = 128 / 255
    expected = np.rint(colour * a + 255 * (1 - a)).astype(np.uint8)
    assert tuple(expected) == (227, 127, 157)
    np.testing.assert_array_equal(out, np.broadcast_to(expected, (9, 10, 3)))


def test_palette_maps_to_colours(tmp_path: Path) -> None:
    im = Image.new("P", SIZE, 0)
    palette = [0, 0, 0] * 256
    palette[3:6] = [10, 200, 30]
    palette[6:9] = [250, 5, 7]
    im.putpalette(palette)
    im.paste(1, (0, 0, 5, 9))
    im.paste(2, (5, 0, 10, 9))
    path = _save(im, tmp_path / "pal.png")
    out = load_image(path)
    assert (out[:, :5] == [10, 200, 30]).all()
    assert (out[:, 5:] == [250, 5, 7]).all()


def test_palette_with_transparency(tmp_path: Path) -> None:
    im = Image.new("P", SIZE, 1)
    palette = [0, 0, 0] * 256
    palette[0:3] = [1, 2, 3]
    palette[3:6] = [40, 50, 60]
    im.putpalette(palette)
    im.paste(0, (0, 0, 4, 9))
    path = _save(im, tmp_path / "paltr.png", transparency=0)
    out = load_image(path)
    assert (out[:, :4] == 255).all()
    assert (out[:, 4:] == [40, 50, 60]).all()


def test_gif_palette_transparency_first_frame(tmp_path: Path) -> None:
    frame1 = Image.new("P", SIZE, 1)
    frame1.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (3 * 253))
    frame1.paste(0, (0, 0, 2, 9))
    frame2 = Image.new("P", SIZE, 2)
    frame2.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * (3 * 253))
    path = tmp_path / "anim.gif"
    frame1.save(path, save_all=True, append_images=[frame2], transparency=0, duration=50)
    out = load_image(path)
    assert (out[:, :2] == 255).all()  # transparent index -> white
    assert (out[:, 2:] == [255, 0, 0]).all()  # first frame, not the blue second one


def test_multipage_tiff_first_frame(tmp_path: Path) -> None:
    first = Image.new("RGB", SIZE, (9, 8, 7))
    second = Image.new("RGB", SIZE, (70, 80, 90))
    path = tmp_path / "pages.tiff"
    first.save(path, save_all=True, append_images=[second])
    assert (load_image(path) == [9, 8, 7]).all()


def test_mode_i16_ramp_rescales(tmp_path: Path) -> None:
    ramp = np.linspace(1000, 41000, 10).astype(np.uint16)
    values = np.tile(ramp, (9, 1))
    im = Image.fromarray(values)
    assert im.mode == "I;16"
    path = _save(im, tmp_path / "ramp16.png")
    out = load_image(path)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    row = out[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    expected = np.rint((ramp.astype(float) - 1000) / 40000 * 255).astype(int)
    np.testing.assert_array_equal(row, expected)
    assert (np.diff(row) > 0).all()


def test_mode_i_rescales(tmp_path: Path) -> None:
    values = np.full((9, 10), -5, dtype=np.int32)
    values[0, 0] = 99_995
    values[1, 1] = 24_995  # a quarter of the way from -5 to 99995
    im = Image.fromarray(values, "I")
    path = _save(im, tmp_path / "int32.tiff")
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (64, 64, 64)  # round(0.25 * 255) = round(63.75)
    assert tuple(out[5, 5]) == (0, 0, 0)


def test_mode_f_rescales(tmp_path: Path) -> None:
    values = np.zeros((9, 10), dtype=np.float32)
    values[:, :5] = -1.0
    values[:, 5:] = 3.0
    values[0, 0] = 0.0  # a quarter of the way up
    path = _save(Image.fromarray(values, "F"), tmp_path / "float.tiff")
    out = load_image(path)
    assert (out[:, 1:5] == 0).all()
    assert (out[:, 5:] == 255).all()
    assert tuple(out[0, 0]) == (64,) * 3  # round(0.25 * 255) = 64


def test_constant_wide_image_is_black(tmp_path: Path) -> None:
    values = np.full((9, 10), 30000, dtype=np.uint16)
    path = _save(Image.fromarray(values), tmp_path / "flat16.png")
    out = load_image(path)
    assert (out == 0).all()


def test_mode_cmyk(tmp_path: Path) -> None:
    im = Image.new("CMYK", SIZE, (0, 255, 255, 0))  # pure red ink mix
    im.putpixel((1, 1), (0, 0, 0, 255))  # full black
    path = _save(im, tmp_path / "cmyk.tiff")
    out = load_image(path)
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[1, 1]) == (0, 0, 0)


def test_mode_ycbcr(tmp_path: Path) -> None:
    # Neutral chroma (128, 128) is grey: RGB equals luma.
    im = Image.new("YCbCr", SIZE, (90, 128, 128))
    path = _save(im, tmp_path / "ycc.tiff")
    out = load_image(path)
    assert (np.abs(out.astype(int) - 90) <= 1).all()
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_exif_orientation_applied(tmp_path: Path) -> None:
    pixels = np.zeros((8, 12, 3), dtype=np.uint8)  # stored 12 wide, 8 high
    pixels[0, 0] = (255, 0, 0)  # stored top-left is red
    im = Image.fromarray(pixels, "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.png"
    im.save(path, exif=exif)
    out = load_image(path)
    assert out.shape == (12, 8, 3)
    assert tuple(out[0, -1]) == (255, 0, 0)  # top-left moved to top-right
    assert int(out.sum()) == 255


# ------------------------------------------------------------------ errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothere.png"
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)
    assert "does not exist" in str(exc.value)


def test_directory(tmp_path: Path) -> None:
    path = tmp_path / "folder.png"
    path.mkdir()
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)
    assert "directory" in str(exc.value)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is\nnot an image\n", encoding="utf-8")
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)


def test_truncated_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels, "RGB"), tmp_path / "cut.png")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)


def test_truncated_jpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = _save(Image.fromarray(pixels, "RGB"), tmp_path / "cut.jpg", quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)


def test_corrupt_png_data(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (32, 32), (5, 5, 5)), tmp_path / "bad.png")
    data = bytearray(path.read_bytes())
    start = data.index(b"IDAT") + 4
    data[start : start + 12] = b"\xff" * 12
    path.write_bytes(bytes(data))
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)


def test_decompression_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dcsm's pixel limit decides, not Pillow's (tests/io/test_limits.py has the rest)."""
    path = _save(Image.new("RGB", (64, 64)), tmp_path / "bomb.png")
    with pytest.raises(DcsmError) as exc:
        load_image(path, max_pixels=100)
    _assert_one_line_naming(exc, path)
    assert "is 64x64 pixels (4,096), more than dcsm's limit of 100" in str(exc.value)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert load_image(path).shape == (64, 64, 3)


@pytest.mark.parametrize(("width", "height"), [(5, 3), (7, 20), (20, 7)])
def test_too_small(tmp_path: Path, width: int, height: int) -> None:
    path = _save(Image.new("RGB", (width, height)), tmp_path / "x.png")
    with pytest.raises(DcsmError) as exc:
        load_image(path)
    _assert_one_line_naming(exc, path)
    assert f"is {width}x{height} pixels; at least 8x8 is needed" in str(exc.value)


def test_exactly_minimum_size(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (8, 8), (3, 4, 5)), tmp_path / "min.png")
    image = load_image(path)
    assert image.dtype == np.uint8
    np.testing.assert_array_equal(image, np.broadcast_to(np.array([3, 4, 5], np.uint8),
                                                         (8, 8, 3)))


# ------------------------------------------------------------------ atomic_dir


def test_atomic_dir_success_creates(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out"
    with atomic_dir(final) as work:
        assert work.parent == final.parent
        assert work.name.startswith(".out.partial-")
        assert work.is_dir() and not any(work.iterdir())
        assert not final.exists()
        (work / "a.txt").write_text("A", encoding="utf-8")
    assert final.is_dir()
    assert (final / "a.txt").read_text(encoding="utf-8") == "A"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out"]


def test_atomic_dir_replaces_existing_fully(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    (final / "nested").mkdir()
    (final / "nested" / "deep.txt").write_text("deep", encoding="utf-8")
    (final / "keep.txt").write_text("old keep", encoding="utf-8")
    with atomic_dir(final) as work:
        (work / "keep.txt").write_text("new keep", encoding="utf-8")
        (work / "new.txt").write_text("new", encoding="utf-8")
        assert (final / "old.txt").exists()  # untouched until the block ends
    assert sorted(p.name for p in final.iterdir()) == ["keep.txt", "new.txt"]
    assert (final / "keep.txt").read_text(encoding="utf-8") == "new keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_exception_leaves_nothing(tmp_path: Path) -> None:
    final = tmp_path / "out"
    with pytest.raises(RuntimeError, match="boom"), atomic_dir(final) as work:
        (work / "half.txt").write_text("half", encoding="utf-8")
        raise RuntimeError("boom")
    assert not final.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_exception_keeps_previous(tmp_path: Path) -> None:
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old", encoding="utf-8")
    with pytest.raises(KeyboardInterrupt), atomic_dir(final) as work:
        (work / "new.txt").write_text("new", encoding="utf-8")
        raise KeyboardInterrupt
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------ write_atomic & savers


def test_write_atomic_same_suffix_and_replace(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    seen: list[Path] = []

    def writer(tmp: Path) -> None:
        seen.append(tmp)
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(".")
        assert tmp.suffix == ".bin"
        tmp.write_bytes(b"new")

    write_atomic(target, writer)
    assert target.read_bytes() == b"new"
    assert not seen[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_write_atomic_failing_writer_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "data.npz"

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise ValueError("writer failed")

    with pytest.raises(ValueError, match="writer failed"):
        write_atomic(target, writer)
    assert list(tmp_path.iterdir()) == []


def test_write_atomic_failing_writer_keeps_old(tmp_path: Path) -> None:
    target = tmp_path / "data.txt"
    target.write_text("old", encoding="utf-8")

    def writer(tmp: Path) -> None:
        tmp.write_text("partial", encoding="utf-8")
        raise OSError("disk full")

    with pytest.raises(DcsmError) as exc:
        write_atomic(target, writer)
    _assert_one_line_naming(exc, target)
    assert target.read_text(encoding="utf-8") == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt"]


def test_save_npz_round_trips_odd_keys(tmp_path: Path) -> None:
    arrays = {
        "tiger cat": np.arange(12, dtype=np.float32).reshape(3, 4),
        "cat, dog": np.array([True, False]),
        "file": np.eye(2),
        "naïve": np.array(3, dtype=np.int64),
    }
    path = tmp_path / "maps.npz"
    save_npz(path, arrays)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["maps.npz"]
    with np.load(path) as data:
        assert sorted(data.files) == sorted(arrays)
        for key, value in arrays.items():
            assert data[key].dtype == value.dtype
            np.testing.assert_array_equal(data[key], value)


def test_save_npz_rejects_object_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_npz(tmp_path / "o.npz", {"x": np.array([{}, 1], dtype=object)})
    assert list(tmp_path.iterdir()) == []


def test_save_json(tmp_path: Path) -> None:
    path = tmp_path / "out" / "scores.json"
    obj = {
        "zebra": np.float32(0.5),
        "apple": [np.int64(3), np.arange(3)],
        "name": "café",
        "flag": np.bool_(True),
    }
    save_json(path, obj)
    text = path.read_text(encoding="utf-8")
    assert text.endswith("}\n") and not text.endswith("\n\n")
    assert "café" in text
    assert text.index("zebra") < text.index("apple")  # key order kept
    assert text.startswith('{\n  "zebra": 0.5')
    assert json.loads(text) == {"zebra": 0.5, "apple": [3, [0, 1, 2]], "name": "café", "flag": True}


def test_save_png_array_and_pil(tmp_path: Path) -> None:
    rgb = np.arange(8 * 9 * 3, dtype=np.uint8).reshape(8, 9, 3)
    save_png(tmp_path / "rgb.png", rgb)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
        np.testing.assert_array_equal(np.asarray(im), rgb)
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    save_png(tmp_path / "grey.png", grey)
    with Image.open(tmp_path / "grey.png") as im:
        assert im.mode == "L"
        np.testing.assert_array_equal(np.asarray(im), grey)
    rgba = np.full((8, 8, 4), 77, dtype=np.uint8)
    save_png(tmp_path / "rgba.png", Image.fromarray(rgba, "RGBA"))
    with Image.open(tmp_path / "rgba.png") as im:
        assert im.mode == "RGBA"
        np.testing.assert_array_equal(np.asarray(im), rgba)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.png", "rgb.png", "rgba.png"]


def test_save_png_rejects_bad_arrays(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        save_png(tmp_path / "f.png", np.zeros((8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        save_png(tmp_path / "c.png", np.zeros((8, 8, 2), dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_figure(tmp_path: Path) -> None:
    fig = Figure(figsize=(2, 1.5))
    fig.add_subplot().plot([0, 1], [1, 0])
    save_figure(tmp_path / "fig.png", fig, dpi=50, tight=False)
    with Image.open(tmp_path / "fig.png") as im:
        assert im.format == "PNG"
        assert im.size == (100, 75)
    save_figure(tmp_path / "tight.png", fig, dpi=50)
    with Image.open(tmp_path / "tight.png") as im:
        # cropped to the drawn content: the axes' labels may stick out, by a few pixels only
        assert abs(im.size[0] - 100) <= 10 and abs(im.size[1] - 75) <= 10
    (tmp_path / "tight.png").unlink()
    save_figure(tmp_path / "fig.svg", fig)
    assert (tmp_path / "fig.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "fig.svg"]


# ------------------------------------------------------------------ safe_filename


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("tiger cat", "tiger_cat"),
        ("crane/bird", "crane_bird"),
        ("T-shirt, tee shirt", "T-shirt_tee_shirt"),
        ("a  /  b", "a_b"),
        ("already_safe-1.0", "already_safe-1.0"),
        ("café", "cafe"),
        ("..\\..\\etc/passwd", "etc_passwd"),
        (".hidden", "hidden"),
        ("...", "unnamed"),
        ("", "unnamed"),
        ("   ", "unnamed"),
        ("???", "unnamed"),
        ("CON", "CON_"),
        ("a__b", "a_b"),
        ("a..b", "a.b"),
    ],
)
def test_safe_filename(name: str, expected: str) -> None:
    assert safe_filename(name) == expected


def test_safe_filename_properties() -> None:
    for name in ["x" * 500, "\x00\n\t", "日本語", 'a/b\\c:d*e?f"g<h>i|j']:
        stem = safe_filename(name)
        assert stem and not stem.startswith(".")
        assert len(stem) <= 120
        assert all(c.isascii() and (c.isalnum() or c in "-_.") for c in stem)


# ------------------------------------------------------------------ durability (fsync)


class _SyncLog:
    """Stands in for os.fsync: records what each call flushed, and what existed at the time."""

    def __init__(self, watch: Path) -> None:
        self.watch = watch
        self.calls: list[tuple[str, Path, bool]] = []  # (kind, path, watch existed)

    def __call__(self, fd: int) -> None:
        import os
        import stat

        path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        self.calls.append((kind, path, self.watch.exists()))

    def synced(self, kind: str) -> list[Path]:
        return [p for k, p, _ in self.calls if k == kind]


needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(),
                                reason="reads file names of descriptors from /proc")


@needs_proc
def test_write_atomic_syncs_file_before_and_folder_after_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    target = tmp_path / "sub" / "data.json"
    log = _SyncLog(target)
    monkeypatch.setattr(os, "fsync", log)
    save_json(target, {"a": 1})
    kinds = [k for k, _, _ in log.calls]
    assert kinds == ["file", "dir"]
    (_, synced_file, existed_then), (_, synced_dir, existed_after) = log.calls
    # the temporary file was flushed under its own name, before it became ``target``
    assert synced_file.parent == target.parent and synced_file.name.startswith(".data.partial-")
    assert not existed_then
    assert synced_dir == target.parent and existed_after
    assert json.loads(target.read_text()) == {"a": 1}


@needs_proc
def test_atomic_dir_syncs_every_file_and_folder_then_the_parent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    final = tmp_path / "out"
    with atomic_dir(final) as work:
        (work / "a.txt").write_text("A", encoding="utf-8")
        (work / "nested").mkdir()
        (work / "nested" / "b.bin").write_bytes(b"B")
        log = _SyncLog(final)
        monkeypatch.setattr(os, "fsync", log)
    files = {p.relative_to(work).as_posix() for p in log.synced("file")}
    assert files == {"a.txt", "nested/b.bin"}
    dirs = log.synced("dir")
    assert dirs[:2] == [work / "nested", work]  # the deepest first, all before the rename
    assert not any(existed for _, _, existed in log.calls[:-1])
    assert log.calls[-1] == ("dir", tmp_path, True)  # the parent, after the rename
    assert (final / "nested" / "b.bin").read_bytes() == b"B"


def test_sync_where_the_os_cannot_is_skipped(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def unsupported(fd: int) -> None:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "fsync", unsupported)
    save_json(tmp_path / "a.json", [1])
    with atomic_dir(tmp_path / "d") as work:
        (work / "x").write_text("x", encoding="utf-8")
    assert (tmp_path / "d" / "x").is_file() and (tmp_path / "a.json").is_file()

    real_open = os.open

    def no_directories(path, flags, *args):  # noqa: ANN001, ANN202 - as os.open
        if Path(path).is_dir():
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", no_directories)
    save_json(tmp_path / "b.json", [2])
    assert json.loads((tmp_path / "b.json").read_text()) == [2]


def test_a_failed_flush_is_an_error_and_leaves_nothing(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def broken(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(DcsmError, match="Input/output error"):
        save_json(tmp_path / "a.json", [1])
    with pytest.raises(DcsmError, match="Input/output error"), atomic_dir(tmp_path / "d") as w:
        (w / "x").write_text("x", encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
