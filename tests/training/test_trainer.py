"""Training: two iterations, a resume that matches an uninterrupted run, and the checkpoint as a
model for the explainer, the command line and the API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dcsm
from dcsm import cli
from dcsm.datasets import SYNTHETIC_CLASSES, SyntheticConfig, write_synthetic
from dcsm.errors import DcsmError
from dcsm.training import RunOptions, TrainConfig, build_backbone, load_checkpoint, train
from dcsm.training.data import ResizePlan, epoch_batches
from dcsm.training.models import parameter_groups

QUIET = {"progress": False, "log": lambda text: None}
# 4 training images in batches of 2: two iterations per epoch.
TINY = TrainConfig(batch_size=2, epochs=1, min_size=32, max_size=48, size_step=16, seed=5)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "syn"
    write_synthetic(root, SyntheticConfig(train=4, val=2, size=48, seed=1))
    return root


def weights(path):
    return load_checkpoint(path)["model"]


def test_two_iterations_then_resume_equals_uninterrupted(data_root, tmp_path):
    straight = train(data_root, tmp_path / "a", TINY, RunOptions(**QUIET))
    assert straight.finished and straight.iteration == 2 and straight.epochs_done == 1
    entry = straight.history[0]
    assert entry["iterations"] == 2 and 0 <= entry["val_map"] <= 1
    assert set(entry["val_ap"]) == set(SYNTHETIC_CLASSES)

    b = tmp_path / "b"
    first = train(data_root, b, TINY, RunOptions(max_iterations=1, **QUIET))
    assert not first.finished and first.iteration == 1 and first.history == []
    state = torch.load(b / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["iteration"]) == (0, 1, 1)
    # half an epoch is no model: nothing exported, and the resume state is not offered as one
    assert not (b / "model.pt").exists()
    for name in (f"checkpoint:{b}", f"checkpoint:{b / 'last.pt'}"):
        with pytest.raises(DcsmError, match="not completed an epoch.*--resume"):
            dcsm.load_model(name)
    with pytest.raises(DcsmError, match="--resume"):
        train(data_root, b, TINY, RunOptions(**QUIET))
    second = train(data_root, b, None, RunOptions(**QUIET), resume=True)
    assert second.finished and second.iteration == 2
    assert second.history[0]["val_map"] == pytest.approx(entry["val_map"])
    for path in ("last.pt", "model.pt"):
        ours, theirs = weights(b / path), weights(tmp_path / "a" / path)
        assert ours.keys() == theirs.keys()
        for k in ours:
            torch.testing.assert_close(ours[k], theirs[k], rtol=0, atol=1e-6, msg=k)
    history = json.loads((b / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    with pytest.raises(DcsmError, match="lr=0.001"):
        train(data_root, b, TrainConfig(lr=0.5), RunOptions(**QUIET), resume=True)
    assert not list(b.glob(".*partial*"))  # atomic saves leave no temporary files


def test_checkpoint_is_a_model(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    code = cli.main(["train", "--data", str(data_root), "--out", str(run), "--batch-size", "2",
                     "--epochs", "1", "--min-size", "32", "--max-size", "48", "--no-progress",
                     "--threads", "1"])
    assert code == 0, capsys.readouterr().err
    assert "epoch 1/1" in capsys.readouterr().out
    for name in (f"checkpoint:{run}", f"checkpoint:{run / 'model.pt'}",
                 f"checkpoint:{run / 'last.pt'}"):
        adapter = dcsm.load_model(name)
        assert adapter.class_names == list(SYNTHETIC_CLASSES)
        assert adapter.multilabel and adapter.pooling == "max"
        assert adapter.preprocess.mean == (127.5, 127.5, 127.5)
        assert adapter.default_layers == ["conv3_1", "conv3_2", "conv4_1", "conv4_2",
                                          "conv5_1", "conv5_2"]
    image = dcsm.load_image(data_root / "VOCdevkit/VOC2012/JPEGImages/val_00000.jpg")
    result = dcsm.explain(adapter, image, classes=["disc", "ring"], scales=[1, 1.4])
    assert set(result.maps) == {"disc", "ring"}
    assert all(m.shape == (48, 48) and m.min() >= 0 and m.max() <= 1
               for m in result.maps.values())
    seg = dcsm.segment(result)
    assert seg.labels.shape == (48, 48)
    x = adapter.preprocess(image)
    with torch.no_grad():
        score_map = adapter.model(x)
    assert score_map.shape[:2] == (1, 6)
    out = tmp_path / "explained"
    code = cli.main(["explain", str(data_root / "VOCdevkit/VOC2012/JPEGImages/val_00001.jpg"),
                     "--model", f"checkpoint:{run}", "--out", str(out), "--scales", "1"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "val_00001" / "summary.json").read_text())
    assert summary["model"] == f"checkpoint:{run}"
    assert cli.main(["models"]) == 0
    assert "checkpoint:<path>" in capsys.readouterr().out


def test_a_model_without_a_completed_epoch_is_refused(tmp_path, capsys):
    from dcsm.pipeline.adapters.checkpoint import epochs_completed, model_record, save_checkpoint

    backbone = build_backbone("small_vgg", 2, config={"widths": [4] * 5})
    untrained = tmp_path / "untrained.pt"
    save_checkpoint(untrained, model_record(backbone, ["a", "b"]))  # as dcsm 0.1 wrote it
    with pytest.raises(DcsmError, match="has not completed an epoch of training.*at least one"):
        dcsm.load_model(f"checkpoint:{untrained}")
    image = tmp_path / "x.png"
    Image.new("RGB", (40, 40), (90, 140, 30)).save(image)
    code = cli.main(["explain", str(image), "--model", f"checkpoint:{untrained}",
                     "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "not completed an epoch" in err, err
    trained = tmp_path / "trained.pt"
    save_checkpoint(trained, model_record(backbone, ["a", "b"], history=[{"epoch": 1}]))
    adapter = dcsm.load_model(f"checkpoint:{trained}")
    assert adapter.class_names == ["a", "b"] and "1 epochs" in adapter.description
    assert epochs_completed({"history": [{}, {}]}) == 2  # records without the "epochs" key


def test_train_into_a_folder_it_cannot_create(data_root, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = cli.main(["train", "--data", str(data_root), "--out", str(blocker / "run"),
                     "--batch-size", "2", "--epochs", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("dcsm: error: cannot create the run directory") and "Traceback" not in err


def test_checkpoint_errors(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    torch.save({"a": torch.zeros(1)}, tmp_path / "plain.pt")
    for path, needle in ((tmp_path / "none.pt", "does not exist"), (junk, "cannot read"),
                         (tmp_path / "plain.pt", "not a dcsm checkpoint")):
        with pytest.raises(DcsmError, match=needle):
            dcsm.load_model(f"checkpoint:{path}")
    code = cli.main(["train", "--data", str(tmp_path / "nodata"), "--out", str(tmp_path / "r")])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    code = cli.main(["train", "--out", str(tmp_path / "r2"), "--resume"])
    assert code == 2 and "does not exist" in capsys.readouterr().err
    with pytest.raises(DcsmError, match="min-size 64 is above max-size 48"):
        TrainConfig(min_size=64, max_size=48).for_backbone()
    with pytest.raises(DcsmError, match="small_vgg trains from scratch"):
        build_backbone("small_vgg", 3, "weights.pth")


def test_planned_batches_and_parameter_groups():
    plan = ResizePlan(32, 64, 16)
    a = epoch_batches(10, 4, epoch=2, seed=0, plan=plan)
    assert a == epoch_batches(10, 4, epoch=2, seed=0, plan=plan)
    assert a != epoch_batches(10, 4, epoch=3, seed=0, plan=plan)
    assert sorted(k[0] for batch in a for k in batch) == list(range(10))
    assert [len(b) for b in a] == [4, 4, 2]
    assert all(len({k[1] for k in b}) == 1 and b[0][1] in (32, 48, 64) for b in a)
    backbone = build_backbone("small_vgg", 3)
    backbone.pretrained = {n for n, _ in backbone.model.named_parameters()
                           if n.startswith("features")}
    groups = parameter_groups(backbone, 0.01, 0.1, 5e-4)
    by_name = {g["name"]: g for g in groups}
    assert by_name["pretrained"]["lr"] == pytest.approx(0.001)
    assert by_name["new"]["lr"] == pytest.approx(0.01)
    assert by_name["new_bias"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(backbone.model.parameters()))
    with torch.no_grad():
        out = backbone.model.eval()(torch.zeros(1, 3, 40, 56))
    assert out.shape == (1, 3, 2, 2)


def test_vgg16_backbone_names_and_learning_rates():
    with torch.device("meta"):  # the structure only: no memory, no initialisation time
        backbone = build_backbone("vgg16", 20)  # random weights: nothing is pretrained
    assert backbone.default_layers == [f"conv{b}_{i}" for b in (3, 4, 5) for i in (1, 2, 3)]
    assert backbone.layer_aliases["fc8"] == "head.6" and backbone.min_input == 224
    assert backbone.model.head[6].out_channels == 20 and not backbone.pretrained
    assert np.prod(backbone.model.head[0].weight.shape[1:]) == 512 * 7 * 7


def test_a_killed_runs_temporary_files_are_removed_unless_a_run_holds_the_folder(data_root,
                                                                                   tmp_path):
    fcntl = pytest.importorskip("fcntl", reason="the run lock is POSIX's")
    from dcsm.training.trainer import RUN_LOCK

    out = tmp_path / "run"
    out.mkdir()
    stale = [".last.partial-0123456789ab.pt", ".model.partial-a1b2c3d4e5f6.pt",
             ".history.partial-00000000ffff.json", ".labels.partial-abcdefabcdef.json"]
    # not what write_atomic leaves for a run's own files: a user's, or another pattern
    foreign = [".notes.partial-0123456789ab.txt", "last.partial-0123456789ab.pt",
               ".last.partial-0123.pt", "keep.pt"]
    for name in stale + foreign:
        (out / name).write_bytes(b"x")
    # Another live run holds the folder: refused, nothing removed.
    with (out / RUN_LOCK).open("ab") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(DcsmError, match="another dcsm train run is using"):
            train(data_root, out, TINY, RunOptions(max_iterations=1, **QUIET))
        assert all((out / name).exists() for name in stale)
    logged = []
    result = train(data_root, out, TINY, RunOptions(max_iterations=1, progress=False,
                                                     log=logged.append))
    assert result.iteration == 1
    assert not any((out / name).exists() for name in stale)
    assert all((out / name).exists() for name in foreign)
    assert f"removed 4 temporary file(s) an interrupted run left in {out}" in logged


def test_sigterm_saves_and_stops_like_ctrl_c(data_root, tmp_path, monkeypatch):
    import os
    import signal

    from dcsm.processes import Terminated
    from dcsm.training import trainer

    step = trainer._train_step

    def step_then_sigterm(run, x, y):  # SIGTERM arrives during the first batch
        if run.iteration == 0:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(run, x, y)

    monkeypatch.setattr(trainer, "_train_step", step_then_sigterm)
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated):
        train(data_root, out, TINY, RunOptions(**QUIET))
    assert signal.getsignal(signal.SIGTERM) is before
    state = torch.load(out / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["iteration"]) == (0, 1, 1)  # the batch saved
    monkeypatch.setattr(trainer, "_train_step", step)
    resumed = train(data_root, out, None, RunOptions(**QUIET), resume=True)
    assert resumed.finished and resumed.iteration == 2
