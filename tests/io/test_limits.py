"""Bounded, honest image input: dcsm's pixel limit, truncated files, one path for every kind.

* The pixel limit (``max_pixels``, ``--max-pixels``; default 50 million) is read from the header
  and refused before decoding, with one line quoting dcsm's limit; Pillow's own limit neither
  warns nor contradicts it.
* Truncated or corrupt files are refused, including a JPEG whose few kilobytes claim millions of
  pixels (libjpeg would fill them with grey without an error).
* Paths, PIL images and arrays give identical arrays: EXIF orientation, 16-bit depth, alpha.
* Classes of the wrong type are a one-line DcsmError.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

import dcsm
from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.io import DEFAULT_MAX_PIXELS, array_to_rgb, load_image, pil_to_rgb
from dcsm.pipeline.images import as_rgb_array

CLASSES = ["cat", "dog", "cow"]


# ----------------------------------------------------------------------------- crafted files
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(
        ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def header_png(path: Path, width: int, height: int) -> Path:
    """A valid PNG header claiming ``width x height`` RGB, with a few bytes of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
                     + _chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + _chunk(b"IEND", b""))
    return path


def claiming_jpeg(path: Path, width: int, height: int, progressive: bool = False) -> Path:
    """A real 64 x 64 JPEG whose frame header is rewritten to claim ``width x height``: its
    markers are intact (it ends in EOI), its data far too short."""
    buffer = io.BytesIO()
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    data = bytearray(buffer.getvalue())
    frame = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    path.write_bytes(bytes(data))
    return path


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert text and "\n" not in text and text.strip() == text
    return text


# ----------------------------------------------------------------------------- the limit
def test_default_limit_is_fifty_megapixels() -> None:
    import inspect

    assert DEFAULT_MAX_PIXELS == 50_000_000
    for fn in (load_image, pil_to_rgb, array_to_rgb, as_rgb_array, dcsm.make_explainer,
               dcsm.DistinctSaliency):
        assert inspect.signature(fn).parameters["max_pixels"].default == 50_000_000


@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (10000, 10000), (7072, 7072),
                                               (20000, 20000), (60000, 1000)])
def test_the_limit_is_read_from_the_header(tmp_path: Path, width: int, height: int) -> None:
    """Header-only files: had anything been decoded, the error would be about truncated data.
    Pillow's warning (89.5 million) and error (179 million) do not show; dcsm's limit is
    quoted whatever the size."""
    path = header_png(tmp_path / "big.png", width, height)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DcsmError) as exc:
            load_image(path)
    text = one_line(exc)
    assert f"{width * height:,}" in text and "dcsm's limit of 50,000,000" in text, text
    assert "89,478,485" not in text and "178,956,970" not in text and "truncated" not in text


def test_limit_boundary_and_validation(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 48), (1, 2, 3)).save(path)
    assert load_image(path, max_pixels=64 * 48).shape == (48, 64, 3)
    with pytest.raises(DcsmError) as exc:
        load_image(path, max_pixels=64 * 48 - 1)
    assert one_line(exc) == (f"image '{path}' is 64x48 pixels (3,072), more than dcsm's limit "
                             "of 3,071 (max_pixels, --max-pixels)")
    assert load_image(path, max_pixels=None).shape == (48, 64, 3)
    for bad in (0, -5, True, 1.5, "100"):
        with pytest.raises(DcsmError, match="max_pixels must be a positive integer"):
            load_image(path, max_pixels=bad)  # type: ignore[arg-type]
    with pytest.raises(DcsmError, match="max_pixels must be"):
        dcsm.DistinctSaliency(dcsm.load_model(), max_pixels=0)


