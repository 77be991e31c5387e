"""The command line: outputs, image modes and every error path (one line, exit 2, nothing left)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import dcsm
from dcsm import cli

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "src" / "dcsm" / "data" / "chelsea_coffee.png"
FAST = ["--scales", "1"]


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_explain_outputs_match_api(tmp_path, capsys):
    code, out, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--classes",
                          "tabby,espresso", "--per-layer", *FAST], capsys)
    assert code == 0, err
    d = tmp_path / "chelsea_coffee"
    assert leftovers(tmp_path) == ["chelsea_coffee"]
    summary = json.loads((d / "summary.json").read_text())
    assert summary["model"] == "efficientnet_lite0" and summary["method"] == "dcsm"
    assert summary["parameters"]["scales"] == [1.0]
    assert [c["name"] for c in summary["candidates"]] == ["tabby", "espresso"]
    assert [c["index"] for c in summary["candidates"]] == [281, 967]
    with np.load(d / "maps.npz") as npz:
        maps = {k: npz[k] for k in npz.files}
    assert sorted(maps) == ["espresso", "tabby"]
    expected = dcsm.explain(dcsm.load_model(), BUNDLED, classes=["tabby", "espresso"],
                            scales=[1.0])
    for name, m in maps.items():
        assert m.dtype == np.float32 and m.shape == (224, 448)
        assert m.min() >= 0.0 and m.max() <= 1.0
        np.testing.assert_allclose(m, expected.maps[name], atol=1e-6)
    for name in ("tabby.png", "espresso.png", "figure.png", "layers.png"):
        assert (d / name).stat().st_size > 0
    assert Image.open(d / "tabby.png").size == (448, 224)
    assert "tabby" in out and str(d) in out


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_image_modes(tmp_path, capsys, mode):
    rgb = Image.open(BUNDLED).resize((64, 48))
    img = rgb.convert("L").convert("I;16") if mode == "I;16" else rgb.convert(mode)
    path = tmp_path / f"in_{mode.replace(';', '')}.png"
    img.save(path)
    code, _, err = run(["explain", str(path), "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    with np.load(tmp_path / "o" / path.stem / "maps.npz") as npz:
        assert all(npz[k].shape == (48, 64) for k in npz.files)


def test_tuned_preset_and_min_contrast(tmp_path, capsys):
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--preset", "tuned",
                        "--classes", "tabby", "--min-contrast", "3"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "chelsea_coffee" / "summary.json").read_text())
    assert summary["parameters"]["min_contrast"] == 3
    assert summary["parameters"]["candidate_rule"] == "score_map"
    assert [c["name"] for c in summary["candidates"]] == ["tabby"]
    expected = dcsm.DistinctSaliency(dcsm.load_model(), preset="tuned", min_contrast=3).explain(
        BUNDLED, classes=["tabby"])
    assert [c["index"] for c in summary["contrast_classes"]] == [c.index for c in expected.contrast]
    assert "espresso" in [c["name"] for c in summary["contrast_classes"]]  # the other photo's class
    with np.load(tmp_path / "chelsea_coffee" / "maps.npz") as npz:
        np.testing.assert_allclose(npz["tabby"], expected.maps["tabby"], atol=1e-6)


def test_zero_map_warns_on_one_line(tmp_path, capsys):
    """Contrasted with its look-alikes ("tiger cat", "Egyptian cat"), which respond more strongly
    on the whole cat, "tabby" has no distinct map left under the strongest-other contrast at
    EfficientNet-Lite0's stride-16 blocks (with the look-alikes kept in the top-up; the default
    skips them, and the map is back; and on the image alone: the mirror image's map is not
    zero)."""
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--preset", "tuned",
                        "--classes", "tabby", "--min-contrast", "4", "--no-merge-lookalikes",
                        "--no-flip", "--no-propagate",
                        "--layers", ",".join(f"block{i}" for i in range(5, 11))], capsys)
    assert code == 0, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcsm: warning: the distinct map of 'tabby'")
    assert "tiger cat" in lines[0]
    with np.load(tmp_path / "chelsea_coffee" / "maps.npz") as npz:
        assert npz["tabby"].max() == 0.0
    with pytest.warns(dcsm.DcsmWarning, match="'tabby' is zero everywhere"):
        dcsm.DistinctSaliency(dcsm.load_model(), preset="tuned", min_contrast=4,
                              merge_lookalikes=False, flip=False, propagate=False,
                              layers=[f"block{i}" for i in range(5, 11)]).explain(
            BUNDLED, classes=["tabby"])
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path / "merged"),
                        "--preset", "tuned", "--classes", "tabby", "--min-contrast", "4",
                        "--layers", ",".join(f"block{i}" for i in range(5, 11))], capsys)
    assert code == 0 and err == ""
    with np.load(tmp_path / "merged" / "chelsea_coffee" / "maps.npz") as npz:
        assert npz["tabby"].max() > 0.1
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path / "paper"),
                        "--classes", "tabby", "--min-contrast", "4", "--preset", "paper",
                        *FAST], capsys)
    assert code == 0 and err == ""  # the paper's sum contrast keeps a map


def test_models_lists_offline_models(capsys):
    code, out, _ = run(["models"], capsys)
    assert code == 0
    names = [line.split()[0] for line in out.splitlines()]
    assert names == ["efficientnet_lite0", "efficientnet_lite2", "squeezenet1_1",
                     "torchvision:<arch>", "timm:<name>", "checkpoint:<path>"]


def corrupt_file(tmp_path: Path) -> str:
    p = tmp_path / "broken.png"
    p.write_bytes(BUNDLED.read_bytes()[:300])
    return str(p)


BAD = {
    "missing image": (lambda t: [str(t / "nope.png")], "does not exist"),
    "corrupt image": (lambda t: [corrupt_file(t)], "broken.png"),
    "unknown model": (lambda t: [str(BUNDLED), "--model", "nosuchnet"], "unknown model"),
    "unknown class": (lambda t: [str(BUNDLED), "--classes", "tabby,unicorn"], "unicorn"),
    "class index": (lambda t: [str(BUNDLED), "--classes", "1000"], "out of range"),
    "unknown layer": (lambda t: [str(BUNDLED), "--layers", "conv9_9"], "conv9_9"),
    "zero scale": (lambda t: [str(BUNDLED), "--scales", "0"], "scales"),
    "text scale": (lambda t: [str(BUNDLED), "--scales", "big"], "big"),
    "negative alpha": (lambda t: [str(BUNDLED), "--alpha", "-1"], "alpha"),
    "nan alpha": (lambda t: [str(BUNDLED), "--alpha", "nan"], "nan"),
    "top-k zero": (lambda t: [str(BUNDLED), "--top-k", "0"], "top-k"),
    "threshold": (lambda t: [str(BUNDLED), "--threshold", "2"], "threshold"),
    "method": (lambda t: [str(BUNDLED), "--method", "magic"], "magic"),
    "device": (lambda t: [str(BUNDLED), "--device", "cuda:7"], "cuda"),
    "torchvision weights": (lambda t: [str(BUNDLED), "--model", "torchvision:vgg16"],
                            "--weights"),
    "missing weights": (lambda t: [str(BUNDLED), "--weights", str(t / "w.pth")],
                        "does not exist"),
    "same stem": (lambda t: [str(BUNDLED), str(BUNDLED)], "share"),
    "min-contrast zero": (lambda t: [str(BUNDLED), "--min-contrast", "0"], "min-contrast"),
    "min-contrast baseline": (lambda t: [str(BUNDLED), "--method", "gradcam", "--min-contrast",
                                         "3"], "dcsm method only"),
    "gamma zero": (lambda t: [str(BUNDLED), "--gamma", "0"], "gamma"),
    "gamma baseline": (lambda t: [str(BUNDLED), "--method", "gradcam", "--gamma", "2"],
                       "dcsm method only"),
    "gate negative": (lambda t: [str(BUNDLED), "--gate", "-1"], "gate must be a number"),
    "gate baseline": (lambda t: [str(BUNDLED), "--method", "simonyan", "--gate", "1"],
                      "dcsm method only"),
    "flip baseline": (lambda t: [str(BUNDLED), "--method", "simonyan", "--no-flip"],
                      "dcsm method only"),
    "unknown reduction": (lambda t: [str(BUNDLED), "--reduce", "median"], "median"),
}


def test_default_preset_additions_are_options(tmp_path, capsys):
    """--no-flip, --no-propagate, --gamma, --gate and --reduce reach the explainer: the maps are
    those of the API with the same settings, and summary.json says so."""
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), "--classes",
                        "tabby,espresso", "--no-flip", "--no-propagate", "--gamma", "1.5",
                        "--gate", "0.5", "--reduce", "grad_act", "--no-pictures"], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "chelsea_coffee" / "summary.json").read_text())
    params = summary["parameters"]
    assert (params["flip"], params["propagate"], params["gamma"], params["gate"],
            params["reduce"]) == (False, None, 1.5, 0.5, "grad_act")
    expected = dcsm.explain(dcsm.load_model(), BUNDLED, classes=["tabby", "espresso"],
                            flip=False, propagate=False, gamma=1.5, gate=0.5,
                            reduce="grad_act")
    with np.load(tmp_path / "chelsea_coffee" / "maps.npz") as npz:
        for name in ("tabby", "espresso"):
            np.testing.assert_allclose(npz[name], expected.maps[name], atol=1e-6)


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, case):
    make_args, needle = BAD[case]
    out_dir = tmp_path / "out"
    code, out, err = run(["explain", *FAST, *make_args(tmp_path), "--out", str(out_dir)], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert needle in lines[0]
    assert "Traceback" not in err
    assert leftovers(out_dir) == []


def test_failure_while_writing_leaves_nothing(tmp_path, capsys, monkeypatch):
    import dcsm.outputs

    def boom(*args, **kwargs):
        raise dcsm.DcsmError("disk full")

    # dcsm.outputs writes the figures with the save_figure it imported from dcsm.io
    monkeypatch.setattr(dcsm.outputs, "save_figure", boom)
    code, _, err = run(["explain", str(BUNDLED), "--out", str(tmp_path), *FAST], capsys)
    assert code == 2 and "disk full" in err
    assert leftovers(tmp_path) == []


def test_rerun_replaces_previous_output(tmp_path, capsys):
    args = ["explain", str(BUNDLED), "--out", str(tmp_path), *FAST]
    assert run([*args, "--classes", "tabby,espresso"], capsys)[0] == 0
    assert run([*args, "--classes", "espresso"], capsys)[0] == 0
    d = tmp_path / "chelsea_coffee"
    assert not (d / "tabby.png").exists()
    with np.load(d / "maps.npz") as npz:
        assert npz.files == ["espresso"]
    assert leftovers(tmp_path) == ["chelsea_coffee"]


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "dcsm", "explain", "--out"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_working_resolution_options(tmp_path, capsys):
    args = ["explain", str(BUNDLED), "--classes", "tabby,espresso", *FAST]
    code, _, err = run([*args, "--out", str(tmp_path / "a"), "--max-side", "112"], capsys)
    assert code == 0, err
    d = tmp_path / "a" / "chelsea_coffee"
    summary = json.loads((d / "summary.json").read_text())
    assert summary["parameters"]["max_side"] == 112
    with np.load(d / "maps.npz") as npz:
        tabby = npz["tabby"]
    assert tabby.shape == (224, 448)
    # the maps of the image shrunk to 112 pixels, enlarged: smooth at the full size
    ref = dcsm.explain(dcsm.load_model(), str(BUNDLED), classes=["tabby", "espresso"],
                       scales=[1.0], max_side=112)
    np.testing.assert_allclose(tabby, ref.maps["tabby"], atol=1e-6)
    assert tabby[:, :224].sum() > 0.9 * tabby.sum()
    code, _, err = run([*args, "--out", str(tmp_path / "b"), "--full-resolution",
                        "--precision", "bfloat16"], capsys)
    assert code == 0, err
    assert "dcsm: full resolution 448x224: about" in err and "GiB" in err
    summary = json.loads((tmp_path / "b" / "chelsea_coffee" / "summary.json").read_text())
    assert summary["parameters"]["max_side"] is None
    assert summary["parameters"]["precision"] == "bfloat16"


@pytest.mark.parametrize("extra,message", [
    (["--max-side", "16"], "expected an integer >= 32"),
    (["--max-side", "200", "--full-resolution"], "not allowed with argument"),
    (["--precision", "int8"], "invalid choice"),
    (["--device", "meta"], "device 'meta' cannot run a model"),  # a shape-only device
    (["--crf-iterations", "100000000"], "from 0 to 1000"),  # segment only: see below
])
def test_working_resolution_errors(tmp_path, capsys, extra, message):
    command = "segment" if extra[0].startswith("--crf") else "explain"
    code, out, err = run([command, str(BUNDLED), "--out", str(tmp_path / "o"), *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
