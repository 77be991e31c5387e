"""Presets are validated when they are made: a preset the explainer could not run is refused with
a one-line DcsmError, and every valid combination runs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.presets import FUSIONS, Preset

BASE = dict(name="custom", scales=(1.0,), fusion="paper", candidate_rule="reference_scale",
            min_contrast=1)


@pytest.mark.parametrize("fields,match", [
    ({"fusion": "paper", "contrast": "pairwise"}, "fusion 'paper' takes contrast 'sum' or "
                                                  "'strongest', not 'pairwise'"),
    ({"fusion": "released", "contrast": "sum"}, "fusion 'released' takes contrast 'pairwise'"),
    ({"fusion": "released"}, "fusion 'released' takes contrast 'pairwise', not 'sum'"),
    ({"fusion": "relased"}, "unknown fusion 'relased'; known: paper, released"),
    ({"contrast": "difference"}, "unknown contrast 'difference'"),
    ({"candidate_rule": "best"}, "unknown candidate rule 'best'"),
    ({"upsample": "nearest"}, "unknown upsampling order 'nearest'"),
    ({"reduce": "median"}, "unknown channel reduction 'median'"),
    ({"flip": 1}, "flip must be True or False"),
    ({"gamma": 0}, "gamma must be a number"),
    ({"gamma": float("nan")}, "gamma must be a number"),
    ({"propagate": "yes"}, "propagate must be a Propagation"),
    ({"alpha": 0.0}, "alpha must be a positive number"),
    ({"alpha": -1.0}, "alpha must be a positive number"),
    ({"alpha": float("nan")}, "alpha must be a positive number"),
    ({"alpha": float("inf")}, "alpha must be a positive number"),
    ({"alpha": "3"}, "alpha must be a positive number"),
    ({"scales": ()}, "scales must be one or more ratios in \\(0, 8\\]"),
    ({"scales": (1.0, 0.0)}, "scales must be"),
    ({"scales": (1.0, -1.2)}, "scales must be"),
    ({"scales": (9.0,)}, "scales must be"),
    ({"scales": (float("nan"),)}, "scales must be"),
    ({"scales": 1.0}, "scales must be"),
    ({"min_contrast": 0}, "min_contrast must be an integer of at least 1"),
    ({"min_contrast": 2.0}, "min_contrast must be"),
    ({"min_contrast": True}, "min_contrast must be"),
    ({"layers": (("vgg", "conv3_1"),)}, "layers must be \\(model name, \\(layer, ...\\)\\)"),
    ({"layers": (("vgg", ()),)}, "layers must be"),
])
def test_invalid_presets_are_refused_when_made(fields, match):
    with pytest.raises(DcsmError, match=match) as info:
        Preset(**{**BASE, **fields})
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("preset 'custom': ")


def test_replace_validates_too():
    with pytest.raises(DcsmError, match="takes contrast"):
        dataclasses.replace(dcsm.PRESETS["tuned"], contrast="pairwise")
    with pytest.raises(DcsmError, match="alpha"):
        dataclasses.replace(dcsm.PRESETS["paper"], alpha=0.0)


def test_shipped_presets_are_valid_and_named_by_their_key():
    for key, preset in dcsm.PRESETS.items():
        assert preset.name == key
        assert preset == dataclasses.replace(preset)  # re-validated without complaint


@pytest.mark.parametrize("fusion,contrast",
                         [(f, c) for f, cs in FUSIONS.items() for c in cs])
def test_every_valid_combination_runs(tiny, fusion, contrast):
    """Each fusion with each of its contrasts gives maps in [0, 1], and a custom preset equal to
    a shipped one gives the shipped preset's maps."""
    adapter = tiny.adapter(tiny.TinyNet(classes=4, seed=3))
    image = tiny.image(16, 20, seed=3)
    preset = Preset(name="mine", scales=(1.0, 1.2), fusion=fusion, contrast=contrast,
                    candidate_rule="any_scale" if fusion == "released" else "reference_scale",
                    min_contrast=3)
    result = dcsm.DistinctSaliency(adapter, preset=preset).explain(image, classes=[0, 1])
    assert result.parameters["fusion"] == fusion and result.parameters["contrast"] == contrast
    assert len(result.contrast) == 3
    for m in result.maps.values():
        assert m.shape == (16, 20) and m.min() >= 0 and m.max() <= 1
    assert max(m.max() for m in result.maps.values()) > 0.5
    shipped = {"sum": "paper", "pairwise": "released", "strongest": "tuned"}[contrast]
    same = dataclasses.replace(dcsm.PRESETS[shipped], name="copy")
    a = dcsm.DistinctSaliency(adapter, preset=same).explain(image, classes=[0, 1])
    b = dcsm.DistinctSaliency(adapter, preset=shipped).explain(image, classes=[0, 1])
    assert list(a.maps) == list(b.maps)
    for name in a.maps:
        np.testing.assert_array_equal(a.maps[name], b.maps[name])