def test_pillow_limit_agrees_with_dcsm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pillow's limit lowered to 1000 pixels (warning above it, error above 2000): dcsm's limit
    decides in both directions, no warning shows, and Pillow's limit is put back."""
    path = tmp_path / "a.png"
    pixels = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_image(path), pixels)  # 4096 px: Pillow's error
        np.testing.assert_array_equal(load_image(path, max_pixels=None), pixels)
        with pytest.raises(DcsmError, match="more than dcsm's limit of 3,000"):
            load_image(path, max_pixels=3000)
        with pytest.raises(DcsmError, match=r"4,096 pixels, more than dcsm's limit of 1,500"):
            load_image(path, max_pixels=1500)  # Pillow refuses first, in dcsm's words
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)  # 4096 px: Pillow's warning
        np.testing.assert_array_equal(load_image(path), pixels)
        with warnings.catch_warnings():  # the user's own open warns: not dcsm's doing
            warnings.simplefilter("ignore")
            im = Image.open(path)
        with im:
            np.testing.assert_array_equal(pil_to_rgb(im), pixels)  # decoded by dcsm: no warning
    assert Image.MAX_IMAGE_PIXELS == 3000


def test_api_and_arrays_hold_the_limit(tmp_path: Path, lite0) -> None:
    path = tmp_path / "a.png"
    Image.new("RGB", (64, 48)).save(path)
    explainer = dcsm.DistinctSaliency(lite0, max_pixels=1000, scales=[1.0])
    for image in (path, str(path), Image.open(path), np.zeros((48, 64, 3), np.uint8),
                  np.zeros((48, 64), np.uint8), np.zeros((48, 64, 4), np.uint8)):
        with pytest.raises(DcsmError, match=r"\(3,072\), more than dcsm's limit of 1,000"):
            explainer.explain(image)
    for method in ("simonyan", "gradcam"):
        with pytest.raises(DcsmError, match="dcsm's limit of 1,000"):
            dcsm.make_explainer(lite0, method, max_pixels=1000).explain(path)
    with pytest.raises(DcsmError, match="dcsm's limit of 1,000"):
        dcsm.explain(lite0, path, max_pixels=1000)


def test_a_pil_image_is_refused_before_it_is_decoded(tmp_path: Path) -> None:
    path = header_png(tmp_path / "big.png", 12000, 12000)
    with warnings.catch_warnings():  # the user's own open warns (Pillow's limit)
        warnings.simplefilter("ignore")
        im = Image.open(path)
    with im:
        with pytest.raises(DcsmError, match=r"the PIL image is 12000x12000 pixels"):
            as_rgb_array(im)
        assert im.tile  # Pillow clears the tiles once it decodes them: nothing was decoded


# ----------------------------------------------------------------------------- corrupt data
def test_truncated_images_are_not_accepted_by_default() -> None:
    import dcsm.cli  # noqa: F401 - what the command line imports
    import dcsm.io.viz  # noqa: F401
    import dcsm.segmentation  # noqa: F401

    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize(("width", "height"), [(9000, 9000), (7000, 7000), (3000, 2000),
                                               (4000, 600)])
def test_a_jpeg_too_short_for_its_size(tmp_path, width, height, progressive) -> None:
    """A 64 x 64 JPEG claiming a larger size decodes without an error in Pillow (grey fill);
    dcsm refuses it before decoding, under any limit."""
    path = claiming_jpeg(tmp_path / "claim.jpg", width, height, progressive)
    with Image.open(path) as im:  # what Pillow alone does: no error
        assert im.size == (width, height)
        if width * height <= 4_000_000:
            im.load()
    with pytest.raises(DcsmError) as exc:
        load_image(path, max_pixels=None)
    text = one_line(exc)
    assert text.startswith(f"cannot read image '{path}': it is truncated or corrupt (")
    assert f"cannot hold the {width}x{height} pixels its header declares" in text
    with Image.open(path) as im, pytest.raises(DcsmError, match="truncated or corrupt"):
        pil_to_rgb(im, max_pixels=None)


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK"])
def test_real_jpegs_pass_the_data_check(tmp_path: Path, mode: str) -> None:
    """The smallest JPEGs an encoder makes (flat colour, lowest quality, progressive,
    optimised tables, every subsampling) all load."""
    for size in [(8, 8), (17, 9), (900, 700)]:
        for options in [{"quality": 1}, {"quality": 1, "progressive": True, "optimize": True},
                        {"quality": 95, "subsampling": 2}, {"quality": 50, "subsampling": 0}]:
            if mode != "RGB":
                options = {k: v for k, v in options.items() if k != "subsampling"}
            path = tmp_path / "flat.jpg"
            Image.new(mode, size, 0 if mode != "RGB" else (10, 200, 30)).save(path, "JPEG",
                                                                             **options)
            assert load_image(path).shape == (size[1], size[0], 3)


