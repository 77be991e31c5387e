"""COCO-format data sets: polygons, RLE (both forms), crowd regions, class names, bad input.

Every data set here is written by the test itself; each mask is checked pixel by pixel against
one built by hand from the annotation's geometry.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsm.datasets.coco import (
    ALIASES,
    CocoDataset,
    canonical_name,
    decode_segmentation,
    load_coco,
    rle_counts,
    rle_decode,
)
from dcsm.datasets.realphotos import VOID
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.groups import COCO_CLASSES, LABEL_SETS

H, W = 12, 16
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 4, "name": "motorbike"},
              {"id": 9, "name": "TV_monitor"}, {"id": 12, "name": "unicorn"}]
#: The crowd region's RLE, compressed by hand (see test_compressed_rle_by_hand).
CROWD_COUNTS = [76, 6, 6, 6, 6, 6, 6, 6, 74]
CROWD_STRING = "\\26600000T2"


def _rect(x0: int, y0: int, x1: int, y1: int) -> list[float]:
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def expected_masks() -> dict[str, np.ndarray]:
    """The masks of photo coco:7, by hand."""
    motorbike = np.zeros((H, W), bool)
    motorbike[2:6, 2:8] = True          # the rectangle x 2..8, y 2..6 covers pixels 2..7, 2..5
    motorbike[10:12, 0:2] = True        # a second motorbike, x 0..2, y 10..12
    tv = np.zeros((H, W), bool)         # triangle (9,1) (13,1) (9,5): centres with x + y < 14
    tv[1, 9:12] = tv[2, 9:11] = tv[3, 9] = True
    person = np.zeros((H, W), bool)     # RLE [3, 4, 5, 2, 178], column-major
    person[3:7, 0] = person[0:2, 1] = True
    unicorn = np.zeros((H, W), bool)
    unicorn[8:12, 12:16] = True
    crowd = np.zeros((H, W), bool)
    crowd[4:10, 6:10] = True
    return {"person": person, "motorcycle": motorbike, "tv": tv, "unicorn": unicorn,
            "crowd": crowd}


def write_coco(root: Path, split: str = "val", missing: tuple[int, ...] = (3,),
               extra: int = 0) -> Path:
    """A data set: photo 7 with every kind of segmentation, photo 3 listed but (by default)
    missing, and ``extra`` plain photos (ids 20, 21, ...) with one motorbike each."""
    images = [{"id": 7, "file_name": "b.png", "height": H, "width": W},
              {"id": 3, "file_name": "a.png", "height": H, "width": W}]
    anns = [
        {"id": 1, "image_id": 7, "category_id": 4, "iscrowd": 0,
         "segmentation": [_rect(2, 2, 8, 6)]},
        {"id": 2, "image_id": 7, "category_id": 9, "iscrowd": 0,
         "segmentation": [[9, 1, 13, 1, 9, 5]]},
        {"id": 3, "image_id": 7, "category_id": 1, "iscrowd": 0,
         "segmentation": {"size": [H, W], "counts": [3, 4, 5, 2, 178]}},
        {"id": 4, "image_id": 7, "category_id": 1, "iscrowd": 1,
         "segmentation": {"size": [H, W], "counts": CROWD_STRING}},
        {"id": 5, "image_id": 7, "category_id": 12, "iscrowd": 0,
         "segmentation": [_rect(12, 8, 16, 12)]},
        {"id": 6, "image_id": 7, "category_id": 4,
         "segmentation": [_rect(0, 10, 2, 12), [1, 1, 2, 2]]},  # a degenerate outline too
        {"id": 7, "image_id": 3, "category_id": 9, "iscrowd": 0,
         "segmentation": [_rect(1, 1, 9, 9)]},
    ]
    rng = np.random.default_rng(0)
    folder = root / split
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(extra):
        image_id = 20 + k
        images.append({"id": image_id, "file_name": f"x{k}.png", "height": H, "width": W})
        anns.append({"id": 100 + k, "image_id": image_id, "category_id": 4, "iscrowd": 0,
                     "segmentation": [_rect(k % 4, 1, k % 4 + 6, 7)]})
    for im in images:
        pixels = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
        if im["id"] not in missing:
            Image.fromarray(pixels).save(folder / im["file_name"])
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": CATEGORIES}))
    return path


# ----------------------------------------------------------------------------- decoding
def test_compressed_rle_by_hand():
    # 76 = 12 + 2 * 32: '\\' (48 + 0x20 + 12) then '2'; 6, 6 as they are; the next five are
    # differences to the count two before (0); 74 - 6 = 68 = 4 + 2 * 32: 'T' then '2'
    assert rle_counts(CROWD_STRING) == CROWD_COUNTS
    assert rle_counts("T3") == [100]
    # a negative difference: 1 - 5 = -4 is 28 (0x10 set: the sign) -> 'L'
    assert rle_counts("15" + "2" + "L") == [1, 5, 2, 1]
    assert rle_counts("") == []
    with pytest.raises(DcsmError, match="outside '0'..'o'"):
        rle_counts("3 2")
    with pytest.raises(DcsmError, match="middle of a count"):
        rle_counts("3T")
    with pytest.raises(DcsmError, match="negative run"):
        rle_counts("3L")  # the second count -4


def test_rle_decode_is_column_major():
    mask = rle_decode([3, 2, 5, 4, 1], 3, 5)
    want = np.array([[0, 1, 0, 0, 1],
                     [0, 1, 0, 1, 1],
                     [0, 0, 0, 1, 0]], bool)
    # runs over columns: 3 zeros (column 0), 2 ones (column 1, rows 0-1), 5 zeros, 4 ones
    # (column 3 rows 1-2, column 4 rows 0-1), 1 zero
    np.testing.assert_array_equal(mask, want)
    with pytest.raises(DcsmError, match="covers 14 pixels"):
        rle_decode([3, 2, 5, 4], 3, 5)
    with pytest.raises(DcsmError, match="negative"):
        rle_decode([-1, 16], 3, 5)


def test_rle_agrees_with_pycocotools():
    coco_mask = pytest.importorskip("pycocotools.mask")
    rng = np.random.default_rng(3)
    for h, w in ((1, 1), (7, 9), (40, 33)):
        for p in (0.0, 0.3, 0.9, 1.0):
            want = rng.random((h, w)) < p
            encoded = coco_mask.encode(np.asfortranarray(want.astype(np.uint8)))
            got = decode_segmentation({"size": [h, w], "counts": encoded["counts"].decode()},
                                      h, w)
            np.testing.assert_array_equal(got, want)
    hand = expected_masks()["crowd"]
    encoded = coco_mask.encode(np.asfortranarray(hand.astype(np.uint8)))
    assert encoded["counts"].decode() == CROWD_STRING


def test_segmentation_errors():
    with pytest.raises(DcsmError, match=r"RLE of size \[3, 4\]"):
        decode_segmentation({"size": [3, 4], "counts": [12]}, 4, 3)
    with pytest.raises(DcsmError, match="neither a string nor a list"):
        decode_segmentation({"size": [3, 4], "counts": [1.5, 10.5]}, 3, 4)
    with pytest.raises(DcsmError, match="neither polygons nor RLE"):
        decode_segmentation(7, 3, 4)
    with pytest.raises(DcsmError, match="pairs"):
        decode_segmentation([[1, 2, 3]], 3, 4)
    with pytest.raises(DcsmError, match="far outside"):
        decode_segmentation([[0, 0, 1e12, 0, 0, 2]], 3, 4)
    with pytest.raises(DcsmError, match="not a number"):
        decode_segmentation([[0, 0, "1", 0, 0, 2]], 3, 4)
    assert not decode_segmentation([[0, 0, 2, 2]], 3, 4).any()  # fewer than three corners


# ----------------------------------------------------------------------------- the data set
def test_photo_masks_void_and_names(tmp_path):
    pytest.importorskip("pycocotools")
    write_coco(tmp_path)
    data = CocoDataset(tmp_path, "val")
    assert [im.id for im in data.images] == [3, 7]
    assert data.class_names == ("person", "motorcycle", "tv", "unicorn")
    entries = data.entries()
    assert [e.name for e in entries] == ["coco:3", "coco:7"]
    with pytest.raises(DcsmError, match="a.png' does not exist"):
        entries[0].load()
    photo = entries[1].load()
    want = expected_masks()
    assert photo.name == "coco:7" and photo.label_set == "coco"
    assert photo.image.shape == (H, W, 3)
    assert photo.classes == ["person", "motorcycle", "tv", "unicorn"]
    for name in photo.classes:
        np.testing.assert_array_equal(photo.mask(name), want[name], err_msg=name)
    # the crowd region is void except where the motorbike covers it (x 6..7, y 4..5)
    void = want["crowd"].copy()
    void[4:6, 6:8] = False
    np.testing.assert_array_equal(photo.void, void)
    # one label per pixel, void 255, the other pixels background
    for v, name in enumerate(photo.class_names, 1):
        np.testing.assert_array_equal(photo.labels == v, want[name])
    assert ((photo.labels == 0) == ~(void | want["person"] | want["motorcycle"] | want["tv"]
                                     | want["unicorn"])).all()
    assert (photo.labels[void] == VOID).all()
    objects = [(o.class_name, o.pixels, o.crowd) for o in photo.objects]
    assert objects == [("motorcycle", 24, False), ("tv", 6, False), ("person", 6, False),
                       ("person", 24, True), ("unicorn", 16, False), ("motorcycle", 4, False)]
    with pytest.raises(DcsmError, match="a.png' does not exist"):
        list(load_coco(tmp_path, "val", limit=1))


def test_load_coco_streams_and_limits(tmp_path):
    pytest.importorskip("pycocotools")
    write_coco(tmp_path, missing=(), extra=2)
    names = [p.name for p in load_coco(tmp_path, "val")]
    assert names == ["coco:3", "coco:7", "coco:20", "coco:21"]
    assert [p.name for p in load_coco(tmp_path, "val", limit=2)] == ["coco:3", "coco:7"]
    photo = next(p for p in load_coco(tmp_path, "val") if p.name == "coco:21")
    want = np.zeros((H, W), bool)
    want[1:7, 1:7] = True
    np.testing.assert_array_equal(photo.mask("motorcycle"), want)
    assert photo.classes == ["motorcycle"] and not photo.void.any()


def test_category_names_map_to_labels_coco():
    for name in COCO_CLASSES:
        assert canonical_name(name) == name
        assert canonical_name(name.upper().replace(" ", "_")) == name
    assert set(ALIASES.values()) <= set(COCO_CLASSES)
    assert canonical_name("Motorbike") == "motorcycle"
    assert canonical_name("aeroplane") == "airplane"
    assert canonical_name("tvmonitor") == canonical_name("TV-monitor") == "tv"
    assert canonical_name("pottedplant") == "potted plant"
    assert canonical_name("diningtable") == "dining table"
    assert canonical_name("sofa") == "couch"
    assert canonical_name("hair dryer") == "hair drier"
    assert canonical_name("unicorn") == "unicorn"
    # every name --labels coco explains is a COCO class name
    assert set(LABEL_SETS["coco"].class_names) <= set(COCO_CLASSES)


def test_bad_folders_and_files(tmp_path):
    with pytest.raises(DcsmError, match="does not exist or is not a folder"):
        CocoDataset(tmp_path / "nowhere", "val")
    with pytest.raises(DcsmError, match=r"no annotations for split 'val'.*instances_<split>"):
        CocoDataset(tmp_path, "val")
    path = write_coco(tmp_path, split="train")
    with pytest.raises(DcsmError, match=r"splits there: train"):
        CocoDataset(tmp_path, "val")
    with pytest.raises(DcsmError, match="not a split name"):
        CocoDataset(tmp_path, "../train")
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(DcsmError, match="does not parse as JSON"):
        CocoDataset(tmp_path, "train")
    path.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(DcsmError, match="no 'categories' list"):
        CocoDataset(tmp_path, "train")
    path.write_text(json.dumps({"images": [], "categories": CATEGORIES, "annotations": [
        {"id": 1, "image_id": 5, "category_id": 1, "segmentation": []}]}))
    with pytest.raises(DcsmError, match="image 5, which the file does not list"):
        CocoDataset(tmp_path, "train")
    path.write_text(json.dumps({"images": [{"id": 5, "file_name": "x.png", "height": 4,
                                            "width": 4}],
                                "categories": CATEGORIES, "annotations": [
        {"id": 1, "image_id": 5, "category_id": 2, "segmentation": []}]}))
    with pytest.raises(DcsmError, match="category 2, which the file does not list"):
        CocoDataset(tmp_path, "train")
    (tmp_path / "train").rename(tmp_path / "elsewhere")
    with pytest.raises(DcsmError, match="no image folder"):
        CocoDataset(tmp_path, "train")


def test_photo_errors_are_the_photos_own(tmp_path):
    pytest.importorskip("pycocotools")
    root = tmp_path / "d"
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(root / "val" / "ok.png")
    (root / "val" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "outside.png").write_bytes(b"")
    images = [{"id": 1, "file_name": "ok.png", "height": H + 1, "width": W},
              {"id": 2, "file_name": "broken.jpg", "height": H, "width": W},
              {"id": 3, "file_name": "../../outside.png", "height": H, "width": W},
              {"id": 4, "file_name": "ok.png", "height": H, "width": W},
              {"id": 5, "file_name": "ok.png", "height": 10 ** 6, "width": W}]
    anns = [{"id": 1, "image_id": 4, "category_id": 1,
             "segmentation": {"size": [H, W], "counts": [5]}}]
    (root / "annotations" / "instances_val.json").write_text(json.dumps(
        {"images": images, "annotations": anns, "categories": CATEGORIES}))
    entries = CocoDataset(root, "val").entries()
    reasons = {}
    for e in entries:
        with pytest.raises(DcsmError) as info:
            e.load()
        reasons[e.name] = str(info.value)
    assert "is 16x12 but annotated as 16x13" in reasons["coco:1"]
    assert "cannot read image" in reasons["coco:2"]
    assert "leaves" in reasons["coco:3"]
    assert "image 4, object 1 (person): RLE covers 5 pixels" in reasons["coco:4"]
    assert "beyond the limits" in reasons["coco:5"]
    assert all("\n" not in r for r in reasons.values())


# ----------------------------------------------------------------------------- the benchmark
class _Named:
    """An adapter stand-in that names COCO's motorcycle and tv (not person, not unicorn)."""

    class_names = ["motorcycle", "tv"]


