"""Scores against hand-computed values, and ``dcsm evaluate`` end to end on a tiny set."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.evaluation import (
    average_precision,
    confusion_matrix,
    iou_per_label,
    mean_average_precision,
    mean_iou,
    pixel_accuracy,
)

# Labels 0..4: background and four classes. Class 3 occurs nowhere and is never predicted;
# class 4 is predicted once but occurs nowhere; 255 is VOC's void and must be ignored.
TRUTH_A = np.array([[0, 1, 1],
                    [0, 255, 2]], np.uint8)
PRED_A = np.array([[0, 1, 2],
                   [1, 1, 2]], np.uint8)
TRUTH_B = np.array([[2, 2],
                    [0, 255]], np.uint8)
PRED_B = np.array([[2, 0],
                   [4, 0]], np.uint8)
# Counted by hand, rows truth, columns prediction (void pixels left out):
#   A: (0,0) 0->0, (0,1) 1->1, (0,2) 1->2, (1,0) 0->1, (1,2) 2->2
#   B: (0,0) 2->2, (0,1) 2->0, (1,0) 0->4
HAND = np.array([[1, 1, 0, 0, 1],
                 [0, 1, 1, 0, 0],
                 [1, 0, 2, 0, 0],
                 [0, 0, 0, 0, 0],
                 [0, 0, 0, 0, 0]])
# IoU = TP / (row + column - TP): 1/(3+2-1), 1/(2+2-1), 2/(3+3-2), nan, 0/(0+1-0)
HAND_IOU = [1 / 4, 1 / 3, 1 / 2, np.nan, 0.0]


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(TRUTH_A, PRED_A, 5) + confusion_matrix(TRUTH_B, PRED_B, 5)
    np.testing.assert_array_equal(cm, HAND)
    np.testing.assert_allclose(iou_per_label(cm), HAND_IOU, equal_nan=True)
    # the absent class (nan) is left out of the mean; the false-positive class (0) counts
    assert mean_iou(cm) == pytest.approx((1 / 4 + 1 / 3 + 1 / 2 + 0) / 4)
    assert pixel_accuracy(cm) == pytest.approx(4 / 8)


def test_void_is_ignored_whatever_is_predicted():
    truth = np.array([[255, 1], [255, 0]], np.uint8)
    a = confusion_matrix(truth, np.array([[0, 1], [1, 0]], np.uint8), 3)
    b = confusion_matrix(truth, np.array([[2, 1], [2, 0]], np.uint8), 3)
    np.testing.assert_array_equal(a, b)
    assert a.sum() == 2 and mean_iou(a) == 1.0


def test_bad_labels_and_shapes_are_errors():
    with pytest.raises(DcsmError, match="prediction holds label 7"):
        confusion_matrix(TRUTH_A, np.full((2, 3), 7, np.uint8), 5)
    with pytest.raises(DcsmError, match="ground truth holds label 9"):
        confusion_matrix(np.full((2, 3), 9, np.uint8), PRED_A, 5)
    with pytest.raises(DcsmError, match="ground truth"):
        confusion_matrix(TRUTH_A, PRED_B, 5)
    assert np.isnan(mean_iou(np.zeros((3, 3), np.int64)))


def test_average_precision_by_hand():
    scores = np.array([[0.9, 0.2], [0.8, 0.1], [0.7, 0.3], [0.1, 0.4]])
    targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])
    # class 0: positives at ranks 1 and 3: (1/1 + 2/3) / 2; class 1: no positive -> nan
    np.testing.assert_allclose(average_precision(scores, targets), [(1 + 2 / 3) / 2, np.nan],
                               equal_nan=True)
    assert mean_average_precision(scores, targets) == pytest.approx((1 + 2 / 3) / 2)


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny synthetic set and a model trained on it for two iterations."""
    from dcsm.datasets import SyntheticConfig, write_synthetic
    from dcsm.training import RunOptions, TrainConfig, train

    root = tmp_path_factory.mktemp("evaldata") / "syn"
    write_synthetic(root, SyntheticConfig(train=4, val=3, size=48, seed=3))
    run = root.parent / "run"
    train(root, run, TrainConfig(batch_size=2, epochs=1, min_size=32, max_size=48,
                                 val_split=None),
          RunOptions(progress=False, log=lambda text: None))
    return root, run


