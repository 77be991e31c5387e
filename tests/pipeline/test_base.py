"""The explainers' abstract base class: what a method must give, and what the base gives it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import dcsm
from dcsm.pipeline.base import Explainer
from dcsm.pipeline.candidates import per_image_classes, select, uniform
from dcsm.pipeline.images import scaled_input


def test_the_public_name_is_the_base_class():
    assert dcsm.Explainer is Explainer
    for cls in (dcsm.DistinctSaliency, dcsm.InputGradient, dcsm.GradCAM):
        assert issubclass(cls, Explainer)
    with pytest.raises(TypeError, match="abstract"):
        Explainer("tiny", 512, "float32", {})  # type: ignore[abstract]


class _Flat(Explainer):
    """Every candidate's map is 1 everywhere: a method that only uses the base's blocks."""

    method = "flat"

    def parameters(self) -> dict[str, object]:
        return {"value": 1.0, **super().parameters()}

    def explain(self, image, classes=None, top_k=None, threshold=None, per_layer=False):
        prepared = self.prepare_input(image)
        x = scaled_input(self.adapter, prepared.x, 1.0)
        with torch.no_grad():
            probs = self.adapter.probabilities(self.adapter.pool(self.adapter.model(x)))
        wanted = per_image_classes(classes, x.shape[0])
        selections = [select(self.adapter, probs[i:i + 1], 0, wanted[i], top_k, threshold)
                      for i in range(x.shape[0])]
        uniform(selections)
        k = len(selections[0].selected)
        maps = torch.ones((x.shape[0], k, *prepared.x.shape[-2:]))
        return self.result(prepared, maps, selections, None)


def test_a_subclass_needs_explain_and_parameters(tiny):
    adapter = tiny.adapter(tiny.TinyNet(classes=4))

    class NoExplain(Explainer):
        method = "x"

        def parameters(self) -> dict[str, object]:
            return {}

    class NoParameters(Explainer):
        method = "x"

        def explain(self, image, classes=None, top_k=None, threshold=None, per_layer=False):
            raise AssertionError

    class NoMethod(_Flat):
        method = Explainer.method  # the abstract property again

    for cls, missing in ((NoExplain, "explain"), (NoParameters, "parameters"),
                         (NoMethod, "method")):
        with pytest.raises(TypeError, match=f"abstract.*{missing}"):
            cls(adapter, 512, "float32", {})


def test_the_base_gives_inputs_settings_and_results(tiny):
    adapter = tiny.adapter(tiny.TinyNet(classes=4))
    flat = _Flat(adapter, 32, "bfloat16", {}, max_pixels=10_000)
    assert (flat.max_side, flat.max_pixels, flat.precision, flat.autocast, flat.rule) == (
        32, 10_000, "bfloat16", torch.bfloat16, None)
    assert flat.parameters() == {"value": 1.0, "max_side": 32, "precision": "bfloat16"}
    result = flat.explain(tiny.image(48, 80, seed=1), classes=[2, 0])
    assert result.method == "flat" and result.parameters == flat.parameters()
    assert list(result.maps) == [tiny.names[2], tiny.names[0]]
    for m in result.maps.values():  # working size 19 x 32, brought back to the image's size
        np.testing.assert_allclose(m, np.ones((48, 80)), rtol=0, atol=1e-6)
    batch = flat.explain(torch.zeros(3, 3, 12, 20), classes=[[1], [2], [3]])
    assert batch.method == "flat" and batch.maps.shape == (3, 1, 12, 20)
    assert batch.classes[:, 0].tolist() == [1, 2, 3]
    with pytest.raises(dcsm.DcsmError, match="pixels"):
        flat.explain(tiny.image(200, 100))  # 20 000 pixels > max_pixels