@pytest.mark.parametrize("cut", ["png", "jpg"])
def test_cut_files_are_refused(tmp_path: Path, cut: str) -> None:
    pixels = np.random.default_rng(2).integers(0, 256, (80, 80, 3), dtype=np.uint8)
    path = tmp_path / f"cut.{cut}"
    Image.fromarray(pixels).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DcsmError, match="cannot read image") as exc:
        load_image(path)
    one_line(exc)


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A narrow small_vgg checkpoint: a real model, fast."""
    from dcsm.pipeline.adapters.checkpoint import model_record, save_checkpoint
    from dcsm.pipeline.adapters.fcn import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("small_vgg", len(CLASSES), config={
        "widths": [4, 4, 6, 6, 8], "convs": [1, 1, 1, 1, 1], "fc": 8})
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, model_record(backbone, CLASSES, history=[{"epoch": 1}]))
    return f"checkpoint:{path}"


def bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    """Each file and what its one-line refusal says."""
    cut = folder / "cut.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (60, 60, 3), np.uint8)).save(cut)
    cut.write_bytes(cut.read_bytes()[:400])
    return {
        "header": (header_png(folder / "huge.png", 9000, 9000), "dcsm's limit of 50,000,000"),
        "pillow": (header_png(folder / "huger.png", 15000, 15000),
                   "dcsm's limit of 50,000,000"),
        "claim": (claiming_jpeg(folder / "claim.jpg", 7000, 7000), "truncated or corrupt"),
        "cut": (cut, "cannot read image"),
    }


def run_cli(args: list[str], capsys) -> tuple[int, list[str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        code = cli.main(args)
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize("command", ["explain", "segment", "figure"])
def test_cli_refuses_bad_images_with_one_line(tiny_model, tmp_path, capsys, command) -> None:
    (tmp_path / "in").mkdir()
    for name, (path, says) in bad_images(tmp_path / "in").items():
        out = tmp_path / f"out-{name}"
        target = out / "fig.png" if command == "figure" else out
        code, err = run_cli([command, str(path), "--out", str(target), "--model", tiny_model,
                             "--scales", "1"], capsys)
        assert code == 2 and len(err) == 1 and err[0].startswith("dcsm: error: "), err
        assert says in err[0], err
        assert not out.exists()


def test_cli_max_pixels_option(tiny_model, tmp_path, capsys) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (48, 64, 3), np.uint8)).save(path)
    base = ["explain", str(path), "--model", tiny_model, "--scales", "1"]
    code, err = run_cli([*base, "--out", str(tmp_path / "o1"), "--max-pixels", "3071"], capsys)
    assert code == 2 and err == [f"dcsm: error: image '{path}' is 64x48 pixels (3,072), more "
                                 "than dcsm's limit of 3,071 (max_pixels, --max-pixels)"]
    assert not (tmp_path / "o1").exists()
    code, err = run_cli([*base, "--out", str(tmp_path / "o2"), "--max-pixels", "3072"], capsys)
    assert code == 0 and (tmp_path / "o2" / "a" / "maps.npz").is_file()
    for bad in ("0", "-1", "1.5", "nan", "many"):
        code, err = run_cli([*base, "--out", str(tmp_path / "o3"), "--max-pixels", bad], capsys)
        assert code == 2 and len(err) == 1 and "--max-pixels" in err[0], err
    big = header_png(tmp_path / "big.png", 9000, 9000)  # allowed: then the data is refused
    code, err = run_cli(["explain", str(big), "--model", tiny_model, "--out",
                         str(tmp_path / "o4"), "--max-pixels", "100000000"], capsys)
    assert code == 2 and len(err) == 1 and "truncated" in err[0], err


def test_batch_records_bad_images(tiny_model, tmp_path, capsys) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    bad = bad_images(folder)
    good = folder / "good.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 50, 3), np.uint8)).save(good)
    out = tmp_path / "out"
    code, _ = run_cli(["batch", str(folder), "--out", str(out), "--model", tiny_model,
                       "--scales", "1", "--workers", "0"], capsys)
    assert code == 1
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["good"]
    records = "\n".join(p.read_text() for p in (out / ".dcsm-batch").rglob("*.jsonl"))
    for _, says in bad.values():
        assert says in records
    code, _ = run_cli(["batch", str(folder), "--out", str(tmp_path / "out2"), "--model",
                       tiny_model, "--scales", "1", "--workers", "0", "--max-pixels", "1999"],
                      capsys)
    assert code == 1 and not (tmp_path / "out2" / "good").exists()


def test_evaluate_holds_the_limit(tmp_path, capsys) -> None:
    import json

    from dcsm.datasets.synthetic import SyntheticConfig, write_synthetic
    from dcsm.datasets.voc import VOCDataset
    from dcsm.pipeline.adapters.checkpoint import model_record, save_checkpoint
    from dcsm.pipeline.adapters.fcn import build_backbone

    write_synthetic(tmp_path / "voc", SyntheticConfig(train=1, val=2, size=32))
    names = VOCDataset(tmp_path / "voc").class_names
    backbone = build_backbone("small_vgg", len(names), config={
        "widths": [4, 4, 6, 6, 8], "convs": [1, 1, 1, 1, 1], "fc": 8})
    save_checkpoint(tmp_path / "model.pt", model_record(backbone, names, history=[{}]))
    code, _ = run_cli(["evaluate", "--data", str(tmp_path / "voc"), "--out",
                       str(tmp_path / "ev"), "--model", f"checkpoint:{tmp_path / 'model.pt'}",
                       "--scales", "1", "--max-pixels", "1000", "--methods", "dcsm_crf"],
                      capsys)
    assert code == 1
    failures = json.loads((tmp_path / "ev" / "metrics.json").read_text())["failures"]
    assert len(failures) == 2
    assert all("more than dcsm's limit of 1,000" in f["reason"] for f in failures)


# ----------------------------------------------------------------------------- one image path
def routes(path: Path) -> dict[str, np.ndarray]:
    """The array of a file by path, as a PIL image opened from it (lazy and loaded)."""
    out = {"path": as_rgb_array(path), "str": as_rgb_array(str(path))}
    with Image.open(path) as im:
        out["pil"] = as_rgb_array(im)
    with Image.open(path) as im:
        im.load()
        out["pil loaded"] = as_rgb_array(im)
    return out


def assert_all_equal(arrays: dict[str, np.ndarray], expected: np.ndarray) -> None:
    for name, array in arrays.items():
        assert array.dtype == np.uint8 and array.shape == expected.shape, name
        np.testing.assert_array_equal(array, expected, err_msg=name)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_exif_orientation_by_every_route(tmp_path: Path, fmt: str) -> None:
    """Stored 64 wide, 32 high, orientation 6 (rotate 90 degrees clockwise to display)."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:16, :16] = (255, 0, 0)  # the top-left corner red
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / f"rotated.{fmt.lower()}"
    Image.fromarray(stored).save(path, fmt, exif=exif, **({"quality": 100} if fmt == "JPEG"
                                                        else {}))
    arrays = routes(path)
    expected = arrays["path"]
    assert expected.shape == (64, 32, 3)  # upright: 32 wide, 64 high
    assert expected[2:14, -14:-2, 0].min() > 200 and expected[2:14, 2:14, 0].max() < 60
    assert_all_equal(arrays, expected)


