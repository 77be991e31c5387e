"""The default-cost benchmark's code on a tiny setting (SqueezeNet 1.1, a 64-pixel photo, one
turn): a row with every variant, and the variants are what they say."""

from __future__ import annotations

import re

import dcsm


def test_tiny_run_prints_a_row_per_model(capsys):
    import default_cost

    assert default_cost.main(["--models", "squeezenet1_1", "--size", "64", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    row = [line for line in lines if line.startswith("| squeezenet1_1 |")]
    assert len(row) == 1
    assert len(re.findall(r"\d+\.\d+ s \(\d+\.\d+x\)", row[0])) == len(default_cost.VARIANTS)


def test_the_variants_are_the_default_and_its_parts():
    import default_cost

    adapter = dcsm.load_model("squeezenet1_1")
    made = {k: dcsm.DistinctSaliency(adapter, **v).parameters()
            for k, v in default_cost.VARIANTS.items()}
    before = made["before (no flip, no walk, no gate, gamma 1)"]
    default = made["default (all four)"]
    assert (before["flip"], before["propagate"], before["gate"], before["gamma"]) == (
        False, None, 0.0, 1.0)
    assert default == dcsm.DistinctSaliency(adapter).parameters()
    assert default["flip"] and default["propagate"] is not None and default["gamma"] == 2.0
    assert default["gate"] == 1.0
