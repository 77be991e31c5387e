"""Names a user or a model hands over never choose where dcsm writes, and never lose a map:
image names that are ``.``, ``..``, device names or control characters; classes that differ
only in case, take a file name dcsm writes, or hold ``/`` and NUL; existing folders that are not
earlier dcsm outputs; models whose scores or gradients are NaN or infinite; strict JSON."""

from __future__ import annotations

import json
import math
import random
import unicodedata
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import dcsm
from dcsm import cli
from dcsm.errors import DcsmError

# Classes a model file can carry: case twins, a name dcsm writes itself, a path, NULs.
ODD_CLASSES = ["Cat", "cat", "figure", "../../x", "a\x00b", "a\x00c"]
ODD_IMAGES = ["..png", ".png", "....png", "CON.png", "con.tar.png", "a\x01b.png", "nul .png",
              "x\x1b[2J.png"]
WINDOWS_DEVICES = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(10)),
                   *(f"LPT{i}" for i in range(10))}


def strict_json(text: str) -> object:
    """``json.loads`` that refuses ``NaN``, ``Infinity`` and ``-Infinity`` (RFC 8259)."""
    def refuse(token: str) -> object:
        raise ValueError(f"not strict JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def run(args: list[str], capsys) -> tuple[int, str, list[str]]:
    code = cli.main(args)
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` (relative, POSIX) with a file's bytes, None for a folder."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def picture(path: Path, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path, format="PNG")
    return path


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory, tiny):
    """A ``checkpoint:`` model (a very narrow small_vgg) whose classes have odd names."""
    return tiny.narrow_checkpoint(tmp_path_factory.mktemp("odd-model"), list(ODD_CLASSES))


def broken_checkpoint(folder: Path, value: float) -> str:
    """A ``checkpoint:`` model whose classifier bias is ``value`` (NaN or infinite)."""
    from dcsm.pipeline.adapters.checkpoint import model_record, save_checkpoint
    from dcsm.pipeline.adapters.fcn import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("small_vgg", 3, config={
        "widths": [4, 4, 6, 6, 8], "convs": [1, 1, 1, 1, 1], "fc": 8})
    with torch.no_grad():
        last = [m for m in backbone.model.modules() if isinstance(m, nn.Conv2d)][-1]
        last.bias.fill_(value)
    path = folder / f"broken-{value}.pt"
    save_checkpoint(path, model_record(backbone, ["a", "b", "c"], history=[{"epoch": 1}]))
    return f"checkpoint:{path}"


def fast(model: str) -> list[str]:
    return ["--model", model, "--scales", "1", "--max-side", "64"]


# ----------------------------------------------------------------------------- the rule
def check_safe(name: str) -> None:
    assert name and name not in (".", "..")
    assert not name.startswith(".") and not name.endswith((".", " "))
    assert name == name.strip()
    assert not any(c in '/\\<>:"|?*' for c in name), name
    assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp") for c in name)
    assert name.split(".")[0].rstrip(" ").upper() not in WINDOWS_DEVICES, name
    assert len(name.encode("utf-8")) <= 150


@pytest.mark.parametrize(("name", "expected"), [
    (".", "unnamed"), ("..", "unnamed"), ("", "unnamed"), ("...", "unnamed"), (" . ", "unnamed"),
    (".png", "_.png"), (".hidden", "_.hidden"), ("CON", "CON_"), ("con.tar.gz", "con_.tar.gz"),
    ("Lpt9", "Lpt9_"), ("NUL .txt", "NUL _.txt"), ("COM10", "COM10"), ("CONSOLE", "CONSOLE"),
    ("a\x00b", "a_b"), ("a\x01b", "a_b"), ("tab\there", "tab_here"), ("../../x", "_.._.._x"),
    ("a/b\\c", "a_b_c"), ('w<i>n:d"o|w?s*', "w_i_n_d_o_w_s_"), ("trailing. . ", "trailing"),
    ("\u202egnp.exe", "_gnp.exe"), ("tiger cat", "tiger cat"), ("naïve", "naïve"),
    ("IMG 0001", "IMG 0001"), ("a..b", "a..b"),
])
def test_safe_name(name, expected):
    from dcsm.io.names import safe_name

    assert safe_name(name) == expected
    check_safe(safe_name(name))
    assert safe_name(safe_name(name)) == safe_name(name)


def test_safe_name_properties_over_random_names(tmp_path):
    """Random names from an alphabet of the dangerous characters: every result is one safe
    path component that stays in its folder, and the rule is idempotent."""
    from dcsm.io.names import safe_name

    rng = random.Random(19)
    alphabet = ["."] * 6 + [" "] * 3 + ["/", "\\", "\x00", "\x01", "\n", "\u202e", "\u200b",
                                         ":", "*", "é", "e\u0301", "猫", "A", "c", "o", "n",
                                         "C", "O", "N", "1", "L", "P", "T", "-", "_", "\ud800"]
    for _ in range(3000):
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        if rng.random() < 0.2:
            name = rng.choice(["CON", "nul", "Aux", "com7", "LPT1"]) + name
        safe = safe_name(name)
        check_safe(safe)
        assert safe_name(safe) == safe
        assert (tmp_path / safe).parent == tmp_path
        assert (tmp_path / safe).resolve().parent == tmp_path.resolve()
    assert len(safe_name("猫" * 400).encode()) <= 150  # cut at a character boundary
    assert safe_name("猫" * 400) == "猫" * 50


def test_unique_names_ignore_case_and_avoid_reserved():
    from dcsm.io.names import unique_names

    names = unique_names(["Cat", "cat", "CAT", "cat-2", "Figure", "ok"], reserved=["figure"])
    assert names == ["Cat", "cat-2", "CAT-3", "cat-2-2", "Figure-2", "ok"]
    assert len({n.casefold() for n in names}) == len(names)
    # the same name in two Unicode forms is one file on macOS: kept apart too
    assert unique_names(["caf\u00e9", "cafe\u0301"]) == ["caf\u00e9", "caf\u00e9-2"]


def test_output_names_of_odd_images():
    from dcsm.io.names import output_names

    keys = ["..png", ".png", "....png", "CON.png", "a\x01b.png", "Cat.png", "cat.png", "x/y.png"]
    names = output_names(keys)
    assert names[1] == "_.png" and names[3] == "CON_" and names[4] == "a_b" and names[7] == "y"
    assert len({n.casefold() for n in names}) == len(keys)
    for n in names:
        check_safe(n)
    assert output_names(["..png"]) == ["unnamed"]


# ----------------------------------------------------------------------------- the CLI, images
@pytest.mark.parametrize("command", ["explain", "segment"])
def test_odd_image_names_never_touch_out_itself(odd_model, tmp_path, capsys, command):
    """Every odd name becomes its own folder inside ``--out``; the user's files there and
    beside it survive byte for byte (before, ``..png`` made ``--out`` itself the image's folder
    and the folder replacement deleted it)."""
    images = tmp_path / "images"
    images.mkdir()
    out = tmp_path / "results"
    out.mkdir()
    (out / "notes.txt").write_text("the user's own file\n")
    (out / "mine").mkdir()
    (out / "mine" / "data.bin").write_bytes(b"\x00\x01")
    (tmp_path / "beside.txt").write_text("next to --out\n")
    before = tree(tmp_path)
    paths = [picture(images / name, i) for i, name in enumerate(ODD_IMAGES)]
    code, stdout, err = run([command, *map(str, paths), "--out", str(out), *fast(odd_model)],
                            capsys)
    assert code == 0, err
    after = tree(tmp_path)
    for key, value in before.items():  # nothing that was there changed
        assert after.get(key, "gone") == value, key
    folders = sorted(p.name for p in out.iterdir() if p.name not in ("notes.txt", "mine"))
    assert len(folders) == len(ODD_IMAGES)
    for name in folders:
        check_safe(name)
        summary = strict_json((out / name / "summary.json").read_text(encoding="utf-8"))
        assert Path(summary["image"]).name in ODD_IMAGES
    assert {Path(strict_json((out / n / "summary.json").read_text())["image"]).name
            for n in folders} == set(ODD_IMAGES)
    assert {"CON_", "_.png", "a_b", "con_.tar", "nul_", "x_[2J"} <= set(folders)
    assert {"__png", "____png"} <= set(folders)  # ..png and ....png: both "unnamed" first
    assert not any(".partial-" in p.name or ".trash-" in p.name for p in tmp_path.rglob("*"))
    assert "\x1b" not in stdout and "\x01" not in stdout  # names escaped on the terminal


def test_images_differing_only_in_case_get_distinct_folders(odd_model, tmp_path, capsys):
    for sub in ("a", "b"):
        (tmp_path / sub).mkdir()
    paths = [picture(tmp_path / "a" / "Cat.png", 1), picture(tmp_path / "b" / "cat.png", 2),
             picture(tmp_path / "a" / "DOG.png", 3), picture(tmp_path / "a" / "dog.png", 4)]
    out = tmp_path / "out"
    code, _, err = run(["explain", *map(str, paths), "--out", str(out), *fast(odd_model)],
                       capsys)
    assert code == 0, err
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 4 and len({f.casefold() for f in folders}) == 4, folders
    images = {strict_json((out / f / "summary.json").read_text())["image"] for f in folders}
    assert images == {str(p) for p in paths}  # each image kept its own folder


def test_a_foreign_folder_is_never_replaced(odd_model, tmp_path, capsys):
    """A folder of the user's own named like an image's output: one line, exit 2, nothing
    changed; an earlier dcsm output of the image is replaced; one a user added a file to is
    not."""
    image = picture(tmp_path / "photo.png")
    out = tmp_path / "out"
    (out / "photo").mkdir(parents=True)
    (out / "photo" / "thesis.tex").write_text("months of work\n")
    before = tree(tmp_path)
    code, stdout, err = run(["explain", str(image), "--out", str(out), *fast(odd_model)],
                            capsys)
    assert code == 2 and len(err) == 1 and err[0].startswith("dcsm: error: "), err
    assert "out/photo" in err[0] and "not an earlier dcsm output" in err[0]
    assert tree(tmp_path) == before and stdout == ""

    (out / "photo" / "thesis.tex").unlink()
    (out / "photo").rmdir()
    for _ in range(2):  # an earlier output of dcsm is replaced
        code, _, err = run(["explain", str(image), "--out", str(out), *fast(odd_model)],
                           capsys)
        assert code == 0, err
    (out / "photo" / "my notes.txt").write_text("added by hand\n")
    code, _, err = run(["explain", str(image), "--out", str(out), *fast(odd_model)], capsys)
    assert code == 2 and len(err) == 1, err
    assert (out / "photo" / "my notes.txt").read_text() == "added by hand\n"


def test_a_link_in_place_of_the_output_folder_is_refused(odd_model, tmp_path, capsys):
    image = picture(tmp_path / "photo.png")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "photo").symlink_to(elsewhere, target_is_directory=True)
    code, _, err = run(["explain", str(image), "--out", str(out), *fast(odd_model)], capsys)
    assert code == 2 and len(err) == 1, err
    assert (out / "photo").is_symlink() and (elsewhere / "keep.txt").read_text() == "keep\n"


def test_batch_names_odd_images_safely_and_keeps_a_foreign_folder(odd_model, tmp_path, capsys):
    """``dcsm batch`` names through the same rule (``CON.png`` -> ``CON_``, case twins apart),
    and an image whose folder is the user's is recorded as failed, the folder untouched."""
    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(["CON.png", "Cat.png", "cat.png", "plain.png", "a\x01b.png"]):
        picture(images / name, i)
    out = tmp_path / "out"
    (out / "plain").mkdir(parents=True)
    (out / "plain" / "report.docx").write_bytes(b"user data")
    code, _, err = run(["batch", str(images), "--out", str(out), "--workers", "0",
                        "--writers", "0", *fast(odd_model)], capsys)
    assert code != 0, err  # one image failed
    assert (out / "plain" / "report.docx").read_bytes() == b"user data"
    assert sorted(p.name for p in (out / "plain").iterdir()) == ["report.docx"]
    made = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert made == ["CON_", "Cat_png", "a_b", "cat_png-2", "plain"], made
    records = [strict_json(line) for line in
               (out / ".dcsm-batch" / "rank-0.jsonl").read_text().splitlines()]
    failed = [r for r in records if r["event"] == "failed"]
    assert len(failed) == 1 and "not an earlier dcsm output" in failed[0]["reason"]


def test_outputs_of_an_older_dcsm_are_recognised(tmp_path):
    """A folder written before ``map_keys`` existed (no such entry) is still an earlier output
    and may be replaced; a folder with a subfolder or a stray file is not."""
    from dcsm.outputs import is_previous_output

    old = tmp_path / "old"
    old.mkdir()
    (old / "summary.json").write_text(json.dumps({
        "image": "x.png", "model": "m", "method": "dcsm", "candidates": [],
        "map_images": {"tabby": "tabby.png", "figure": "figure_.png"}}))
    for name in ("maps.npz", "figure.png", "tabby.png", "figure_.png", "labels.png"):
        (old / name).write_bytes(b"")
    assert is_previous_output(old)
    (old / "extra").mkdir()
    assert not is_previous_output(old)
    (old / "extra").rmdir()
    (old / "holiday.png").write_bytes(b"")
    assert not is_previous_output(old)
    assert not is_previous_output(tmp_path / "missing")
    (tmp_path / "plain.txt").write_text("x")
    assert not is_previous_output(tmp_path / "plain.txt")


def test_atomic_dir_refuses_before_any_work_and_again_at_the_rename(tmp_path):
    from dcsm.io import atomic_dir

    final = tmp_path / "final"
    final.mkdir()
    (final / "keep.txt").write_text("keep")
    ran = []
    with pytest.raises(DcsmError, match="not an earlier dcsm output"), \
            atomic_dir(final, replace=lambda p: False):
        ran.append(1)
    assert ran == [] and (final / "keep.txt").read_text() == "keep"
    # the folder appears while the block runs: refused at the rename, the new one discarded
    other = tmp_path / "other"
    with pytest.raises(DcsmError, match="not an earlier dcsm output"), \
            atomic_dir(other, replace=lambda p: False) as tmp:
        (tmp / "new.txt").write_text("new")
        other.mkdir()
        (other / "keep.txt").write_text("keep")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final", "other"]
    assert [p.name for p in other.iterdir()] == ["keep.txt"]


# ----------------------------------------------------------------------------- the classes
def _flat_head(classes: int) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, classes))


def _smooth_image(h: int = 40, w: int = 48) -> np.ndarray:
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


def test_odd_class_names_keep_every_map_under_a_safe_key(tmp_path):
    """Six classes, six maps back by their real names: the npz members are safe names (no
    ``/``, no NUL, distinct without regard to case), ``summary.json`` maps them back, the class
    pictures never take ``figure.png``."""
    from dcsm.outputs import load_maps, output_dir, write_explanation

    explainer = dcsm.DistinctSaliency(_flat_head(len(ODD_CLASSES)), layers=["2"],
                                      scales=[1.0], class_names=ODD_CLASSES)
    result = explainer.explain(_smooth_image(), classes=list(range(len(ODD_CLASSES))))
    assert list(result.maps) == ODD_CLASSES
    with output_dir(tmp_path, "image") as tmp:
        write_explanation(result, tmp, "image.png")
    folder = tmp_path / "image"
    with zipfile.ZipFile(folder / "maps.npz") as archive:
        members = archive.namelist()
    assert len(members) == len(ODD_CLASSES)
    assert len({m.casefold() for m in members}) == len(members)
    for member in members:
        assert member.endswith(".npy")
        check_safe(member[:-len(".npy")])
    summary = strict_json((folder / "summary.json").read_text(encoding="utf-8"))
    assert sorted(summary["map_keys"].values()) == sorted(ODD_CLASSES)
    assert summary["map_keys"]["Cat"] == "Cat" and summary["map_keys"]["cat-2"] == "cat"
    assert summary["map_keys"]["figure"] == "figure"  # a key, not a file: unchanged
    maps = load_maps(folder)
    assert list(maps) == ODD_CLASSES
    for name in ODD_CLASSES:
        np.testing.assert_array_equal(maps[name], result.maps[name])
    assert not np.array_equal(maps["a\x00b"], maps["a\x00c"])
    files = summary["map_images"]
    assert sorted(files) == sorted(ODD_CLASSES)
    stems = [f.removesuffix(".png") for f in files.values()]
    assert len({s.casefold() for s in stems}) == len(stems)
    assert "figure" not in {s.casefold() for s in stems}
    for f in files.values():
        assert (folder / f).is_file()
    names = {p.name for p in folder.iterdir()}
    assert names == {"maps.npz", "summary.json", "figure.png", *files.values()}


def test_odd_class_names_through_the_command_line(odd_model, tmp_path, capsys):
    image = picture(tmp_path / "photo.png")
    out = tmp_path / "out"
    code, stdout, err = run(["segment", str(image), "--out", str(out), "--classes",
                             "0,1,2,3,4,5", *fast(odd_model)], capsys)
    assert code == 0, err
    folder = out / "photo"
    summary = strict_json((folder / "summary.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in summary["candidates"]] == ODD_CLASSES
    from dcsm.outputs import load_maps

    maps = load_maps(folder)
    assert sorted(maps) == sorted(ODD_CLASSES)
    with np.load(folder / "masks.npz") as masks:  # the same keys as maps.npz
        assert sorted(masks.files) == sorted(summary["map_keys"])
    assert sorted(p.name for p in out.iterdir()) == ["photo"]
    assert not (tmp_path / "x.npy").exists() and not (tmp_path.parent / "x.npy").exists()


# ----------------------------------------------------------------------------- NaN and inf
class _Poison(torch.autograd.Function):
    """Identity forward; the backward multiplies by ``value`` (NaN or inf): finite scores,
    non-finite gradients."""

    @staticmethod
    def forward(ctx, x, value):  # noqa: ANN001, ANN205
        ctx.value = value
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        return grad * ctx.value, None


class _PoisonedGradients(nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):  # noqa: ANN001, ANN201
        return _Poison.apply(x, self.value)


class _Scaled(nn.Module):
    """Multiplies the logits by ``value``: NaN or infinite scores."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def forward(self, x):  # noqa: ANN001, ANN201
        return x * self.value


def _model(poison: nn.Module, where: str) -> nn.Module:
    net = _flat_head(3)
    layers = list(net)
    if where == "scores":
        layers.append(poison)
    else:  # between the recorded layer (index 2) and the head
        layers.insert(3, poison)
    return nn.Sequential(*layers)


class _no_warnings:  # noqa: N801 - a context manager used like a function
    """Fails when a DcsmWarning (look-alike classes) is issued inside the block."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: object) -> None:
        self._catch.__exit__(*exc)
        assert not [w for w in self._seen if issubclass(w.category, dcsm.DcsmWarning)]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("method", ["dcsm", "simonyan", "gradcam"])
def test_non_finite_scores_are_one_error(value, method):
    model = _model(_Scaled(value), "scores")
    explainer = dcsm.make_explainer(model, method, layers=["2"], class_names=["a", "b", "c"],
                                    **({"scales": [1.0]} if method == "dcsm" else {}))
    with _no_warnings(), pytest.raises(DcsmError, match="returned scores that are NaN or "
                                                          "infinite"):
        explainer.explain(_smooth_image(), classes=[0, 1])


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("method", ["dcsm", "simonyan", "gradcam"])
def test_non_finite_gradients_are_one_error(value, method):
    model = _model(_PoisonedGradients(value), "gradients")
    explainer = dcsm.make_explainer(model, method, layers=["2"], class_names=["a", "b", "c"],
                                    **({"scales": [1.0]} if method == "dcsm" else {}))
    # the scores are finite: only the gradients are not
    assert torch.isfinite(model(torch.zeros(1, 3, 16, 16))).all()
    with _no_warnings(), pytest.raises(DcsmError, match="gradients .* NaN or infinite"):
        explainer.explain(_smooth_image(), classes=[0, 1])


def test_require_finite_finds_one_bad_value_and_takes_huge_ones_for_finite():
    from dcsm.pipeline.gradients import require_finite

    huge = [torch.full((8,), 3e38), torch.full((4, 4), 6e4, dtype=torch.float16),
            torch.full((3,), 1e300, dtype=torch.float64)]
    require_finite(huge, "x")  # sums that overflow, values that do not: accepted
    for bad in (math.nan, math.inf, -math.inf):
        for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            t = torch.rand(2, 5, 7, 3).to(dtype)
            t[1, 4, 6, 2] = bad
            with pytest.raises(DcsmError, match="^scores are NaN or infinite"):
                require_finite([torch.zeros(3), t], "scores are")


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("command", ["explain", "segment"])
def test_non_finite_model_exits_2_and_writes_nothing(tmp_path, capsys, value, command):
    model = broken_checkpoint(tmp_path, value)
    image = picture(tmp_path / "photo.png")
    out = tmp_path / "out"
    code, stdout, err = run([command, str(image), "--out", str(out), *fast(model)], capsys)
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("dcsm: error: model ") and "NaN" in err[0], err
    assert not out.exists() or list(out.iterdir()) == []


# ----------------------------------------------------------------------------- strict JSON
def test_summary_json_is_strict(odd_model, tmp_path, capsys):
    image = picture(tmp_path / "photo.png")
    code, _, err = run(["explain", str(image), "--out", str(tmp_path / "out"),
                        *fast(odd_model)], capsys)
    assert code == 0, err
    summary = strict_json((tmp_path / "out" / "photo" / "summary.json").read_text())
    assert all(math.isfinite(c["score"]) for c in summary["candidates"])


def test_the_json_writer_never_writes_nan(tmp_path):
    from dcsm.io import json_text, save_json

    with pytest.raises(ValueError, match="NaN or infinity"):
        save_json(tmp_path / "a.json", {"score": float("nan")})
    with pytest.raises(ValueError, match="NaN or infinity"):
        json_text([np.float32("inf")])
    assert not (tmp_path / "a.json").exists()
    value = {"miou": float("nan"), "per": [np.float64("-inf"), 0.5, np.float32(0.25)],
             "n": np.int64(3), "nested": {"x": np.array([1.0, np.nan])}}
    save_json(tmp_path / "b.json", value, nan_as_null=True)
    assert strict_json((tmp_path / "b.json").read_text()) == {
        "miou": None, "per": [None, 0.5, 0.25], "n": 3, "nested": {"x": [1.0, None]}}
    assert strict_json(json_text(value, indent=None, nan_as_null=True))["miou"] is None
    assert "\n" not in json_text(value, indent=None, nan_as_null=True)


def test_journal_lines_are_strict_json(tmp_path):
    from dcsm.io.records import Journal, read_records

    with Journal(tmp_path / "r.jsonl") as journal:
        journal.write("done", iou=float("nan"), path=tmp_path)
    text = (tmp_path / "r.jsonl").read_text()
    record = strict_json(text)
    assert record["iou"] is None and record["path"] == str(tmp_path)
    assert next(read_records(tmp_path / "r.jsonl"))["iou"] is None
