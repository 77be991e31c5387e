"""The registry of methods: every method builds, capabilities instead of names, unknown names
are one clear error, and a method registered later is usable through the API and the CLI."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import dcsm
from dcsm.cli import build_parser
from dcsm.errors import DcsmError
from dcsm.methods import registry
from dcsm.methods.benchmarked import BenchMethod, bench_methods, method_keys
from dcsm.methods.simonyan import InputGradient
from dcsm.methods.single_scale import SETTINGS
from dcsm.pipeline.base import Explainer

BUILT_IN = ("dcsm", "simonyan", "guided", "gradcam")
PEERS = ("captum-saliency", "captum-guided", "pgc-gradcam", "pgc-gradcam-layers",
         "pgc-layercam-layers", "pgc-finercam", "torchcam-gradcam", "torchcam-layercam")


def test_the_table_in_order():
    assert registry.names() == (*BUILT_IN, *PEERS)
    assert registry.names(explainers=True) == BUILT_IN
    assert dcsm.METHODS == BUILT_IN  # the public constant keeps its value
    # the benchmarks' table: dcsm's presets, then every method with a map function, as before
    assert method_keys() == ["dcsm-paper", "dcsm-released", "dcsm-tuned", "dcsm-no-subtract",
                             "dcsm-tuned-no-subtract", "simonyan", "guided", "gradcam",
                             *PEERS]


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_explainer_builds_and_explains_on_the_tiny_model(tiny, name):
    adapter = tiny.adapter(tiny.TinyNet(classes=4, seed=1))
    spec = registry.get(name)
    explainer = spec.build(adapter)
    assert isinstance(explainer, Explainer) and explainer.method == name
    made = dcsm.make_explainer(adapter, name)
    assert type(made) is type(explainer) and made.parameters() == explainer.parameters()
    result = explainer.explain(tiny.image(24, 32, seed=2), classes=[0, 3])
    assert result.method == name and list(result.maps) == [tiny.names[0], tiny.names[3]]
    for m in result.maps.values():
        assert m.shape == (24, 32) and m.dtype == np.float32 and 0 <= m.min() <= m.max() <= 1


def test_capabilities():
    dcsm_spec, simonyan, guided, gradcam = (registry.get(n) for n in BUILT_IN)
    assert dcsm_spec.contrastive and dcsm_spec.layers == "several" and dcsm_spec.per_layer
    assert dcsm_spec.takes_preset and not any(s.takes_preset for s in (simonyan, gradcam))
    assert (simonyan.layers, guided.layers, gradcam.layers) == ("none", "none", "one")
    assert not any(s.contrastive or s.per_layer for s in (simonyan, guided, gradcam))
    assert (simonyan.segmenter, guided.segmenter, gradcam.segmenter) == ("grabcut", "crf", "crf")
    assert all(registry.get(n).own and registry.get(n).available() for n in BUILT_IN)
    for name in PEERS:
        spec = registry.get(name)
        assert not spec.own and spec.requires and spec.explainer is None and spec.maps
    assert registry.get("pgc-finercam").contrastive
    assert registry.get("pgc-finercam").requires_name == "FinerCAM"
    assert registry.get("captum-saliency").segmenter == "grabcut"


@pytest.mark.parametrize("name", PEERS)
def test_every_peer_gives_maps_on_the_tiny_model(tiny, name):
    spec = registry.get(name)
    if not spec.available():
        pytest.skip(f"{spec.requires} is not installed")
    adapter = tiny.adapter(tiny.TinyNet(classes=4, seed=1))
    run = spec.maps(adapter, "oracle")
    maps = run(tiny.image(24, 32, seed=2), [0, 3])
    assert set(maps) <= {0, 3} and maps
    assert all(m.shape == (24, 32) and np.isfinite(m).all() for m in maps.values())
    with pytest.raises(DcsmError, match=f"method {name} gives maps only"):
        spec.build(adapter)


def test_unknown_names_are_one_line_errors(tiny):
    with pytest.raises(DcsmError) as err:
        registry.get("nope")
    message = str(err.value)
    assert "\n" not in message
    assert message == f"unknown method 'nope'; known: {', '.join(registry.names())}"
    with pytest.raises(DcsmError) as err:  # the API names the explainers
        dcsm.make_explainer(tiny.adapter(tiny.TinyNet()), "nope")
    assert str(err.value) == "unknown method 'nope'; known: dcsm, simonyan, guided, gradcam"
    with pytest.raises(DcsmError, match="unknown method 'pgc-gradcam'; known: dcsm,"):
        dcsm.make_explainer(tiny.adapter(tiny.TinyNet()), "pgc-gradcam")
    assert registry.find("nope") is None and registry.find("pgc-gradcam", explainers=True) is None
    with pytest.raises(DcsmError, match="'dcsm' is registered already"):
        registry.register(registry.get("dcsm"))


def test_settings_another_method_takes_are_refused_or_left_out(tiny):
    adapter = tiny.adapter(tiny.TinyNet())
    with pytest.raises(DcsmError, match="^--min-contrast applies to the dcsm method only, not "
                                        "gradcam$"):
        dcsm.make_explainer(adapter, "gradcam", min_contrast=2)
    with pytest.raises(DcsmError, match="^gamma applies to the dcsm method only, not guided$"):
        dcsm.make_explainer(adapter, "guided", gamma=2.0)
    # settings every caller passes are left out for the methods that do not take them
    made = dcsm.make_explainer(adapter, "simonyan", preset="paper", layers=["c1"], alpha=5.0)
    assert made.parameters() == {"scales": [1.0], "max_side": 512, "precision": "float32",
                                 "backprop": "plain", "wrt": "input"}


class _Renamed(InputGradient):
    """Simonyan et al.'s input gradient under another name: a method registered by a test."""

    @property
    def method(self) -> str:
        return "test-simonyan"


