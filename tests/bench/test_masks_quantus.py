"""``dcsm bench masks --quantus``: Quantus's metrics on the benchmark's own maps, pairs and void.

The data set is a tiny COCO split the tests write (RLE only, so no pycocotools): three 32 x 32
photos, one with a crowd region (void) over the motorcycle's strong region. The model is the
hand-built fully convolutional :class:`MaskMapNet`: a 1 x 1 convolution ``feat`` with one channel
per class, each channel multiplied by a fixed weight map ``m_c``; the adapter's mean pooling
makes class c's logit the mean of ``m_c * feat_c``. Its score's derivative at ``feat`` does not
depend on any weight, so dcsm's maps of it do not either (MPRT's rank correlation is 1).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dcsm.bench.masks import masks_benchmark
from dcsm.bench.methods import BenchMethod, get_methods
from dcsm.datasets.coco import CocoDataset
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters import as_adapter

S = 32
NAMES = ["car", "motorcycle", "tv"]
CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
              {"id": 4, "name": "motorcycle"}, {"id": 72, "name": "tv"},
              {"id": 99, "name": "unicorn"}]
METHODS = ("dcsm-paper", "gradcam")
LOCAL = ("RelevanceMassAccuracy", "RelevanceRankAccuracy", "AUC", "PointingGame")
# the model has no activation for the paper preset's guided back-propagation to guide
pytestmark = pytest.mark.filterwarnings("ignore:guided back-propagation found no activation")


@pytest.fixture()
def quantus():
    return pytest.importorskip("quantus")


def weight_maps() -> torch.Tensor:
    m = torch.empty(3, S, S)
    m[0] = 0.3
    m[0, S // 2:, S // 2:] = 1.0    # car: the bottom right
    m[1] = 0.2
    m[1, :, :S // 2] = 1.0          # motorcycle: the left half
    m[2] = 0.1
    m[2, :8] = 1.0                  # tv: the top rows
    return m


class MaskMapNet(nn.Module):
    """Score map ``m_c * feat_c`` (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.feat = nn.Conv2d(3, 3, 1)
        self.register_buffer("masks", weight_maps())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.feat(x)
        return f * F.interpolate(self.masks[None], size=f.shape[-2:], mode="nearest")[0]


def tiny_adapter():
    return as_adapter(MaskMapNet().eval(), layers=["feat"], class_names=NAMES)


def _rle(mask: np.ndarray) -> dict:
    """Uncompressed COCO RLE (column-major runs, zeros first) of a boolean mask."""
    flat = mask.T.reshape(-1).astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    if flat[0]:
        runs = [0, *runs]
    return {"size": list(mask.shape), "counts": runs}


def _box(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    mask = np.zeros((S, S), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def write_coco(root: Path) -> Path:
    """Photo 1: a motorcycle (left), a tv (top right) and a crowd of people over the left half's
    middle; photo 2: a car (bottom right) and a motorcycle; photo 3: a tv and a unicorn."""
    objects = {
        1: [(4, _box(0, 8, 12, 32), 0), (72, _box(20, 0, 32, 8), 0),
            (1, _box(4, 12, 16, 24), 1)],
        2: [(3, _box(18, 18, 32, 32), 0), (4, _box(2, 2, 14, 14), 0)],
        3: [(72, _box(0, 0, 32, 6), 0), (99, _box(20, 20, 30, 30), 0)],
    }
    rng = np.random.default_rng(5)
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    images, anns = [], []
    for image_id, objs in objects.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": S, "width": S})
        Image.fromarray(rng.integers(0, 256, (S, S, 3), dtype=np.uint8)).save(
            root / "val" / f"{image_id}.png")
        for category, mask, crowd in objs:
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": category,
                         "iscrowd": crowd, "segmentation": _rle(mask)})
    path = root / "annotations" / "instances_val.json"
    path.write_text(json.dumps({"images": images, "annotations": anns,
                                "categories": CATEGORIES}))
    return root


def _run(root: Path, out: Path | None, adapter, limit: int | None = None,
         metrics=("RelevanceMassAccuracy", "AUC", "RandomLogit", "MPRT"), max_pairs=None,
         maps_dir=None, force=False):
    entries = CocoDataset(root, "val").entries()[:limit]
    return masks_benchmark(lambda s: adapter, entries, get_methods(list(METHODS)),
                           crf={"iterations": 0}, maps_dir=maps_dir, records=out,
                           settings={"data": "test"}, quantus=metrics,
                           quantus_max_pairs=max_pairs, force=force)


def _without_seconds(report: dict) -> dict:
    report = json.loads(json.dumps(report))
    for entry in report["methods"].values():
        entry.pop("seconds_per_photo")
        entry.get("quantus", {}).pop("seconds_per_photo", None)
    return report


# ----------------------------------------------------------------------------- agreement
def test_quantus_judges_the_benchmarks_maps_pairs_and_void(tmp_path, quantus):
    from dcsm.integrations.quantus import DEFAULT_METRICS, evaluate_photos

    root = write_coco(tmp_path / "d")
    adapter = tiny_adapter()
    report = _run(root, tmp_path / "out", adapter, metrics=DEFAULT_METRICS,
                  maps_dir=tmp_path / "maps")
    pairs = [(p["photo"], p["class"]) for p in report["pairs"]]
    assert pairs == [("coco:1", "motorcycle"), ("coco:1", "tv"), ("coco:2", "car"),
                     ("coco:2", "motorcycle"), ("coco:3", "tv")]
    assert report["quantus"]["pairs"] == 5 and report["quantus"]["metrics"] == list(
        DEFAULT_METRICS)
    photos = {p.name: p for p in (e.load() for e in CocoDataset(root, "val").entries())}
    void = photos["coco:1"].void
    assert void.sum() == 4 * 12 and not photos["coco:2"].void.any()  # x 12..16, y 12..24
    checked = 0
    for key in METHODS:
        entry = report["methods"][key]
        q = entry["quantus"]
        assert len(q["scores"]) == len(pairs)
        for (photo, name), bench, judged in zip(pairs, entry["scores"], q["scores"],
                                                strict=True):
            with np.load(tmp_path / "maps" / key / f"{photo.replace(':', '_')}.npz") as d:
                a = d[name].astype(np.float64)
            assert a.min() >= 0
            truth = photos[photo].mask(name)
            keep = ~photos[photo].void
            if not a[keep].any():  # an all-zero map: Quantus refuses it, the benchmark says 0
                assert judged["RelevanceMassAccuracy"] is None and bench["energy"] == 0.0
                continue
            # float64 by hand: the share of the mass outside the void that lies in the mask
            hand = a[truth & keep].sum() / a[keep].sum()
            assert judged["RelevanceMassAccuracy"] == pytest.approx(hand, abs=1e-6)
            assert judged["RelevanceMassAccuracy"] == pytest.approx(bench["energy"], abs=1e-6)
            checked += 1
        # the summary counts the pairs where the metric is defined
        rma = [s["RelevanceMassAccuracy"] for s in q["scores"]
               if s["RelevanceMassAccuracy"] is not None]
        assert q["summary"]["RelevanceMassAccuracy"]["n"] == len(rma)
        assert q["summary"]["RelevanceMassAccuracy"]["mean"] == pytest.approx(np.mean(rma))
    assert checked >= 7
    # the void mass is real: counted in, the motorcycle's share would differ
    with np.load(tmp_path / "maps" / "dcsm-paper" / "coco_1.npz") as d:
        a = d["motorcycle"].astype(np.float64)
    truth = photos["coco:1"].mask("motorcycle")
    assert a[void].sum() > 0.05 * a.sum()
    assert abs(a[truth].sum() / a.sum()
               - report["methods"]["dcsm-paper"]["scores"][0]["energy"]) > 1e-3
    # dcsm's maps of this model do not depend on its weights: MPRT's correlation is 1
    assert all(s["MPRT"] == pytest.approx(1.0, abs=1e-9)
               for s in report["methods"]["dcsm-paper"]["quantus"]["scores"])
    for key in METHODS:
        for s in report["methods"][key]["quantus"]["scores"]:
            assert s["RandomLogit"] is None or -1 <= s["RandomLogit"] <= 1
    # Quantus through the integration's own explain_func (no maps handed in), with the same
    # candidates, gives the same localisation scores for the same pairs in the same order
    for key in METHODS:
        direct = evaluate_photos(adapter, list(photos.values()), method=key,
                                 metrics=LOCAL, candidates="present")
        assert [(i["photo"], i["class"]) for i in direct["items"]] == pairs
        for item, judged in zip(direct["items"], report["methods"][key]["quantus"]["scores"],
                                strict=True):
            for name in LOCAL:
                if name in judged:
                    want = judged[name]
                    got = item[name]
                    assert (want is None and math.isnan(got)) or got == pytest.approx(
                        want, abs=1e-6), (key, item["photo"], item["class"], name)
    # the Markdown report: a Quantus table, rows metrics, columns methods, with counts
    from dcsm.bench.masks import markdown_table

    text = markdown_table(report)
    assert "| Quantus metric | dcsm (paper preset) | Grad-CAM (dcsm) |" in text
    mprt = next(line for line in text.splitlines() if line.startswith("| MPRT ↓ |"))
    assert mprt.split(" | ")[1] == "1.000 (5)"
    assert "5 (photo, class) pairs of objects of at least 1 % judged" in text
    assert text == markdown_table(json.loads(json.dumps(report)))


# ----------------------------------------------------------------------------- resuming
def test_quantus_scores_resume_and_the_pair_cap_holds(tmp_path, quantus):
    root = write_coco(tmp_path / "d")
    adapter = tiny_adapter()
    whole = _run(root, tmp_path / "whole", adapter, max_pairs=3)
    q = whole["methods"]["dcsm-paper"]["quantus"]
    judged = [s is not None for s in q["scores"]]
    assert judged == [True, True, True, False, False]   # photo 2's first class only
    assert whole["quantus"]["pairs"] == 3 and whole["quantus"]["max_pairs"] == 3
    assert q["summary"]["RelevanceMassAccuracy"]["n"] == 3
    assert whole["settings"]["quantus"]["metrics"] == [
        "RelevanceMassAccuracy", "AUC", "RandomLogit", "MPRT"]
    out = tmp_path / "part"
    _run(root, out, adapter, limit=1, max_pairs=3)
    records = [json.loads(line) for line in (out / "masks-records.jsonl").read_text()
               .splitlines()]
    photo = next(r for r in records if r.get("event") == "photo")
    assert photo["quantus_pairs"] == 2
    assert len(photo["methods"]["gradcam"]["quantus"]["scores"]) == 2
    resumed = _run(root, out, adapter, max_pairs=3)
    assert _without_seconds(resumed) == _without_seconds(whole)
    # other Quantus settings are other settings: refused, unless forced
    with pytest.raises(DcsmError, match="other settings"):
        _run(root, out, adapter, max_pairs=4)
    with pytest.raises(DcsmError, match="other settings"):
        _run(root, out, adapter, metrics=["AUC"], max_pairs=3)
    forced = _run(root, out, adapter, metrics=["AUC"], force=True)
    assert forced["quantus"]["pairs"] == 5
    assert list(forced["methods"]["gradcam"]["quantus"]["summary"]) == ["AUC"]


def test_without_quantus_the_report_has_no_quantus_part(tmp_path):
    from dcsm.bench.masks import markdown_table

    root = write_coco(tmp_path / "d")
    entries = CocoDataset(root, "val").entries()
    report = masks_benchmark(lambda s: tiny_adapter(), entries, get_methods(["gradcam"]),
                             crf={"iterations": 0})
    assert "quantus" not in report and "quantus" not in report["settings"]
    assert "quantus" not in report["methods"]["gradcam"]
    assert "Quantus" not in markdown_table(report)


# ----------------------------------------------------------------------------- refusals
def test_quantus_missing_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from dcsm import cli

    root = write_coco(tmp_path / "d")
    out = tmp_path / "out"
    monkeypatch.setitem(sys.modules, "quantus", None)  # import quantus fails
    base = ["bench", "masks", "--out", str(out), "--coco", str(root), "--split", "val",
            "--methods", "gradcam", "--device", "cpu", "--no-progress"]
    for extra in (["--quantus"], ["--quantus", "AUC,MPRT", "--quantus-max-pairs", "2"]):
        code = cli.main([*base, *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "pip install 'distinct-saliency[quantus]'" in err and "Traceback" not in err
        assert not out.exists()
    with pytest.raises(DcsmError, match=r"distinct-saliency\[quantus\]"):
        _run(root, out, tiny_adapter())
    assert not out.exists()


def test_bad_quantus_options(tmp_path, capsys):
    from dcsm import cli

    root = write_coco(tmp_path / "d")
    out = tmp_path / "out"
    base = ["bench", "masks", "--out", str(out), "--coco", str(root), "--split", "val",
            "--methods", "gradcam", "--device", "cpu", "--no-progress"]
    cases = [(["--quantus-max-pairs", "3"], "--quantus-max-pairs needs --quantus")]
    if "quantus" in sys.modules or __import__("importlib").util.find_spec("quantus"):
        cases.append((["--quantus", "AUC,Faithfulness"], "unknown metric 'Faithfulness'"))
    for extra, message in cases:
        code = cli.main([*base, *extra])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    with pytest.raises(DcsmError, match="pair limit needs Quantus"):
        masks_benchmark(lambda s: tiny_adapter(), [], [], quantus_max_pairs=2)


def test_quantus_judges_registered_methods_only(tmp_path, quantus):
    root = write_coco(tmp_path / "d")
    spec = get_methods(["gradcam"])[0]
    impostor = BenchMethod("gradcam", "mine", "test", False, "dcsm", spec.build)
    entries = CocoDataset(root, "val").entries()
    with pytest.raises(DcsmError, match="'gradcam' is not one of them"):
        masks_benchmark(lambda s: tiny_adapter(), entries, [impostor], quantus=["AUC"],
                        records=tmp_path / "out")
    with pytest.raises(DcsmError, match="at least 1"):
        masks_benchmark(lambda s: tiny_adapter(), entries, [spec], quantus=["AUC"],
                        quantus_max_pairs=0)
    assert not (tmp_path / "out").exists()


def test_mprt_with_a_constant_map_in_the_batch_is_undefined_not_a_crash(quantus):
    # SciPy's spearmanr of (B, F) batches with a constant row returns one NaN for the whole
    # batch, which Quantus's own correlation then fails to read; the integration's correlates
    # row by row: that item NaN, the others scored, the same values as Quantus's elsewhere.
    from quantus.functions.similarity_func import correlation_spearman

    from dcsm.integrations import quantus as dq

    rng = np.random.default_rng(2)
    a, b = rng.random((3, 50)), rng.random((3, 50))
    np.testing.assert_allclose(dq.spearman(a, b, batched=True),
                               correlation_spearman(a, b, batched=True), atol=1e-12)
    assert dq.spearman(a[0], b[0]) == pytest.approx(correlation_spearman(a[0], b[0]))
    adapter = tiny_adapter()
    model = dq.quantus_model(adapter)
    x = np.concatenate([adapter.preprocess(rng.integers(0, 256, (S, S, 3), dtype=np.uint8))
                        .numpy() for _ in range(2)])
    s = np.stack([_box(0, 0, 8, 8)[None]] * 2).astype(np.uint8)
    a_batch = np.stack([np.zeros((1, S, S)), rng.random((1, S, S))]).astype(np.float32)
    kw = {"method": "dcsm", "candidates": dq.candidate_table(x, [[0], [0]]), "preset": "paper",
          "layers": ["feat"], "scales": [1.0]}
    values, errors = dq._run_metric(quantus.MPRT, dq._metric_settings("MPRT", 3, 42, None),
                                    model, x, np.array([1, 1]), a_batch, s, kw, "MPRT")
    assert errors == ["", ""] and math.isnan(values[0]) and -1 < values[1] < 1
    # with the map the method gives (independent of the weights here): correlation 1
    a_batch[1] = dq.explain_func(model, x[1:], [1], **kw)[0]
    values, _ = dq._run_metric(quantus.MPRT, dq._metric_settings("MPRT", 3, 42, None),
                               model, x, np.array([1, 1]), a_batch, s, kw, "MPRT")
    assert math.isnan(values[0]) and values[1] == pytest.approx(1.0)


def test_bench_masks_command_with_quantus(tmp_path, capsys, quantus):
    from dcsm import cli

    root = write_coco(tmp_path / "d")
    out = tmp_path / "out"
    argv = ["bench", "masks", "--out", str(out), "--coco", str(root), "--split", "val",
            "--methods", "gradcam", "--crf-iterations", "0", "--device", "cpu",
            "--no-progress", "--quantus", "RelevanceMassAccuracy,AUC", "--quantus-max-pairs",
            "2"]
    assert cli.main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    report = json.loads((out / "masks.json").read_text())
    assert report["quantus"]["metrics"] == ["RelevanceMassAccuracy", "AUC"]
    assert report["quantus"]["pairs"] == 2 and report["settings"]["quantus"]["max_pairs"] == 2
    scores = report["methods"]["gradcam"]["quantus"]["scores"]
    assert [s is not None for s in scores] == [True, True, False, False, False]
    text = (out / "masks.md").read_text()
    assert "| Quantus metric | Grad-CAM (dcsm) |" in text and "| AUC | " in text
    assert "| Quantus metric | Grad-CAM (dcsm) |" in printed
    # a rerun continues (nothing left to do) and reports the same; other Quantus settings are
    # refused without --force
    assert cli.main(argv) == 0
    again = json.loads((out / "masks.json").read_text())
    assert _without_seconds(again) == _without_seconds(report)
    capsys.readouterr()
    assert cli.main([*argv[:-1], "3"]) == 2
    assert "--force" in capsys.readouterr().err


def test_evaluate_photos_judges_maps_handed_in(tmp_path, quantus):
    from dcsm.integrations.quantus import evaluate_photos

    root = write_coco(tmp_path / "d")
    photo = CocoDataset(root, "val").entries()[1].load()       # a car and a motorcycle
    car = photo.mask("car").astype(np.float32)
    wide = np.zeros((S, S), np.float32)
    wide[:, :16] = 1.0                                         # the motorcycle (12 x 12) and more
    report = evaluate_photos(tiny_adapter(), [photo], method="gradcam", metrics=LOCAL,
                             maps={photo.name: {"car": car, "motorcycle": wide}})
    car_item, moto_item = report["items"]
    assert [car_item[m] for m in LOCAL] == [1.0, 1.0, 1.0, 1.0]
    assert moto_item["RelevanceMassAccuracy"] == pytest.approx(144 / (16 * S))
    assert moto_item["PointingGame"] == 1.0 and report["seconds"]["explain"] == 0.0
    with pytest.raises(DcsmError, match=r"map given for car of photo coco:2 is \(4, 4\)"):
        evaluate_photos(tiny_adapter(), [photo], method="gradcam", metrics=["AUC"],
                        maps={photo.name: {"car": np.ones((4, 4))}})