def test_sixteen_bit_by_every_route(tmp_path: Path) -> None:
    """16-bit grey from a file, a PIL image (I;16 and I) and the float64 reference: rescaled
    from the image's own range, not clipped."""
    values = np.random.default_rng(6).integers(1000, 60000, (20, 30)).astype(np.uint16)
    values[0, 0], values[0, 1] = 1000, 60000
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")
    grey = np.rint((values.astype(np.float64) - 1000) * 255 / 59000).astype(np.uint8)
    expected = np.repeat(grey[:, :, None], 3, axis=2)
    arrays = routes(path)
    arrays["I;16"] = as_rgb_array(Image.frombytes("I;16", (30, 20),
                                                  values.astype("<u2").tobytes()))
    arrays["I"] = as_rgb_array(Image.fromarray(values.astype(np.int32), mode="I"))
    assert_all_equal(arrays, expected)
    assert len(np.unique(arrays["pil"])) > 200  # not clipped to a few grey levels


def test_alpha_by_every_route(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (24, 20, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba, "RGBA").save(path)
    a = rgba[..., 3:].astype(np.float64) / 255
    expected = np.rint(rgba[..., :3] * a + 255 * (1 - a)).astype(np.uint8)
    arrays = routes(path)
    arrays["array"] = as_rgb_array(rgba)
    arrays["pil from array"] = as_rgb_array(Image.fromarray(rgba, "RGBA"))
    assert_all_equal(arrays, expected)
    assert tuple(expected[0, 0]) == (255, 255, 255)


def test_palette_transparency_and_grey_alpha_by_every_route(tmp_path: Path) -> None:
    rng = np.random.default_rng(8)
    palette = Image.fromarray(rng.integers(0, 256, (16, 18, 3), np.uint8)).convert("P")
    palette.info["transparency"] = int(np.asarray(palette)[0, 0])
    path = tmp_path / "pal.png"
    palette.save(path, transparency=palette.info["transparency"])
    arrays = routes(path)
    assert tuple(arrays["path"][0, 0]) == (255, 255, 255)
    assert_all_equal(arrays, arrays["path"])
    la = Image.fromarray(rng.integers(0, 256, (16, 18, 2), np.uint8), "LA")
    path = tmp_path / "la.png"
    la.save(path)
    arrays = routes(path)
    arrays["LA"] = as_rgb_array(la)
    assert_all_equal(arrays, arrays["path"])


def test_maps_follow_the_upright_image(tmp_path: Path, tiny) -> None:
    """The explainer reads a PIL image as a path: maps of the EXIF-rotated size."""
    stored = tiny.image(24, 40)
    exif = Image.Exif()
    exif[0x0112] = 8
    path = tmp_path / "r.png"
    Image.fromarray(stored).save(path, exif=exif)
    explainer = dcsm.DistinctSaliency(tiny.adapter(tiny.TinyNet()), scales=[1.0])
    by_path = explainer.explain(path, classes=[0, 1])
    with Image.open(path) as im:
        by_pil = explainer.explain(im, classes=[0, 1])
    assert by_path.image.shape == by_pil.image.shape == (40, 24, 3)
    for name in by_path.maps:
        np.testing.assert_array_equal(by_path.maps[name], by_pil.maps[name])


# ----------------------------------------------------------------------------- class types
@pytest.mark.parametrize("classes", [[1.7], [True, False], [0, True], [None], [b"cat"], 1.7,
                                     True, [[1.0]], torch.tensor([[0.0, 1.0]]),
                                     torch.tensor([[True, False]]), {1.5}])
def test_wrong_class_types_are_one_line(tiny, classes) -> None:
    explainer = dcsm.DistinctSaliency(tiny.adapter(tiny.TinyNet()), scales=[1.0])
    image = tiny.image(16, 16)
    with pytest.raises(DcsmError) as exc:
        explainer.explain(image, classes=classes)
    text = one_line(exc)
    assert "indices" in text, text


def test_numpy_integers_and_single_indices_are_classes(tiny) -> None:
    explainer = dcsm.DistinctSaliency(tiny.adapter(tiny.TinyNet()), scales=[1.0])
    image = tiny.image(16, 16)
    reference = explainer.explain(image, classes=[0, 2])
    for classes in ([np.int64(0), np.uint8(2)], np.array([0, 2]), ["0", 2], (0, 2)):
        result = explainer.explain(image, classes=classes)
        assert [c.index for c in result.candidates] == [0, 2]
        for name in reference.maps:
            np.testing.assert_array_equal(result.maps[name], reference.maps[name])
    assert [c.index for c in explainer.explain(image, classes=np.int64(1)).candidates] == [1]