@pytest.fixture
def registered():
    spec = registry.register(registry.MethodSpec(
        name="test-simonyan", description="the input gradient, registered by a test",
        label="test", explainer=lambda model, **settings: _Renamed(model, "plain", **settings),
        settings=SETTINGS))
    try:
        yield spec
    finally:
        registry.unregister("test-simonyan")
    assert "test-simonyan" not in registry.names()


def test_a_registered_method_is_usable_through_the_api_and_the_cli(tiny, registered, tmp_path):
    adapter = tiny.adapter(tiny.TinyNet(classes=4, seed=1))
    image = tiny.image(24, 32, seed=2)
    mine = dcsm.explain(adapter, image, method="test-simonyan", classes=[1, 2])
    theirs = dcsm.explain(adapter, image, method="simonyan", classes=[1, 2])
    assert mine.method == "test-simonyan"
    for name in theirs.maps:
        np.testing.assert_array_equal(mine.maps[name], theirs.maps[name])
    batch = dcsm.explain(adapter, torch.rand(2, 3, 16, 16), method="test-simonyan",
                         classes=[[0], [1]])
    assert batch.method == "test-simonyan" and batch.maps.shape == (2, 1, 16, 16)
    assert "test-simonyan" in registry.names(explainers=True)
    args = build_parser().parse_args(["explain", "x.png", "--out", str(tmp_path),
                                      "--method", "test-simonyan"])
    assert args.method == "test-simonyan"
    # it has no map function for the benchmarks, so their table stays as it was
    assert "test-simonyan" not in method_keys()


def test_a_registered_method_with_maps_joins_the_benchmarks(registered):
    spec = registry.register(registry.MethodSpec(
        name="test-maps", description="maps for the benchmarks", label="Test maps",
        maps=lambda adapter, mode: (lambda image, classes: {}), requires="numpy"),
        replace=True)
    try:
        table = bench_methods()
        assert table[-1] == BenchMethod.of(spec) and table[-1].key == "test-maps"
        assert table[-1].requires == "numpy" and table[-1].available()
    finally:
        registry.unregister("test-maps")
    assert "test-maps" not in method_keys()


def test_the_typed_settings_match_the_signatures_they_stand_for():
    # The TypedDicts that type `**settings` (dcsm.explain, the baselines' builders, a plain
    # module's description) name exactly the keyword arguments of the functions they feed.
    import inspect

    from dcsm.api import Settings, explain, make_explainer
    from dcsm.methods import single_scale
    from dcsm.pipeline.adapters import AdapterOptions, ModelOptions, as_adapter

    def keywords(fn, leave_out=()):
        return {n for n, p in inspect.signature(fn).parameters.items()
                if p.kind is not p.VAR_KEYWORD and n not in leave_out}

    options = set(ModelOptions.__annotations__)
    assert set(AdapterOptions.__optional_keys__) == options | {"layers"}
    assert set(AdapterOptions.__optional_keys__) <= keywords(as_adapter)
    assert set(Settings.__optional_keys__) == keywords(make_explainer, {"model", "method"}) \
        | options
    assert not set(Settings.__optional_keys__) & keywords(explain)
    assert set(single_scale.Settings.__optional_keys__) == single_scale.SETTINGS | options
    for cls in (InputGradient, single_scale.SingleScale):
        assert keywords(cls) >= single_scale.SETTINGS


@pytest.mark.parametrize(("name", "module", "package"), [
    ("captum-saliency", "captum.attr", "Captum"),
    ("pgc-gradcam", "pytorch_grad_cam", "grad-cam"),
    ("torchcam-layercam", "torchcam.methods", "TorchCAM"),
])
def test_a_peer_whose_library_is_missing_says_which_extra_installs_it(tiny, monkeypatch, name,
                                                                      module, package):
    adapter = tiny.adapter(tiny.TinyNet(classes=4, seed=1))
    monkeypatch.setitem(sys.modules, module, None)  # the import fails as if not installed
    with pytest.raises(DcsmError) as caught:
        registry.get(name).maps(adapter, "oracle")
    assert str(caught.value) == (f"the method {name} needs {package}, which is not installed: "
                                 "pip install 'distinct-saliency[bench]'")
