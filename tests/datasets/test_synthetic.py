"""VOC 2012 and SBD readers on small trees the tests write, and the synthetic generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from scipy.io import savemat

from dcsm import cli
from dcsm.datasets import (
    SBD,
    SYNTHETIC_CLASSES,
    VOC_CLASSES,
    SyntheticConfig,
    VOCDataset,
    generate_sample,
    write_synthetic,
)
from dcsm.datasets.synthetic import sample_rng
from dcsm.errors import DcsmError
from dcsm.segmentation.palette import labels_image

# id: mask labels (None: no VOC mask, labels from SBD)
MASKS = {
    "2007_000032": [1, 15],       # aeroplane, person
    "2007_000039": [20],          # tvmonitor
    "2008_000002": [],            # background only
}
SPLITS = {"train": ["2007_000032", "2008_000002"], "val": ["2007_000039"]}
SBD_LABELS = {"2008_000100": [8, 12], "2008_000101": [3], "2007_000039": [20]}
SBD_SPLITS = {"train": ["2008_000100", "2007_000039"], "val": ["2008_000101"]}


def write_voc(root: Path, with_sbd: bool = False) -> Path:
    """A VOC 2012 tree (and optionally SBD) with the images, masks and lists above."""
    voc = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for image_id, labels in MASKS.items():
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
            voc / "JPEGImages" / f"{image_id}.jpg")
        mask = np.zeros((20, 30), np.uint8)
        for k, v in enumerate(labels):
            mask[2 + 6 * k: 6 + 6 * k, 3:20] = v
            mask[1 + 6 * k, 3:20] = 255  # void border, as VOC draws around objects
        mask[0, :] = 255
        labels_image(mask).save(voc / "SegmentationClass" / f"{image_id}.png")
    for split, ids in SPLITS.items():
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    if with_sbd:
        dataset = root / "benchmark_RELEASE" / "dataset"
        (dataset / "cls").mkdir(parents=True)
        for image_id, labels in SBD_LABELS.items():
            seg = np.zeros((20, 30), np.uint8)
            savemat(dataset / "cls" / f"{image_id}.mat",
                    {"GTcls": {"Segmentation": seg, "CategoriesPresent": np.array(labels)}})
            if image_id not in MASKS:
                Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(
                    voc / "JPEGImages" / f"{image_id}.jpg")
        for split, ids in SBD_SPLITS.items():
            (dataset / f"{split}.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_reader_labels_from_masks(tmp_path):
    root = write_voc(tmp_path)
    for given in (root, root / "VOCdevkit", root / "VOCdevkit" / "VOC2012"):
        data = VOCDataset(given)
        assert data.root == root / "VOCdevkit" / "VOC2012"
    assert data.class_names == list(VOC_CLASSES) and data.num_classes == 20
    assert data.splits() == ["train", "val"]
    items = data.labelled_items("train")
    assert [(i.id, i.labels) for i in items] == [("2007_000032", (0, 14)), ("2008_000002", ())]
    seg = data.segmentation_items("val")
    assert seg[0].labels == (19,) and seg[0].mask == data.mask_path("2007_000039")
    mask = data.load_mask("2007_000039")
    assert mask.shape == (20, 30) and set(np.unique(mask)) == {0, 20, 255}
    assert data.load_image("2007_000039").shape == (20, 30, 3)


def test_train_aug_joins_voc_and_sbd(tmp_path):
    root = write_voc(tmp_path, with_sbd=True)
    data = VOCDataset(root, sbd=root / "benchmark_RELEASE")
    items = {i.id: i.labels for i in data.labelled_items("train_aug")}
    # VOC train + SBD train + SBD val, minus VOC val (2007_000039); SBD labels are 1-based
    assert items == {"2007_000032": (0, 14), "2008_000002": (), "2008_000100": (7, 11),
                     "2008_000101": (2,)}
    assert SBD(root).labels("2008_000100") == (7, 11)
    with pytest.raises(DcsmError, match="--sbd"):
        VOCDataset(root).labelled_items("train_aug")


ERRORS = {
    "no folder": (lambda r: r / "nothing", "does not exist"),
    "not voc": (lambda r: (r / "empty").mkdir() or r / "empty", "VOCdevkit/VOC2012"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_missing_root(tmp_path, case):
    make, needle = ERRORS[case]
    with pytest.raises(DcsmError, match=needle):
        VOCDataset(make(tmp_path))


def test_missing_parts_say_what_is_missing(tmp_path):
    root = write_voc(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    with pytest.raises(DcsmError, match=r"split 'test' not found: .*test\.txt.*train, val"):
        VOCDataset(root).ids("test")
    (voc / "JPEGImages" / "2007_000039.jpg").unlink()
    with pytest.raises(DcsmError, match=r"1 image\(s\) missing .*JPEGImages.*2007_000039\.jpg"):
        VOCDataset(root).labelled_items("val")
    (voc / "SegmentationClass" / "2008_000002.png").unlink()
    with pytest.raises(DcsmError, match=r"no mask in .*SegmentationClass.*2008_000002\.png"):
        VOCDataset(root).segmentation_items("train")
    with pytest.raises(DcsmError, match="--sbd"):
        VOCDataset(root).labelled_items("train")
    for sub in ("ImageSets/Segmentation/train.txt", "ImageSets/Segmentation/val.txt"):
        (voc / sub).unlink()
    (voc / "ImageSets" / "Segmentation").rmdir()
    with pytest.raises(DcsmError, match=r"is missing: ImageSets/Segmentation/"):
        VOCDataset(root)


def test_malformed_files_are_errors(tmp_path):
    root = write_voc(tmp_path)
    voc = root / "VOCdevkit" / "VOC2012"
    (voc / "ImageSets" / "Segmentation" / "bad.txt").write_text("2007_000032\n../etc/passwd\n")
    with pytest.raises(DcsmError, match="line 2"):
        VOCDataset(root).ids("bad")
    (voc / "ImageSets" / "Segmentation" / "empty.txt").write_text("\n")
    with pytest.raises(DcsmError, match="lists no images"):
        VOCDataset(root).ids("empty")
    labels_image(np.full((20, 30), 42, np.uint8)).save(voc / "SegmentationClass"
                                                       / "2007_000039.png")
    with pytest.raises(DcsmError, match="holds label 42, but the data set has 20 classes"):
        VOCDataset(root).segmentation_items("val")
    Image.new("RGB", (30, 20)).save(voc / "SegmentationClass" / "2007_000039.png")
    with pytest.raises(DcsmError, match="RGB image"):
        VOCDataset(root).load_mask("2007_000039")
    with pytest.raises(DcsmError, match="no SBD data"):
        SBD(tmp_path)


def test_data_check_command(tmp_path, capsys):
    root = write_voc(tmp_path)
    assert cli.main(["data", "check", "--data", str(root)]) == 0
    out = capsys.readouterr().out
    assert "20 classes" in out and "train: 2 images, 2 with masks, 2 image-level labels" in out
    assert cli.main(["data", "check", "--data", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not exist" in err


# ----------------------------------------------------------------------------- synthetic
def test_synthetic_samples_are_seeded_and_exact():
    a = generate_sample(sample_rng(0, "train", 5), 64)
    b = generate_sample(sample_rng(0, "train", 5), 64)
    c = generate_sample(sample_rng(1, "train", 5), 64)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.image, c.image)
    counts, overlaps = [], 0
    for i in range(40):
        s = generate_sample(sample_rng(7, "val", i), 64)
        instances = [v for v in np.unique(s.instances) if v > 0]
        counts.append(len(instances))
        assert 1 <= len(instances) <= 3 and s.classes
        for v in instances:  # every instance has exactly one class, its pixels exactly
            classes = np.unique(s.labels[s.instances == v])
            assert len(classes) == 1 and classes[0] > 0
        assert ((s.instances > 0) == (s.labels > 0)).all()
        assert [SYNTHETIC_CLASSES[v - 1] for v in np.unique(s.labels) if v] == s.classes
        overlaps += any(  # two objects touch: one covers part of the other
            (ndimage.binary_dilation(s.instances == u) & (s.instances == v)).any()
            for u in instances for v in instances if u < v)
    assert set(counts) == {1, 2, 3} and overlaps >= 4
    assert len(SYNTHETIC_CLASSES) >= 5


def test_write_synthetic_is_a_voc_tree(tmp_path, capsys):
    root = tmp_path / "syn"
    assert cli.main(["data", "synthetic", "--out", str(root), "--train", "3", "--val", "2",
                     "--size", "48", "--seed", "4", "--void-border", "1",
                     "--no-progress"]) == 0
    assert "3 train and 2 val images" in capsys.readouterr().out
    data = VOCDataset(root)
    assert data.class_names == list(SYNTHETIC_CLASSES)
    assert data.ids("trainval") == ["train_00000", "train_00001", "train_00002",
                                    "val_00000", "val_00001"]
    items = data.segmentation_items("val")
    for item in items:
        mask = data.load_mask(item.id)
        assert 255 in mask  # the void band was asked for
        expected = generate_sample(sample_rng(4, "val", int(item.id[-5:])), 48, 1)
        np.testing.assert_array_equal(mask, expected.labels)
        assert item.labels == tuple(SYNTHETIC_CLASSES.index(c) for c in expected.classes)
    again = tmp_path / "again"
    write_synthetic(again, SyntheticConfig(train=3, val=2, size=48, seed=4, void_border=1))
    for split in ("train", "val"):
        for i in data.ids(split):
            assert (again / "VOCdevkit/VOC2012/JPEGImages" / f"{i}.jpg").read_bytes() == \
                (root / "VOCdevkit/VOC2012/JPEGImages" / f"{i}.jpg").read_bytes()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    assert cli.main(["data", "synthetic", "--out", str(tmp_path / "other")]) == 2
    assert "not an earlier synthetic data set" in capsys.readouterr().err
