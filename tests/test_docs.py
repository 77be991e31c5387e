"""The documentation's code runs as written: every fenced block of README.md and of the site's
pages (docs/**/*.md) is run and checked here, or is marked as not run where the reader can see it.

The rules, by the block's language (its fence's first word):

* ``python``: run with ``exec`` in a temporary directory (nothing is written into the checkout),
  and what it prints or holds checked by the function of :data:`CHECKS` whose key is one of its
  lines; a block that needs an optional package (:data:`NEEDS`) is skipped where it is missing.
* ``sh``: every command (``\\`` continuations joined, ``#`` comments dropped) must be a ``dcsm``
  command; each runs in-process through ``dcsm.cli.main`` in a temporary directory and must exit
  with status 0, then :data:`SH_CHECKS` checks what the block wrote. The set-up block
  (``make demo``, ``make test``) is checked against the Makefile and CI instead of run.
* A ``python`` or ``sh`` block whose fence carries a title with "not run" (``title="needs a GPU
  (not run)"``, shown above the block on the site) is not run: synopses, commands that need a
  network, a GPU, a data set or minutes.
* ``text``: not code (equations, file trees, output); never run.

Any other fence, or a block that is neither run, checked nor marked, fails the test.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ ]*$",
                   flags=re.M | re.S)
NOT_RUN = re.compile(r'title="[^"]*not run[^"]*"')
LANGUAGES = ("python", "sh", "text")


@dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, whether it is marked, its code."""

    page: str
    line: int
    language: str
    marked: bool
    code: str
    copies: int = 0

    def __str__(self) -> str:
        more = f", +{self.copies} identical" if self.copies else ""
        return f"{self.page}:{self.line} ({self.language}{more})"


def pages() -> list[Path]:
    """README.md and every Markdown page of the site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks() -> list[Block]:
    found = []
    for path in pages():
        text = path.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            info = match["info"].strip()
            indent = len(match["indent"])
            code = "\n".join(line[indent:] for line in match["body"].splitlines()) + "\n"
            found.append(Block(str(path.relative_to(ROOT)), text.count("\n", 0, match.start()) + 1,
                               info.split()[0] if info else "", bool(NOT_RUN.search(info)),
                               code))
    return found


def runnable(language: str) -> list[Block]:
    """The blocks of ``language`` that run, each code once (the README repeats some pages)."""
    unique: dict[str, Block] = {}
    for b in blocks():
        if b.language == language and not b.marked:
            first = unique.setdefault(b.code, b)
            unique[b.code] = replace(first, copies=first.copies + (first is not b))
    return list(unique.values())


# -- python blocks -----------------------------------------------------------------------------


def _check_api(out: str, ns: dict, tmp: Path) -> None:
    lines = dict(line.split(" ", 1) for line in out.strip().splitlines())
    assert set(lines) == {"tabby", "espresso"}
    cat_left = float(lines["tabby"].split()[-1])
    cup_left = float(lines["espresso"].split()[-1])
    assert cat_left > 0.95 and cup_left < 0.1


def _check_configure_once(out: str, ns: dict, tmp: Path) -> None:
    assert out.strip() == "['espresso', 'tiger cat']"  # "auto", paper preset
    assert [c.name for c in ns["result"].candidates] == ["espresso", "tiger cat"]
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


CHECKS: dict[str, Callable[[str, dict, Path], None]] = {  # a line of the block -> its check
    "for c in result.candidates:": _check_api,
    "explainer = dcsm.DistinctSaliency(adapter, preset=\"paper\"": _check_configure_once,
    "vit = torchvision.models.VisionTransformer": _check_own_model,
    "batch = torch.cat(": _check_tensor_batch,
    "report = run(explainer, items,": _check_batch_run,
    "seg = dcsm.segment(result)": _check_segmentation,
    "metric = quantus.RelevanceMassAccuracy(": _check_quantus,
}
#: Blocks that need an optional package (an extra): skipped where it is not installed.
NEEDS = {"import quantus": "quantus"}


def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples name files as the docs' readers do, relative to a checkout: give them the
    # package data through a link and let them write into the temporary directory.
    (tmp_path / "src").symlink_to(ROOT / "src", target_is_directory=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("block", runnable("python"), ids=str)
def test_python_block_runs(block, monkeypatch, capsys, tmp_path):
    checks = [f for key, f in CHECKS.items() if key in block.code]
    assert len(checks) == 1, f"{block}: no check (or several) in CHECKS for this block"
    _in_tmp(tmp_path, monkeypatch)
    for line, package in NEEDS.items():
        if line in block.code:
            pytest.importorskip(package)
    ns: dict = {}
    exec(compile(block.code, str(block), "exec"), ns)
    checks[0](capsys.readouterr().out, ns, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} <= {"out", "src"}


# -- sh blocks ---------------------------------------------------------------------------------


def commands(code: str) -> list[list[str]]:
    """The block's commands as argument lists: continuations joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", code)
    return [args for line in joined.splitlines() if (args := shlex.split(line, comments=True))]


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def _check_setup(block: Block, tmp: Path, out: str) -> None:
    # Not run (it would set up .venv and run this test again): what it says must hold.
    assert commands(block.code) == [["make", "demo"], ["make", "test"]]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    test_recipe = makefile.split("\ntest:", 1)[1].split("\n\n", 1)[0]
    assert "pytest" in test_recipe and "mkdocs build --strict" in test_recipe
    assert "\ndemo:" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def _check_first_run(block: Block, tmp: Path, out: str) -> None:
    assert "efficientnet_lite0" in out  # `dcsm models`
    folder = tmp / "out" / "chelsea_coffee"
    # as the caption of the README's figure says: the model's own two classes
    assert [c["name"] for c in _summary(folder)["candidates"]] == ["espresso", "Egyptian cat"]
    with np.load(folder / "maps.npz") as maps:
        assert sorted(maps.files) == ["Egyptian cat", "espresso"]
        assert maps["espresso"].shape == (224, 448) and maps["espresso"].dtype == np.float32
    assert {"figure.png", "espresso.png", "Egyptian_cat.png"} <= {p.name for p in folder.iterdir()}