def _method(key: str, channel: int, calls: list[str], stop: dict | None = None):
    from dcsm.bench.methods import BenchMethod

    def build(adapter, mode):
        def run(image, classes):
            calls.append(key)
            if stop is not None and len(calls) > stop["after"]:
                raise KeyboardInterrupt
            return {c: image[..., channel].astype(np.float32) * (1 + c) / 510 for c in classes}
        return run

    return BenchMethod(key, key.upper(), "test", False, "dcsm", build)


def _without_seconds(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    for entry in report["methods"].values():
        entry.pop("seconds_per_photo")
    return report


def _run(root: Path, out: Path, calls: list[str], limit: int | None = None,
         stop: dict | None = None, keys: tuple[str, ...] = ("red", "green"), force=False):
    from dcsm.bench.masks import masks_benchmark

    entries = CocoDataset(root, "val").entries()
    methods = [_method(k, i, calls, stop) for i, k in enumerate(keys)]
    return masks_benchmark(lambda s: _Named(), entries[:limit], methods, crf={"iterations": 0},
                           records=out, settings={"data": "test"}, force=force)


def test_benchmark_resumes_to_the_uninterrupted_report(tmp_path):
    pytest.importorskip("pycocotools")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    write_coco(whole, missing=(), extra=3)
    write_coco(broken, missing=(3,), extra=3)
    calls: list[str] = []
    want = _run(whole, tmp_path / "a", calls)
    assert want["counts"] == {"photos": 5, "failed": 0, "pairs": 6, "pairs_small": 0,
                              "unnameable": 2}
    assert want["unnameable_counts"] == {"person": 1, "unicorn": 1}
    assert [(p["photo"], p["class"]) for p in want["pairs"]] == [
        ("coco:3", "tv"), ("coco:7", "motorcycle"), ("coco:7", "tv"), ("coco:20", "motorcycle"),
        ("coco:21", "motorcycle"), ("coco:22", "motorcycle")]
    assert len(calls) == 10
    out = tmp_path / "b"
    calls.clear()
    first = _run(broken, out, calls, limit=2)            # stopped after two photos; one failed
    assert first["photos"] == ["coco:7"] and first["failed"] == [
        {"photo": "coco:3", "reason": f"image '{broken / 'val' / 'a.png'}' does not exist"}]
    calls.clear()
    with pytest.raises(KeyboardInterrupt):               # interrupted in the fourth photo
        _run(broken, out, calls, stop={"after": 3})
    assert calls == ["red", "green", "red", "green"]     # photo 7 was not run again
    calls.clear()
    second = _run(broken, out, calls)
    assert calls == ["red", "green", "red", "green"]     # only photo 22 was left
    assert second["counts"]["failed"] == 1 and second["counts"]["photos"] == 4
    Image.open(whole / "val" / "a.png").save(broken / "val" / "a.png")   # the image comes back
    calls.clear()
    final = _run(broken, out, calls)
    assert calls == ["red", "green"]
    assert _without_seconds(final) == _without_seconds(want)
    # each method's scores line up with the pairs, and the summaries count them
    s = final["methods"]["red"]["summary"]
    assert s["energy"]["n"] == 6 and final["methods"]["red"]["per_class"]["tv"]["pairs"] == 2
    # another method list is other settings: refused, unless forced
    with pytest.raises(DcsmError, match="other settings.*--force"):
        _run(broken, out, calls, keys=("red",))
    calls.clear()
    assert _run(broken, out, calls, keys=("red",), force=True)["counts"]["photos"] == 5
    assert len(calls) == 5
    # a folder whose settings were written but whose run recorded no photo is not protected
    from dcsm.bench.masks import SETTINGS_FILE
    from dcsm.io.records import check_settings

    fresh = tmp_path / "c"
    check_settings(fresh / SETTINGS_FILE, {"other": 1}, False, fresh)
    assert _run(broken, fresh, calls, limit=1)["counts"]["photos"] == 1


def test_small_objects_are_reported_apart(tmp_path):
    pytest.importorskip("pycocotools")
    from dcsm.bench.masks import markdown_table

    write_coco(tmp_path / "d", missing=())
    path = tmp_path / "d" / "annotations" / "instances_val.json"
    data = json.loads(path.read_text())
    data["annotations"][1]["segmentation"] = [_rect(9, 1, 10, 2)]   # a tv of 1 pixel (0.5 %)
    path.write_text(json.dumps(data))
    calls: list[str] = []
    report = _run(tmp_path / "d", tmp_path / "out", calls)
    assert report["counts"]["pairs"] == 2 and report["counts"]["pairs_small"] == 1
    red = report["methods"]["red"]
    assert red["summary"]["energy"]["n"] == 2 and red["summary_small"]["energy"]["n"] == 1
    assert list(red["per_class_small"]) == ["tv"] and list(red["per_class"]) == [
        "motorcycle", "tv"]
    text = markdown_table(report)
    assert "### Objects under 1 % of the photo" in text
    assert "| person | 1 |" in text and "| unicorn | 1 |" in text


# ----------------------------------------------------------------------------- the command
def _cli(argv, capsys):
    from dcsm import cli

    code = cli.main(argv)
    return code, capsys.readouterr()


def test_bench_masks_data_set_errors(tmp_path, capsys):
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    for argv, message in (
        (["--coco", str(tmp_path / "empty")], "no annotations for split 'val2017'"),
        (["--voc", str(tmp_path / "empty")], "no PASCAL VOC 2012 folder"),
        (["--limit", "2"], "need --coco DIR or --voc DIR"),
        (["--coco", str(tmp_path), "--photos", "x"], "not with --coco or --voc"),
    ):
        code, io = _cli(["bench", "masks", "--out", str(out), "--methods", "gradcam", *argv],
                        capsys)
        assert code == 2 and len(io.err.strip().splitlines()) == 1 and message in io.err, argv
        assert "Traceback" not in io.err
    path = write_coco(tmp_path / "d")
    path.write_text(path.read_text()[:-5])
    code, io = _cli(["bench", "masks", "--out", str(out), "--coco", str(tmp_path / "d"),
                     "--split", "val", "--methods", "gradcam"], capsys)
    assert code == 2 and "does not parse as JSON" in io.err
    assert len(io.err.strip().splitlines()) == 1
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": CATEGORIES}))
    code, io = _cli(["bench", "masks", "--out", str(out), "--coco", str(tmp_path / "d"),
                     "--split", "val", "--methods", "gradcam"], capsys)
    assert code == 2 and "the coco split 'val' lists no photos" in io.err
    code, io = _cli(["bench", "masks", "--out", str(out), "--coco", str(tmp_path / "d"),
                     "--split", "val", "--methods", "gradcam", "--model", "nope"], capsys)
    assert code == 2 and len(io.err.strip().splitlines()) == 1
    assert not out.exists()


def test_bench_masks_command_resumes(tmp_path, capsys):
    pytest.importorskip("pycocotools")
    write_coco(tmp_path / "d", missing=(), extra=1)
    base = ["bench", "masks", "--coco", str(tmp_path / "d"), "--split", "val", "--methods",
            "gradcam", "--crf-iterations", "0", "--device", "cpu", "--no-progress"]
    code, io = _cli([*base, "--out", str(tmp_path / "whole")], capsys)
    assert code == 0, io.err
    assert "not scored, no ImageNet class names them: person (1), unicorn (1)" in io.err
    code, io = _cli([*base, "--out", str(tmp_path / "part"), "--limit", "1"], capsys)
    assert code == 0, io.err
    part = json.loads((tmp_path / "part" / "masks.json").read_text())
    assert part["photos"] == ["coco:3"]
    code, io = _cli([*base, "--out", str(tmp_path / "part")], capsys)
    assert code == 0, io.err
    whole = json.loads((tmp_path / "whole" / "masks.json").read_text())
    resumed = json.loads((tmp_path / "part" / "masks.json").read_text())
    assert resumed["photos"] == ["coco:3", "coco:7", "coco:20"]
    assert _without_seconds(resumed) == _without_seconds(whole)
    assert (tmp_path / "part" / "masks.md").read_text().startswith("| method | relevance mass")
    assert not (tmp_path / "part" / "maps").exists()
