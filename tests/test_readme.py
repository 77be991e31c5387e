"""The README's Python examples run as written, in a temporary directory (nothing is written into
the checkout), and print or hold what the README says they do."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_has_two_setup_commands_first():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def _check_api(out: str, ns: dict, tmp: Path) -> None:
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert set(lines) == {"tabby", "espresso"}
    cat_left = float(lines["tabby"].split()[-1])
    cup_left = float(lines["espresso"].split()[-1])
    assert cat_left > 0.95 and cup_left < 0.1
    assert [c.name for c in ns["result"].candidates] == ["espresso", "tiger cat"]  # "auto"
    assert list(ns["simonyan"].maps) == ["tabby", "espresso"]


def _check_own_model(out: str, ns: dict, tmp: Path) -> None:
    # "tabby, espresso: (224, 448) each"
    assert out.strip() == "{'tabby': (224, 448), 'espresso': (224, 448)}"
    assert list(ns["vit_maps"].maps) == ["tabby", "espresso"]


def _check_tensor_batch(out: str, ns: dict, tmp: Path) -> None:
    # "(2, 2, 224, 448) on batch's device, in [0, 1]"
    assert out.strip() == "torch.Size([2, 2, 224, 448]) [[281, 967], [967, 281]]"
    maps = ns["out"].maps
    assert maps.device == ns["batch"].device and 0 <= float(maps.min()) <= float(maps.max()) <= 1


def _check_batch_run(out: str, ns: dict, tmp: Path) -> None:
    assert out.strip() == "1 0 0 []"  # done, skipped, failed, failures
    written = tmp / "out" / "batch" / "chelsea_coffee"  # "-> out/batch/chelsea_coffee/"
    assert (written / "maps.npz").is_file()
    with np.load(written / "maps.npz") as maps:
        assert sorted(maps.files) == ["espresso", "tabby"]


def _check_segmentation(out: str, ns: dict, tmp: Path) -> None:
    first = ns["dcsm"].segment(ns["result"])  # the block's first, default segmentation
    labels = first.labels
    assert labels.dtype == np.uint8 and labels.shape == (224, 448)
    assert set(np.unique(labels)) <= {0, 1, 2}
    assert (first.masks["tabby"] == (labels == 1)).all()
    # the cat is the left photo, the cup the right one
    assert (labels[:, :224] == 1).sum() > 10 * (labels[:, 224:] == 1).sum()
    assert (labels[:, 224:] == 2).sum() > 10 * (labels[:, :224] == 2).sum()
    assert set(ns["baseline"].regions) == {"tabby", "espresso"}


def _check_quantus(out: str, ns: dict, tmp: Path) -> None:
    # each class's map lies mostly on its own half of the photo, as Quantus measures it
    scores = [float(v) for v in out.strip().strip("[]").split(",")]
    assert len(scores) == 2 and all(0.9 < v <= 1.0 for v in scores)
    assert ns["scores"][0] == pytest.approx(scores[0], abs=0.005)


CHECKS = {  # a line of the block -> what its run must show
    "for c in result.candidates:": _check_api,
    "vit = torchvision.models.VisionTransformer": _check_own_model,
    "batch = torch.cat(": _check_tensor_batch,
    "report = run(explainer, items,": _check_batch_run,
    "seg = dcsm.segment(result)": _check_segmentation,
    "metric = quantus.RelevanceMassAccuracy(": _check_quantus,
}
#: Blocks that need an optional package (an extra): skipped where it is not installed.
NEEDS = {"import quantus": "quantus"}


def test_every_python_block_is_checked():
    blocks = python_blocks()
    assert sorted(i for i, b in enumerate(blocks) for key in CHECKS if key in b) == \
        list(range(len(blocks)))


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_example_runs(index, monkeypatch, capsys, tmp_path):
    # The examples name files as the README's readers do, relative to a checkout: give them the
    # package data through a link and let them write into the temporary directory.
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    block = python_blocks()[index]
    for line, package in NEEDS.items():
        if line in block:
            pytest.importorskip(package)
    ns: dict = {}
    exec(compile(block, f"README.md[python {index}]", "exec"), ns)
    out = capsys.readouterr().out
    (check,) = [f for key, f in CHECKS.items() if key in block]
    check(out, ns, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "src"}
