"""The Quantus benchmark's code on its tiny setting: the bundled photo, dcsm and pytorch-grad-cam,
every metric (EfficientNet-Lite0 on the CPU, a minute or so; skipped without Quantus)."""

from __future__ import annotations

import json
import math

import pytest


def test_tiny_run_reports_every_metric_for_every_method(tmp_path, capsys):
    pytest.importorskip("quantus")
    pytest.importorskip("pytorch_grad_cam")
    import quantus_masks

    out = quantus_masks.main(["--tiny", "--threads", "1", "--json", str(tmp_path / "q.json")])
    reports = out["reports"]
    assert list(reports) == ["dcsm default", "pytorch-grad-cam GradCAM"]
    for report in reports.values():
        assert [(i["photo"], i["class"]) for i in report["items"]] == [
            ("bundled:chelsea_coffee", "tabby"), ("bundled:chelsea_coffee", "espresso")]
        for name, entry in report["metrics"].items():
            assert entry["count"] + entry["undefined"] == 2
            assert math.isfinite(entry["mean"]), name
            assert -1.0 <= entry["mean"] <= 1.0
        # each class's map lies mostly on its own half of the photo
        assert report["metrics"]["RelevanceMassAccuracy"]["mean"] > 0.6
        assert report["metrics"]["PointingGame"]["mean"] == 1.0
    printed = capsys.readouterr().out
    assert printed.startswith(
        "| metric | dcsm default | pytorch-grad-cam GradCAM |\n|---|---|---|\n")
    assert "| MPRT | " in printed and "2 (photo, class) pairs on 1 photos" in printed
    written = json.loads((tmp_path / "q.json").read_text())
    assert written["table"] == out["table"]
    assert set(written["reports"]["dcsm default"]["metrics"]) == set(out["metrics"])


def test_coco_reader_is_used_when_present_else_the_real_photos(monkeypatch, capsys):
    import importlib

    import quantus_masks

    calls = []

    class Reader:
        @staticmethod
        def load_coco(folder, split, limit):
            calls.append((str(folder), split, limit))
            return ["photo"]

    real = importlib.import_module

    def fake_import(name, *args):
        if name == "dcsm.datasets.coco":
            return Reader
        return real(name, *args)

    monkeypatch.setattr(quantus_masks.importlib, "import_module", fake_import)
    args = quantus_masks.parse_args(["--coco", "coco", "--split", "train2017", "--limit", "3"])
    assert list(quantus_masks.photo_source(args)()) == ["photo"]
    assert calls == [("coco", "train2017", 3)]

    def missing(name, *args):
        if name == "dcsm.datasets.coco":
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(quantus_masks.importlib, "import_module", missing)
    monkeypatch.setattr("dcsm.datasets.realphotos.load_real_photos",
                        lambda source=None: ["a", "b", "c"])
    args = quantus_masks.parse_args(["--coco", "coco", "--photos", "2"])
    assert list(quantus_masks.photo_source(args)()) == ["a", "b"]
    assert "no COCO reader" in capsys.readouterr().err