def _check_segment(block: Block, tmp: Path, out: str) -> None:
    folder = tmp / "out" / "chelsea_coffee"
    assert "segmentation" in _summary(folder)
    labels = np.asarray(Image.open(folder / "labels.png"))
    assert labels.shape == (224, 448) and set(np.unique(labels)) <= {0, 1, 2}
    assert (labels[:, :224] == 1).sum() > 10 * (labels[:, 224:] == 1).sum()  # the cat, left
    with np.load(folder / "masks.npz") as masks:
        assert sorted(masks.files) == ["espresso", "tabby"]
    assert (folder / "segmentation.png").is_file()


def _check_voc_models(block: Block, tmp: Path, out: str) -> None:
    assert "diningtable" in out and "person" in out


SH_CHECKS: dict[str, Callable[[Block, Path, str], None]] = {  # a line of the block -> its check
    "make demo": _check_setup,
    "dcsm explain src/dcsm/data/chelsea_coffee.png --out out\n": _check_first_run,
    "dcsm segment src/dcsm/data/chelsea_coffee.png --out out --classes tabby,espresso":
        _check_segment,
    "dcsm models --labels voc": _check_voc_models,
}


@pytest.mark.parametrize("block", runnable("sh"), ids=str)
def test_sh_block_runs(block, monkeypatch, capsys, tmp_path):
    checks = [f for key, f in SH_CHECKS.items() if key in block.code]
    assert len(checks) == 1, f"{block}: no check (or several) in SH_CHECKS for this block"
    if checks[0] is not _check_setup:
        from dcsm.cli import main

        _in_tmp(tmp_path, monkeypatch)
        for args in commands(block.code):
            assert args[0] == "dcsm", f"{block}: only dcsm commands run; mark the block"
            assert main(args[1:]) == 0, f"{block}: {shlex.join(args)} failed"
    checks[0](block, tmp_path, capsys.readouterr().out)


# -- every block is accounted for --------------------------------------------------------------


def test_every_block_is_run_or_marked():
    found = blocks()
    assert len(pages()) > 10 and len(found) > 20  # the pages and their blocks are found
    unknown = [str(b) for b in found if b.language not in LANGUAGES]
    assert not unknown, f"fences must be python, sh or text: {unknown}"
    for block in runnable("python"):
        assert sum(key in block.code for key in CHECKS) == 1, f"{block}: not checked"
    for block in runnable("sh"):
        assert sum(key in block.code for key in SH_CHECKS) == 1, f"{block}: not checked"


def test_readme_starts_with_the_two_setup_commands():
    first = next(b for b in blocks() if b.page == "README.md")
    assert first.language == "sh" and not first.marked
    assert commands(first.code) == [["make", "demo"], ["make", "test"]]


def test_every_check_is_used():
    codes = [b.code for b in blocks() if not b.marked]
    assert [key for key in [*CHECKS, *SH_CHECKS] if not any(key in c for c in codes)] == []


def test_readme_links_point_at_files():
    # mkdocs checks the site's links; the README is not part of the site, so its own links
    # (GitHub shows them) are checked here: every relative link names a file of the checkout.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+://", t)]
    assert len(local) > 10
    assert [t for t in local if not (ROOT / t).exists()] == []


def test_api_reference_covers_every_module():
    # docs/reference/*.md hold one `::: module` line per module; a module added or moved needs
    # its line there (mkdocs build --strict fails on a line whose module is gone).
    src = ROOT / "src"
    modules = {".".join(p.relative_to(src).with_suffix("").parts).removesuffix(".__init__")
               for p in (src / "dcsm").rglob("*.py")} - {"dcsm", "dcsm.__main__"}
    text = "\n".join(p.read_text(encoding="utf-8")
                     for p in sorted((ROOT / "docs" / "reference").glob("*.md")))
    listed = set(re.findall(r"^::: (\S+)", text, flags=re.M))
    assert sorted(modules - listed) == []


def test_sphinx_roles_become_optional_cross_references():
    pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("sphinx_roles", ROOT / "docs" / "sphinx_roles.py")
    roles = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(roles)
    assert roles.convert("See :func:`dcsm.explain` and :class:`~dcsm.pipeline.result.X`.") == (
        'See <autoref identifier="dcsm.explain" optional><code>dcsm.explain()</code></autoref>'
        ' and <autoref identifier="dcsm.pipeline.result.X" optional><code>X</code></autoref>.')
    assert roles.convert(":math:`M_c` is\n\n.. math::\n\n    a = b\n      + c\n\nafter") == (
        "`M_c` is\n\n\n```text\na = b\n  + c\n```\n\nafter")
    assert roles.convert("Example::\n\n    x = 1") == "Example:\n\n    x = 1"
    # several parameters in one entry: one entry each, where they are the object's parameters
    grouped = "Args:\n    a, b,\n        c: the size.\n    d: other."
    assert roles._grouped_parameters(grouped.splitlines(), {"a", "b", "c", "d"}) == [
        "Args:", "    a: the size.", "    b: as ``a``.", "    c: as ``a``.", "    d: other."]
    assert roles._grouped_parameters(grouped.splitlines(), {"d"}) == grouped.splitlines()