def test_evaluate_writes_metrics_predictions_and_table(tiny_run, tmp_path, capsys):
    root, run = tiny_run
    out = tmp_path / "eval"
    code = cli.main(["evaluate", "--data", str(root), "--split", "val", "--model",
                     f"checkpoint:{run}", "--out", str(out), "--scales", "1,1.5",
                     "--oracle-labels", "--methods",
                     "simonyan_grabcut,dcsm_no_subtract,dcsm_single_scale,dcsm_single_layer,"
                     "dcsm_crf,simonyan_crf", "--no-progress"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "| dcsm (full) + CRF |" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    names = ["background", "disc", "leaf", "tile", "star", "ring", "cross"]
    assert list(metrics["per_class_iou"]) == names
    assert metrics["method"] == "dcsm_crf"
    assert metrics["miou"] == metrics["methods"]["dcsm_crf"]["miou"]
    assert metrics["settings"]["oracle_labels"] is True
    assert metrics["settings"]["images"] == 3
    assert metrics["candidates"]["exact"] == 1.0  # oracle candidates are the truth
    groups = metrics["settings"]["images_by_classes_in_image"]
    assert set(groups) == {"one", "several"} and sum(groups.values()) == 3
    assert set(metrics["methods"]["dcsm_crf"]["miou_by_classes_in_image"]) == set(groups)
    assert metrics["settings"]["maps_layers"]["single_layer"] == ["conv4_2"]
    for m, r in metrics["methods"].items():
        cm = np.array(r["confusion"])
        assert r["miou"] == pytest.approx(mean_iou(cm)), m
    ids = (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text().split()
    for i in ids:
        pred = Image.open(out / "pred" / f"{i}.png")
        assert pred.mode == "P" and pred.size == (48, 48)
        assert np.asarray(pred).max() <= 6
        assert (out / "methods" / "simonyan_grabcut" / f"{i}.png").is_file()
    assert "Per-class IoU" in (out / "table.md").read_text()
    lines = (out / "images.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ids


def test_evaluate_errors_are_one_line(tiny_run, tmp_path, capsys):
    root, run = tiny_run
    cases = [
        (["--model", f"checkpoint:{run}", "--method", "simonyan"], "--methods"),
        (["--model", f"checkpoint:{run}", "--methods", "magic"], "unknown method 'magic'"),
        (["--model", "squeezenet1_1"], "not a class of the data set"),
        (["--model", f"checkpoint:{tmp_path / 'nope'}"], "does not exist"),
        ([], "needs --model"),
    ]
    for extra, needle in cases:
        code = cli.main(["evaluate", "--data", str(root), "--out", str(tmp_path / "e"),
                         "--no-progress", *extra])
        _, err = capsys.readouterr()
        assert code == 2 and needle in err and err.count("\n") == 1, (extra, err)
        assert not (tmp_path / "e").exists()


# ----------------------------------------------------------------------------- resumable runs
FAST_EVAL = ["--split", "val", "--scales", "1", "--oracle-labels", "--no-progress",
             "--methods", "simonyan_grabcut,dcsm_crf"]


def evaluate_cli(root, run, out, capsys, *extra):
    code = cli.main(["evaluate", "--data", str(root), "--model", f"checkpoint:{run}",
                     "--out", str(out), *FAST_EVAL, *extra])
    return code, *capsys.readouterr()


def scores(out):
    """metrics.json without the timings (which differ from run to run)."""
    metrics = json.loads((out / "metrics.json").read_text())
    for r in metrics["methods"].values():
        r.pop("seconds_per_image")
    return metrics


def no_partials(out):
    return [str(p) for p in out.rglob("*") if ".partial-" in p.name or ".trash-" in p.name]


@pytest.fixture(scope="module")
def uninterrupted(tiny_run, tmp_path_factory):
    root, run = tiny_run
    out = tmp_path_factory.mktemp("uninterrupted") / "eval"
    assert cli.main(["evaluate", "--data", str(root), "--model", f"checkpoint:{run}",
                     "--out", str(out), *FAST_EVAL]) == 0
    return out


def test_a_run_on_part_then_on_all_equals_an_uninterrupted_run(tiny_run, uninterrupted,
                                                                tmp_path, capsys):
    root, run = tiny_run
    out = tmp_path / "eval"
    code, _, err = evaluate_cli(root, run, out, capsys, "--limit", "2")
    assert code == 0, err
    part = json.loads((out / "metrics.json").read_text())
    assert part["settings"]["images"] == 2
    code, _, err = evaluate_cli(root, run, out, capsys)  # the rest of the split
    assert code == 0, err
    assert scores(out) == scores(uninterrupted)
    assert (out / "images.jsonl").read_text() == (uninterrupted / "images.jsonl").read_text()
    journal = [json.loads(line) for line in
               (out / ".dcsm-evaluate" / "records.jsonl").read_text().splitlines()]
    done = [r["id"] for r in journal if r["event"] == "done"]
    assert len(done) == 3 == len(set(done))  # the second run did only the third image
    assert [r["done"] for r in journal if r["event"] == "start"] == [0, 2]
    # a third run has nothing to do and writes the same scores
    code, _, err = evaluate_cli(root, run, out, capsys)
    assert code == 0 and scores(out) == scores(uninterrupted), err
    assert no_partials(out) == []


def test_other_settings_are_refused_unless_forced(tiny_run, uninterrupted, tmp_path, capsys):
    root, run = tiny_run
    out = tmp_path / "eval"
    assert evaluate_cli(root, run, out, capsys, "--limit", "1")[0] == 0
    code, _, err = evaluate_cli(root, run, out, capsys, "--crf-iterations", "2")
    assert code == 2 and err.count("\n") == 1, err
    assert "other settings" in err and "crf.iterations: 10 -> 2" in err and "--force" in err
    code, _, err = evaluate_cli(root, run, out, capsys, "--crf-iterations", "2", "--force")
    assert code == 0, err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["settings"]["crf"]["iterations"] == 2 and metrics["settings"]["images"] == 3
    code, _, err = evaluate_cli(root, run, out, capsys, "--force")  # back, starting over
    assert code == 0 and scores(out) == scores(uninterrupted), err


def copy_data(root, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(root, copy)
    return copy


def test_an_unreadable_mask_or_image_is_recorded_as_failed(tiny_run, uninterrupted, tmp_path,
                                                           capsys):
    root, run = tiny_run
    data = copy_data(root, tmp_path)
    voc = data / "VOCdevkit" / "VOC2012"
    ids = (voc / "ImageSets/Segmentation/val.txt").read_text().split()
    mask = voc / "SegmentationClass" / f"{ids[1]}.png"
    good_mask = mask.read_bytes()
    mask.write_bytes(good_mask[:40])  # truncated
    image = voc / "JPEGImages" / f"{ids[2]}.jpg"
    good_image = image.read_bytes()
    image.write_bytes(b"\x00junk")
    out = tmp_path / "eval"
    code, stdout, err = evaluate_cli(data, run, out, capsys)
    assert code == 1, err
    assert "1 images scored, 2 failed" in stdout
    lines = err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("dcsm evaluate: ") for line in lines), err
    metrics = json.loads((out / "metrics.json").read_text())
    failures = {f["id"]: f for f in metrics["failures"]}
    assert set(failures) == {ids[1], ids[2]}
    assert failures[ids[1]]["stage"] == "read" and "mask" in failures[ids[1]]["reason"]
    assert "cannot read image" in failures[ids[2]]["reason"]
    assert metrics["settings"]["images"] == 1 and metrics["settings"]["images_failed"] == 2
    assert [json.loads(line)["id"] for line in (out / "images.jsonl").read_text().splitlines()] \
        == [ids[0]]
    # repaired, the failed images are done by the next run, and the scores are complete
    mask.write_bytes(good_mask)
    image.write_bytes(good_image)
    code, _, err = evaluate_cli(data, run, out, capsys)
    assert code == 0, err
    fixed, reference = scores(out), scores(uninterrupted)
    assert fixed.pop("failures") == [] and reference.pop("failures") == []
    for key in ("methods", "miou", "per_class_iou", "candidates"):
        assert fixed[key] == reference[key]


@pytest.mark.parametrize("where", ["png", "metrics"])
def test_a_full_disk_is_one_line_and_the_rerun_completes(tiny_run, uninterrupted, tmp_path,
                                                         capsys, monkeypatch, where):
    import errno
    from pathlib import Path

    root, run = tiny_run
    out = tmp_path / "eval"
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "png":  # the label images of the second image
        real_save = Image.Image.save

        def save(self, fp, *args, **kwargs):
            if str(fp).endswith(".png") and "methods" in str(fp):
                calls["n"] += 1
                if calls["n"] == 3:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(self, fp, *args, **kwargs)

        monkeypatch.setattr(Image.Image, "save", save)
    else:
        real_write = Path.write_text

        def write_text(self, text, *args, **kwargs):
            if self.name.startswith(".metrics."):
                return full()
            return real_write(self, text, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", write_text)
    code, _, err = evaluate_cli(root, run, out, capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dcsm: error: cannot write") and "No space left on device" in err
    assert "Traceback" not in err and no_partials(out) == []
    assert not (out / "metrics.json").exists()
    monkeypatch.undo()
    code, _, err = evaluate_cli(root, run, out, capsys)
    assert code == 0, err
    assert scores(out) == scores(uninterrupted)


def test_an_evaluation_folder_of_an_earlier_dcsm_needs_force(tiny_run, tmp_path, capsys):
    root, run = tiny_run
    out = tmp_path / "eval"
    out.mkdir()
    (out / "metrics.json").write_text("{}")  # all-or-nothing runs left no records
    (out / "pred").mkdir()
    code, _, err = evaluate_cli(root, run, out, capsys, "--limit", "1")
    assert code == 2 and "without per-image records" in err and "--force" in err, err
    code, _, err = evaluate_cli(root, run, out, capsys, "--limit", "1", "--force")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["settings"]["images"] == 1
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    code, _, err = evaluate_cli(root, run, tmp_path / "other", capsys, "--force")
    assert code == 2 and "is not an earlier evaluation" in err, err  # --force never deletes
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_sigterm_stops_like_ctrl_c_and_the_rerun_completes(tiny_run, uninterrupted, tmp_path,
                                                            capsys, monkeypatch):
    import os
    import signal

    from dcsm.evaluation import compare

    write = compare._write_predictions
    calls = []

    def write_then_sigterm(*args, **kwargs):  # SIGTERM arrives while the 2nd image is written
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return write(*args, **kwargs)

    monkeypatch.setattr(compare, "_write_predictions", write_then_sigterm)
    root, run = tiny_run
    out = tmp_path / "eval"
    before = signal.getsignal(signal.SIGTERM)
    code, _, err = evaluate_cli(root, run, out, capsys)
    assert code == 143 and err.strip().splitlines()[-1] == "dcsm: terminated", err
    assert signal.getsignal(signal.SIGTERM) is before
    assert no_partials(out) == [] and not (out / "metrics.json").exists()
    monkeypatch.setattr(compare, "_write_predictions", write)
    code, _, err = evaluate_cli(root, run, out, capsys)
    assert code == 0 and scores(out) == scores(uninterrupted), err
    journal = [json.loads(line) for line in
               (out / ".dcsm-evaluate" / "records.jsonl").read_text().splitlines()]
    assert [r["done"] for r in journal if r["event"] == "start"] == [0, 1]
