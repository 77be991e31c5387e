"""``dcsm batch``: inputs, sharding, the manifest, resuming after SIGKILL, corrupt images, ranks.

The end-to-end tests use the default offline model at one scale on small images, one torch
thread per process (outputs are compared bit for bit, so every run uses the same kernels).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from batch_helpers import (  # noqa: F401  (names the other batch tests import from here too)
    BUNDLED,
    FAST,
    ROOT,
    SIZES,
    assert_same_outputs,
    batch_cmd,
    env,
    make_images,
    read_outputs,
    records,
)
from PIL import Image

from dcsm import cli
from dcsm.batch import inputs, manifest, shard
from dcsm.batch.runner import remove_leftovers
from dcsm.errors import DcsmError


def complete(d: Path) -> bool:
    """An output directory holds every file an explanation writes."""
    summary = json.loads((d / "summary.json").read_text())
    files = {"maps.npz", "summary.json", "figure.png", *summary["map_images"].values()}
    with np.load(d / "maps.npz") as npz:
        names = set(npz.files)
    return files <= {p.name for p in d.iterdir()} and names == set(summary["map_images"])


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_images(tmp_path_factory.mktemp("batch_inputs") / "imgs")


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> tuple[Path, dict]:
    """One uninterrupted single-process run (a subprocess, as the others)."""
    out = tmp_path_factory.mktemp("batch_ref") / "out"
    proc = subprocess.run(batch_cmd(str(images), "--out", str(out), *FAST), env=env(),
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "7 done, 0 already done, 0 failed" in proc.stdout
    return out, read_outputs(out)


# ------------------------------------------------------------------------- inputs
def test_discover_folder_names_and_order(tmp_path):
    folder = make_images(tmp_path / "imgs")
    (folder / ".hidden.png").write_bytes(b"x")
    (folder / "notes.txt").write_text("not an image")
    (folder / ".cache").mkdir()
    (folder / ".cache" / "img9.png").write_bytes(b"x")
    (folder / "out").mkdir()
    (folder / "out" / "img8.png").write_bytes(b"x")
    items = inputs.discover(folder, exclude=folder / "out")
    assert [it.key for it in items] == [
        "img0.png", "img1.png", "img2.png", "img3.png", "img4.png", "img5.png", "sub/img0.jpg"]
    assert [it.name for it in items] == [
        "img0", "img1", "img2", "img3", "img4", "img5", "sub__img0"]
    assert items[-1].path == folder / "sub" / "img0.jpg"


def test_names_of_clashing_stems():
    items = [inputs.InputItem(k, Path(k)) for k in
             ["b/cat.jpg", "a/cat.jpg", "a/Cat.png", "dog.png", "/abs/x/.dot.png", "../up/y.png"]]
    named = {it.key: it.name for it in inputs.assign_names(items)}
    assert named == {"../up/y.png": "y", "/abs/x/.dot.png": "_.dot", "a/Cat.png": "a__Cat_png",
                     "a/cat.jpg": "a__cat_jpg", "b/cat.jpg": "b__cat", "dog.png": "dog"}
    same = inputs.assign_names([inputs.InputItem(k, Path(k))
                                for k in ["a__b.png", "a/b.png", "c/b.png"]])
    assert [(it.key, it.name) for it in same] == [
        ("a/b.png", "a__b_png"), ("a__b.png", "a__b_png-2"), ("c/b.png", "c__b")]


def test_discover_list_file(tmp_path):
    folder = make_images(tmp_path / "imgs")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two images\nimgs/img3.png\n\n{folder / 'img1.png'}\nimgs/img3.png\n"
                       "imgs/missing.png\n")
    items = inputs.discover(listing)
    assert [it.name for it in items] == ["img1", "img3", "missing"]
    assert items[1].path == tmp_path / "imgs" / "img3.png"
    assert [it.key for it in inputs.discover(folder / "img2.png")] == ["img2.png"]


def test_discover_errors(tmp_path):
    with pytest.raises(DcsmError, match="does not exist"):
        inputs.discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DcsmError, match="no images found"):
        inputs.discover(tmp_path / "empty")
    (tmp_path / "bin.lst").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DcsmError, match="UTF-8"):
        inputs.discover(tmp_path / "bin.lst")


def test_registered_source_comes_first(tmp_path, monkeypatch):
    monkeypatch.setattr(inputs, "_SOURCES", [])

    def voc(spec, exclude):
        if not spec.startswith("fake:"):
            return None
        return [inputs.InputItem(f"{i}.jpg", tmp_path / f"{i}.jpg") for i in ("b", "a")]

    inputs.register_source(voc)
    assert [it.name for it in inputs.discover("fake:train")] == ["a", "b"]


# ------------------------------------------------------------------------- shards
@pytest.mark.parametrize("world", [1, 2, 3, 7, 10])
def test_shards_partition_the_list(world):
    items = list(range(23))
    parts = [shard.shard(items, shard.Rank(r, world)) for r in range(world)]
    assert sorted(sum(parts, [])) == items
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_rank_from_environment(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert shard.from_env() == shard.Rank(3, 4, 1)
    assert shard.from_env(0, 2) == shard.Rank(0, 2, 1)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(DcsmError, match="outside"):
        shard.from_env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(DcsmError, match="not an integer"):
        shard.from_env()
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name)
    assert shard.from_env() == shard.Rank(0, 1, 0)
    assert shard.pick_device("cpu", shard.Rank()) == "cpu"
    assert not shard.Group(shard.Rank()).active


# ------------------------------------------------------------------------- manifest
def test_manifest_settings_and_partial_lines(tmp_path):
    m = manifest.Manifest(tmp_path, 0)
    fp = m.check_settings({"scales": [1.0], "model": "m"})
    assert m.check_settings({"model": "m", "scales": [1.0]}) == fp
    with pytest.raises(DcsmError, match=r"scales: \[1.0\] -> \[1.0, 1.2\].*--force"):
        m.check_settings({"scales": [1.0, 1.2], "model": "m"})
    fp2 = m.check_settings({"scales": [1.0, 1.2], "model": "m"}, force=True)
    assert fp2 != fp
    assert json.loads(m.settings_path.read_text())["fingerprint"] == fp2
    (tmp_path / "a").mkdir()
    m.open()
    m.write("done", key="a.png", output="a", fingerprint=fp2)
    m.write("done", key="b.png", output="b", fingerprint=fp2)
    m.write("done", key="c.png", output="c", fingerprint=fp)
    m.close()
    with m.path.open("ab") as f:
        f.write(b'{"event": "done", "key": "d.png", "output": "d", "fingerp')  # killed here
    state = m.state(fp2)
    assert sorted(state.done) == ["a.png", "b.png"]
    assert m.is_done(state, "a.png", "a") and not m.is_done(state, "b.png", "b")
    assert not m.is_done(state, "a.png", "other")
    m.open()  # the cut line is ended, so the next record stays readable
    m.write("failed", key="e.png", output="e", fingerprint=fp2, reason="bad")
    with pytest.raises(DcsmError, match="another dcsm batch run"):
        manifest.Manifest(tmp_path, 0).open()
    m.close()
    assert list(m.state(fp2).failed) == ["e.png"]


def test_leftovers_are_removed_for_own_names_only(tmp_path):
    for name in (".a.partial-0123456789ab", ".a.trash-0123456789ab", ".b.partial-0123456789ab",
                 ".a.partial-short"):
        (tmp_path / name).mkdir()
    assert remove_leftovers(tmp_path, {"a"}) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [".a.partial-short",
                                                          ".b.partial-0123456789ab"]


# ------------------------------------------------------------------------- end to end
def test_outputs_equal_explain(reference, images, tmp_path, capsys):
    out, outputs = reference
    assert sorted(outputs) == ["img0", "img1", "img2", "img3", "img4", "img5", "sub__img0"]
    assert all(complete(out / name) for name in outputs)
    code = cli.main(["explain", str(images / "img3.png"), "--out", str(tmp_path),
                     "--scales", "1", "--classes", "tabby,espresso"])
    assert code == 0, capsys.readouterr().err
    assert_same_outputs({"img3": read_outputs(tmp_path)["img3"]}, {"img3": outputs["img3"]})
    recs = records(out)
    assert [r["event"] for r in recs] == ["start", *["done"] * 7, "end"]
    assert recs[0]["device"] == "cpu" and recs[0]["pending"] == 7


def test_two_ranks_torchrun_equal_single_process(reference, images, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "2", "-m", "dcsm", "batch", str(images), "--out", str(out), *FAST]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "7 of 7 images: 7 done" in proc.stdout  # summed over ranks through gloo
    assert_same_outputs(read_outputs(out), reference[1])
    by_rank = {0: set(), 1: set()}
    for r in records(out):
        if r["event"] == "done":
            by_rank[r["rank"]].add(r["key"])
    keys = sorted(inputs.discover(images), key=lambda it: it.key)
    assert by_rank[0] == {it.key for it in keys[0::2]}
    assert by_rank[1] == {it.key for it in keys[1::2]}


def test_manual_shards_in_turn_equal_single_process(reference, images, tmp_path, capsys):
    out = tmp_path / "out"
    for r in range(3):
        code = cli.main(["batch", str(images), "--out", str(out), *FAST, "--rank", str(r),
                         "--world-size", "3", "--workers", "0"])
        assert code == 0, capsys.readouterr().err
    assert_same_outputs(read_outputs(out), reference[1])
    code = cli.main(["batch", str(images), "--out", str(out), *FAST])  # one rank now
    assert code == 0
    assert "7 of 7 images: 0 done, 7 already done, 0 failed" in capsys.readouterr().out


def test_sigkill_then_rerun_gives_uninterrupted_outputs(reference, images, tmp_path, capsys):
    out = tmp_path / "out"
    log = (tmp_path / "log.txt").open("w")
    proc = subprocess.Popen(batch_cmd(str(images), "--out", str(out), *FAST), env=env(),
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        done = [r for r in records(out) if r["event"] == "done"] if out.exists() else []
        partial = [p for p in out.iterdir() if ".partial-" in p.name] if done else []
        if done and partial:  # killed while an image's directory is being written
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    log.close()
    assert killed, (tmp_path / "log.txt").read_text()
    assert proc.returncode == -signal.SIGKILL
    visible = [p for p in out.iterdir() if not p.name.startswith(".")]
    assert 1 <= len(visible) < 7
    assert all(complete(d) for d in visible)  # nothing half-written looks like an output
    assert any(".partial-" in p.name for p in out.iterdir())

    code = cli.main(["batch", str(images), "--out", str(out), *FAST])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".dcsm-batch"]
    assert_same_outputs(read_outputs(out), reference[1])
    start = [r for r in records(out) if r["event"] == "start"][-1]
    assert start["skipped"] >= 1 and start["leftovers_removed"] >= 1
    assert start["skipped"] + start["pending"] == 7


def test_corrupt_images_are_recorded_and_skipped(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    src = Image.open(BUNDLED).convert("RGB")
    src.resize((64, 48)).save(folder / "good1.png")
    src.resize((48, 64)).save(folder / "good2.png")
    (folder / "garbage.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    src.resize((64, 64)).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    args = ["batch", str(folder), "--out", str(out), *FAST]
    code = cli.main(args)
    captured = capsys.readouterr()
    assert code == 1
    assert "2 done, 0 already done, 2 failed" in captured.out
    assert "garbage.jpg: failed: cannot read image" in captured.err
    failed = {r["key"]: r for r in records(out) if r["event"] == "failed"}
    assert sorted(failed) == ["garbage.jpg", "truncated.png"]
    assert "not a recognised image format" in failed["garbage.jpg"]["reason"]
    assert failed["truncated.png"]["stage"] == "read" and failed["truncated.png"]["reason"]
    assert sorted(p.name for p in out.iterdir()) == [".dcsm-batch", "good1", "good2"]

    code = cli.main(args)  # failures are retried, done images skipped
    assert code == 1 and "0 done, 2 already done, 2 failed" in capsys.readouterr().out
    (folder / "garbage.jpg").unlink()
    src.resize((64, 64)).save(folder / "truncated.png")
    code = cli.main(args)
    assert code == 0 and "1 done, 2 already done, 0 failed" in capsys.readouterr().out


def test_other_settings_are_refused_unless_forced(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(BUNDLED).convert("RGB").resize((64, 48)).save(folder / "one.png")
    out = tmp_path / "out"
    assert cli.main(["batch", str(folder), "--out", str(out), *FAST]) == 0
    capsys.readouterr()
    code = cli.main(["batch", str(folder), "--out", str(out), *FAST, "--alpha", "2"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "parameters.alpha: 1.0 -> 2.0" in err and "--force" in err
    code = cli.main(["batch", str(folder), "--out", str(out), *FAST, "--alpha", "2", "--force"])
    assert code == 0 and "1 done" in capsys.readouterr().out
    summary = json.loads((out / "one" / "summary.json").read_text())
    assert summary["parameters"]["alpha"] == 2.0


def test_segment_outputs_equal_dcsm_segment(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(BUNDLED).convert("RGB").resize((96, 48)).save(folder / "pair.png")
    out = tmp_path / "out"
    code = cli.main(["batch", str(folder), "--out", str(out), *FAST, "--segment",
                     "--crf-iterations", "3"])
    assert code == 0, capsys.readouterr().err
    code = cli.main(["segment", str(folder / "pair.png"), "--out", str(tmp_path / "seg"),
                     "--scales", "1", "--classes", "tabby,espresso", "--crf-iterations", "3"])
    assert code == 0
    got, want = read_outputs(out), read_outputs(tmp_path / "seg")
    assert "labels.png" in got["pair"] and "masks.npz" in got["pair"]
    assert_same_outputs(got, want)
    settings = json.loads((out / ".dcsm-batch" / "settings.json").read_text())["settings"]
    assert settings["segmentation"]["segmenter"] == "crf"
    assert settings["segmentation"]["parameters"]["iterations"] == 3


def test_no_pictures_writes_the_data_only(tmp_path, capsys):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.open(BUNDLED).convert("RGB").resize((96, 48)).save(folder / "pair.png")
    seg = ["--segment", "--crf-iterations", "3"]
    full, bare = tmp_path / "full", tmp_path / "bare"
    assert cli.main(["batch", str(folder), "--out", str(full), *FAST, *seg]) == 0
    assert cli.main(["batch", str(folder), "--out", str(bare), *FAST, *seg,
                     "--no-pictures"]) == 0
    code = cli.main(["segment", str(folder / "pair.png"), "--out", str(tmp_path / "seg"),
                     "--scales", "1", "--classes", "tabby,espresso", "--crf-iterations", "3",
                     "--no-pictures"])
    assert code == 0
    capsys.readouterr()
    got, want = read_outputs(bare)["pair"], read_outputs(full)["pair"]
    data = {"maps.npz", "summary.json", "labels.png", "masks.npz"}
    assert set(got) == data and data < set(want) and "figure.png" in want
    assert_same_outputs({"pair": {f: got[f] for f in data - {"summary.json"}}},
                        {"pair": {f: want[f] for f in data - {"summary.json"}}})
    summary, with_pictures = got["summary.json"], want["summary.json"]
    assert "map_images" not in summary and "map_images" in with_pictures
    assert summary["segmentation"]["files"] == {"labels": "labels.png", "masks": "masks.npz"}
    assert summary["candidates"] == with_pictures["candidates"]
    assert_same_outputs({"pair": got}, read_outputs(tmp_path / "seg"))  # = dcsm segment's
    # the pictures are part of the outputs' settings: a rerun with them is refused unforced,
    # while a default run keeps the fingerprint it had before the option existed
    assert cli.main(["batch", str(folder), "--out", str(bare), *FAST, *seg]) == 2
    assert "other settings (pictures (gone))" in capsys.readouterr().err
    settings = json.loads((full / ".dcsm-batch" / "settings.json").read_text())["settings"]
    assert "pictures" not in settings


@pytest.mark.parametrize("args, message", [
    (["{tmp}/missing", "--out", "{tmp}/o"], "does not exist"),
    (["{tmp}/empty", "--out", "{tmp}/o"], "no images found"),
    (["{tmp}/empty", "--out", "{tmp}/empty"], "must not be the input folder"),
    (["{tmp}/imgs", "--out", "{tmp}/o", "--classes", "nonsense-class"], "nonsense-class"),
    (["{tmp}/imgs", "--out", "{tmp}/o", "--workers", "-1"], "--workers"),
])
def test_errors_are_one_line_exit_2(tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "imgs").mkdir()
    Image.open(BUNDLED).convert("RGB").resize((40, 40)).save(tmp_path / "imgs" / "a.png")
    code = cli.main(["batch", *(a.format(tmp=tmp_path) for a in args), "--scales", "1"])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and message in err


def test_progress_bar_and_status_lines():
    import io

    from dcsm.batch.progress import Progress

    stream = io.StringIO()  # not a terminal: status lines instead of the bar
    p = Progress(3, "dcsm batch", None, stream, log_every=0.0)
    p.step()
    p.step(failed=True)
    p.message("a failure")
    p.close()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("dcsm batch: 1/3 images, ") and "img/s" in lines[0]
    assert lines[1].endswith("left, 1 failed") and lines[2] == "a failure"
    stream = io.StringIO()
    p = Progress(4, "rank 0/2", True, stream)
    p.step()
    p.step(failed=True)
    p.close()
    text = stream.getvalue()
    assert "rank 0/2" in text and "2/4" in text and "img/s" in text and "1 failed" in text


def test_voc_split_source(tmp_path):
    from dcsm.batch.inputs import discover

    root = tmp_path / "VOCdevkit" / "VOC2012"
    (root / "JPEGImages").mkdir(parents=True)
    (root / "ImageSets" / "Segmentation").mkdir(parents=True)
    for image_id in ("2007_000002", "2007_000001"):
        Image.new("RGB", (16, 12), (10, 20, 30)).save(root / "JPEGImages" / f"{image_id}.jpg")
    (root / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n2007_000001\n")
    items = discover(f"voc:{tmp_path}:val")
    assert [i.key for i in items] == ["2007_000001", "2007_000002"]
    assert [i.name for i in items] == ["2007_000001", "2007_000002"]
    assert items[0].path == root / "JPEGImages" / "2007_000001.jpg"
    with pytest.raises(DcsmError, match="split 'test' not found"):
        discover(f"voc:{tmp_path}:test")
    with pytest.raises(DcsmError, match="voc:ROOT:SPLIT"):
        discover("voc:val")
    with pytest.raises(DcsmError, match="does not exist"):
        discover(f"voc:{tmp_path / 'nope'}:val")
