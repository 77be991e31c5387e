"""A researcher's own model: plain modules, layers as modules or names, token layers, batches,
the working resolution and duplicate class names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch import nn

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.base import ModelAdapter


def _resnet18(classes: int = 1000, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None, num_classes=classes).eval()


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # smooth blobs rather than noise, so that maps have structure
    small = rng.integers(0, 256, (max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC))


# ----------------------------------------------------------------------------- heads
def test_a_pooled_head_needs_no_conversion():
    """A plain ResNet (logits after global average pooling) gives the maps of its fully
    convolutional form: the pooled score's gradient is the score map's divided by h*w, and the
    normalisation removes the constant."""
    from dcsm.pipeline.adapters.torchvision_models import fully_convolutional

    net = _resnet18()
    plain = dcsm.as_adapter(net)
    assert plain.model is net and plain.default_layers[0] == "layer3.0"
    fcn, aliases, defaults, gradcam, min_input = fully_convolutional("resnet18", net)
    converted = ModelAdapter("fcn", fcn, plain.class_names, plain.preprocess, defaults)
    image = _image(72, 96)
    layers = ["layer3.1", "layer4.0", "layer4.1"]
    # float32 rounding passes through tanh(3x) damped where it saturates, through tanh(x) less.
    # The score-map gate needs a score map with locations: the converted model has one, the
    # pooled head a single location, which weighs nothing (the gate is compared off here).
    for backprop, preset, atol in (("guided", "paper", 2e-5), ("plain", "paper", 2e-5),
                                   ("guided", "tuned", 1e-4)):
        a = dcsm.explain(plain, image, classes=[3, 7, 11], layers=layers, backprop=backprop,
                         preset=preset, gate=0.0)
        b = dcsm.explain(converted, image, classes=[3, 7, 11], layers=layers,
                         backprop=backprop, preset=preset, gate=0.0)
        for name in a.maps:
            np.testing.assert_allclose(a.maps[name], b.maps[name], atol=atol)
            assert a.maps[name].max() > 0.1  # not a comparison of two empty maps
    gated = dcsm.explain(plain, image, classes=[3, 7, 11], layers=layers)  # the tuned gate 1
    for name in a.maps:
        np.testing.assert_allclose(gated.maps[name], a.maps[name], rtol=1e-6)


def test_layers_as_modules_or_names_give_identical_maps():
    net = _resnet18()
    image = _image(64, 80, seed=1)
    by_module = dcsm.DistinctSaliency(net, layers=[net.layer3[1], "layer4.0"]).explain(
        image, classes=[1, 2], per_layer=True)
    by_name = dcsm.DistinctSaliency(net, layers=["layer3.1", "layer4.0"]).explain(
        image, classes=[1, 2], per_layer=True)
    assert by_module.parameters["layers"] == ["layer3.1", "layer4.0"]
    for name in by_name.maps:
        np.testing.assert_array_equal(by_module.maps[name], by_name.maps[name])
        assert list(by_module.layer_maps[name]) == ["layer3.1", "layer4.0"]
    with pytest.raises(DcsmError, match="not part of model"):
        dcsm.DistinctSaliency(net, layers=[nn.Conv2d(1, 1, 1)])
    with pytest.raises(DcsmError, match="twice"):
        dcsm.DistinctSaliency(net, layers=[net.layer4[0], "layer4.0"])


def test_unknown_module_needs_layers_and_a_classifier_output():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return {"logits": self.conv(x).mean(dim=(2, 3))}

    with pytest.raises(DcsmError, match="returns dict"):
        dcsm.as_adapter(Odd())
    small = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3))
    with pytest.raises(DcsmError, match="name the layers"):
        dcsm.DistinctSaliency(small)
    with pytest.raises(DcsmError, match="2 class names given for a model with 3 outputs"):
        dcsm.DistinctSaliency(small, layers=["0"], class_names=["a", "b"])
    with pytest.raises(DcsmError, match="describe a plain module"):
        dcsm.DistinctSaliency(dcsm.as_adapter(small, layers=["0"]), class_names=["a", "b", "c"])


# ----------------------------------------------------------------------------- batches
class FlattenHead(nn.Module):
    """VGG-style: convolutions, a fixed-size pool, flatten and fully connected layers."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(12 * 9, 20), nn.ReLU(),
                                        nn.Linear(20, classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)))


def _tiny_vit() -> nn.Module:
    torch.manual_seed(5)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=16, mlp_dim=24,
                                               num_classes=7).eval()
    nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision starts the head at zero
    return vit


CASES = {
    "cnn": (lambda: _resnet18(classes=10), {"layers": ["layer3.0", "layer4.0", "layer4.1"]},
            (60, 76)),
    "flatten": (FlattenHead, {"layers": ["features.1", "features.4"]}, (40, 52)),
    "vit": (_tiny_vit, {"layers": ["encoder.layers.encoder_layer_0",
                                   "encoder.layers.encoder_layer_1"],
                        "input_size": (32, 32)}, (40, 48)),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("preset", ["paper", "tuned"])
def test_batch_equals_one_by_one(case, preset):
    build, options, (h, w) = CASES[case]
    model = build()
    torch.manual_seed(9)
    x = torch.randn(3, 3, h, w)
    classes = torch.tensor([[1, 4], [2, 0], [5, 3]])
    explainer = dcsm.DistinctSaliency(model, preset=preset, **options)
    batch = explainer.explain(x, classes=classes, per_layer=True)
    assert isinstance(batch, dcsm.BatchResult)
    assert batch.maps.shape == (3, 2, h, w) and batch.maps.dtype == torch.float32
    assert torch.equal(batch.classes, classes)
    assert float(batch.maps.min()) >= 0.0 and 0.0 < float(batch.maps.max()) <= 1.0
    for n in range(3):
        alone = explainer.explain(x[n], classes=classes[n])
        torch.testing.assert_close(batch.maps[n], alone.maps[0], rtol=0, atol=1e-5)
        assert alone.class_names[0] == [explainer.adapter.class_names[int(c)]
                                        for c in classes[n]]
    for layer, m in batch.layer_maps.items():
        assert m.shape == (3, 2, h, w), layer


def test_batch_class_forms_and_auto_candidates():
    model = FlattenHead()
    explainer = dcsm.DistinctSaliency(model, layers=["features.1", "features.4"], scales=[1.0])
    torch.manual_seed(2)
    x = torch.randn(2, 3, 32, 40)
    by_tensor = explainer.explain(x, classes=torch.tensor([[1, 2], [3, 4]]))
    by_lists = explainer.explain(x, classes=[[1, 2], ["class_3", 4]])
    torch.testing.assert_close(by_tensor.maps, by_lists.maps, rtol=0, atol=0)
    shared = explainer.explain(x, classes=[5, 0])
    assert shared.classes.tolist() == [[5, 0], [5, 0]]
    auto = explainer.explain(x, top_k=3)
    probs = torch.softmax(model(x), dim=1)
    assert auto.classes.tolist() == probs.topk(3, dim=1).indices.tolist()
    torch.testing.assert_close(auto.scores, probs.topk(3, dim=1).values, rtol=1e-5, atol=1e-6)
    assert auto.candidates(1)[0].index == int(auto.classes[1, 0])
    with pytest.raises(DcsmError, match="same number of classes"):
        explainer.explain(x, classes=[[1, 2], [3]])
    with pytest.raises(DcsmError, match="2 class lists given for 3 images"):
        explainer.explain(torch.randn(3, 3, 32, 40), classes=[[1], [2]])
    with pytest.raises(DcsmError, match=r"\(N, 3, H, W\)"):
        explainer.explain(torch.randn(2, 4, 32, 40))


def test_baselines_take_batches_too():
    model = _resnet18(classes=10)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 48, 64)
    classes = torch.tensor([[1, 2], [3, 4]])
    for method, kw in (("simonyan", {}), ("guided", {}), ("gradcam", {"layers": ["layer4"]})):
        batch = dcsm.explain(model, x, method=method, classes=classes, **kw)
        assert batch.maps.shape == (2, 2, 48, 64)
        for n in range(2):
            alone = dcsm.explain(model, x[n:n + 1], method=method, classes=classes[n], **kw)
            torch.testing.assert_close(batch.maps[n], alone.maps[0], rtol=0, atol=1e-5)


def test_bfloat16_autocast_agrees_with_float32(lite0):
    """bfloat16 keeps 8 bits of mantissa. The stated tolerance, on a real model and photo: mean
    difference below 0.01 and largest below 0.08 on the [0, 1] scale, correlation above 0.999
    (measured 0.004, 0.04 and 0.9994)."""
    from dcsm.io import load_image

    image = load_image("src/dcsm/data/chelsea_coffee.png")
    x = lite0.preprocess(image)
    ref = dcsm.explain(lite0, x, classes=[["tabby", "espresso"]], preset="tuned")
    low = dcsm.explain(lite0, x, classes=[["tabby", "espresso"]], preset="tuned",
                       precision="bfloat16")
    diff = (ref.maps - low.maps).abs()
    assert float(diff.mean()) < 0.01 and float(diff.max()) < 0.08
    corr = torch.corrcoef(torch.stack([ref.maps.flatten(), low.maps.flatten()]))[0, 1]
    assert float(corr) > 0.999
    with pytest.raises(DcsmError, match="unknown precision"):
        dcsm.DistinctSaliency(lite0, precision="int8")


# ----------------------------------------------------------------------------- cleanliness
def test_nothing_is_left_on_a_plain_module_also_after_an_error(tiny):
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.act = nn.ReLU()
            self.head = nn.Linear(4, 3)
            self.fail = False

        def forward(self, x):
            y = self.act(self.conv(x))
            if self.fail:
                raise RuntimeError("boom")
            return self.head(y.mean(dim=(2, 3)))

    model = Failing().train()
    model.conv.weight.requires_grad_(False)
    explainer = dcsm.DistinctSaliency(model, layers=[model.conv, model.act], scales=[1.0, 1.2])
    explainer.explain(torch.randn(1, 3, 16, 16), classes=[[0, 1]])
    model.fail = True
    with pytest.raises(RuntimeError, match="boom"):
        explainer.explain(torch.randn(1, 3, 16, 16), classes=[[0, 1]])
    assert tiny.leftover_state(model) == []
    assert model.training and all(m.training for m in model.modules())
    assert not model.conv.weight.requires_grad and model.head.weight.requires_grad


# ----------------------------------------------------------------------------- token models
class TokenNet(nn.Module):
    """Patch embedding, a class token, two token MLPs with a mixing step, a class-token head."""

    def __init__(self, dim: int = 6, classes: int = 4, patch: int = 4) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(11)
        self.embed = nn.Conv2d(3, dim, patch, stride=patch)
        self.cls = nn.Parameter(torch.randn(1, 1, dim, generator=gen))
        self.block_a = nn.Linear(dim, dim)
        self.block_b = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, classes)
        with torch.no_grad():
            for p in (self.embed.weight, self.block_a.weight, self.block_b.weight,
                      self.head.weight):
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (N, h*w, D)
        t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)
        a = torch.tanh(self.block_a(t))
        a = a + a.mean(dim=1, keepdim=True)
        b = torch.tanh(self.block_b(a))
        return self.head(b[:, 0] + b[:, 1:].mean(dim=1))


def _token_reference(net: TokenNet, x: torch.Tensor, classes: list[int], alpha: float = 3.0
                     ) -> np.ndarray:
    """float64: gradients at both blocks, cls dropped, max |.| over D, bilinear upsampling by
    explicit matrices, Eq. 2 and Eq. 3."""
    from conftest import resize

    d = {k: v.detach().double() for k, v in net.state_dict().items()}
    x = x.double()
    maps = []
    for c in classes:
        e = F.conv2d(x, d["embed.weight"], d["embed.bias"], stride=4)
        h, w = e.shape[-2:]
        t = torch.cat([d["cls"].expand(1, -1, -1), e.flatten(2).transpose(1, 2)], dim=1)
        a_out = F.linear(t, d["block_a.weight"], d["block_a.bias"]).requires_grad_(True)
        a = torch.tanh(a_out)
        a = a + a.mean(dim=1, keepdim=True)
        b_out = F.linear(a, d["block_b.weight"], d["block_b.bias"])
        b_out.retain_grad()
        b = torch.tanh(b_out)
        logits = F.linear(b[:, 0] + b[:, 1:].mean(dim=1), d["head.weight"], d["head.bias"])
        logits[0, c].backward()
        per_layer = []
        for g in (a_out.grad, b_out.grad):
            grid = g[0, 1:].reshape(h, w, -1).abs().amax(dim=-1).numpy()
            per_layer.append(resize(grid, tuple(x.shape[-2:])))
        maps.append(per_layer)
    maps = np.array(maps)  # (K, L, H, W)
    out = np.zeros((len(classes), *x.shape[-2:]))
    for layer in range(2):
        m = maps[:, layer]
        for k in range(len(classes)):
            diff = sum(np.maximum(m[k] - m[o], 0) for o in range(len(classes)) if o != k)
            out[k] += np.tanh(alpha * diff / diff.max()) / 2
    return out


def test_token_layers_against_a_float64_reference():
    net = TokenNet()
    torch.manual_seed(1)
    x = torch.randn(1, 3, 32, 40)  # an 8 x 10 patch grid after one class token
    explainer = dcsm.DistinctSaliency(net, layers=[net.block_a, net.block_b], scales=[1.0],
                                      backprop="plain", preset="paper")
    got = explainer.explain(x, classes=[[0, 2, 3]]).maps[0].double().numpy()
    expected = _token_reference(net, x, [0, 2, 3])
    np.testing.assert_allclose(got, np.clip(expected, 0, 1), atol=1e-5)
    # The grid and the class token are found from the shape; stating them gives the same maps.
    stated = dcsm.DistinctSaliency(net, layers=["block_a", "block_b"], scales=[1.0],
                                   backprop="plain", layouts="tokens:1", preset="paper")
    torch.testing.assert_close(stated.explain(x, classes=[[0, 2, 3]]).maps[0],
                               torch.from_numpy(got).float(), rtol=0, atol=1e-6)
    wrong = dcsm.DistinctSaliency(net, layers=["block_a"], scales=[1.0], layouts="tokens:3")
    with pytest.raises(DcsmError, match="prefix tokens"):
        wrong.explain(x, classes=[[0, 1]])


def test_layout_detection():
    from dcsm.pipeline.layouts import resolve_layout, to_grid

    assert resolve_layout((2, 197, 768), (224, 224)) == "tokens:1"
    assert resolve_layout((2, 196, 768), (224, 224)) == "tokens:0"
    assert resolve_layout((2, 201, 384), (224, 224)) == "tokens:5"  # class + 4 registers
    assert resolve_layout((2, 1 + 12 * 16, 64), (192, 256)) == "tokens:1"
    assert resolve_layout((2, 768, 7, 7), (224, 224)) == "nchw"
    assert resolve_layout((2, 7, 7, 768), (224, 224)) == "nhwc"
    assert resolve_layout((2, 56, 56, 96), (224, 224)) == "nhwc"
    assert resolve_layout((2, 12, 16, 96), (96, 128)) == "nhwc"
    assert resolve_layout((2, 7, 7, 7), (224, 224)) == "nchw"  # both fit: convolutional
    with pytest.raises(DcsmError, match="no grid"):
        resolve_layout((2, 1000), (224, 224))
    t = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)  # cls + 2x2 grid, D=3
    grid = to_grid(t, "tokens:1", (8, 8))
    assert grid.shape == (2, 3, 2, 2)
    assert torch.equal(grid[1, :, 1, 0], t[1, 3])  # row 1, column 0 is the third patch
    nhwc = torch.randn(1, 4, 5, 6)
    assert torch.equal(to_grid(nhwc, "nhwc", (8, 10)), nhwc.permute(0, 3, 1, 2))
    custom = to_grid(t, lambda u: u[:, 1:].reshape(2, 2, 2, 3).permute(0, 3, 1, 2), (8, 8))
    assert torch.equal(custom, grid)


# ----------------------------------------------------------------------------- resolution
def test_large_images_run_at_the_working_resolution(tiny):
    net = tiny.TinyNet(classes=4, seed=3)
    adapter = tiny.adapter(net)
    seen = []
    handle = net.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape)))
    try:
        big = _image(1500, 2100, seed=4)
        explainer = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.5])
        result = explainer.explain(big, classes=[0, 2])
    finally:
        handle.remove()
    assert all(m.shape == (1500, 2100) for m in result.maps.values())
    assert max(max(s[-2:]) for s in seen) <= round(512 * 1.5)
    # the same as explaining the image shrunk to 512 pixels and enlarging the maps
    small = np.asarray(Image.fromarray(big).resize((512, 366), Image.Resampling.BILINEAR))
    ref = explainer.explain(small, classes=[0, 2])
    for name, m in ref.maps.items():
        up = F.interpolate(torch.from_numpy(m)[None, None], size=(1500, 2100), mode="bilinear",
                           align_corners=False)[0, 0].clamp(0, 1).numpy()
        np.testing.assert_allclose(result.maps[name], up, atol=1e-6)
    # a full-resolution run is estimated first, and refused when it would not fit
    full = dcsm.DistinctSaliency(adapter, scales=[1.0, 1.5], max_side=None)
    assert full.estimate_memory(1500, 2100) > 8 * explainer.estimate_memory(1500, 2100)
    import dcsm.pipeline.speedups.memory as ex

    original = ex.available_memory
    ex.available_memory = lambda device: 10_000
    try:
        with pytest.raises(DcsmError, match="full resolution needs about"):
            full.explain(big, classes=[0, 2])
    finally:
        ex.available_memory = original
    with pytest.raises(DcsmError, match="max_side"):
        dcsm.DistinctSaliency(adapter, max_side=8)


def test_memory_estimate_is_of_the_right_size(tiny):
    """The estimate against the bytes autograd really saves at full size (within 2x)."""
    net = tiny.TinyNet(classes=4, seed=3)
    explainer = dcsm.DistinctSaliency(tiny.adapter(net), scales=[1.0], max_side=None)
    estimate = explainer.estimate_memory(300, 400, classes=2)
    from dcsm.pipeline.gradients import forward_pass
    from dcsm.pipeline.rules import get_rule
    from dcsm.pipeline.speedups.memory import count_saved as _count_saved

    with _count_saved() as saved:
        fp = forward_pass(explainer.adapter, torch.zeros(1, 3, 300, 400), explainer.layers,
                          get_rule("plain"))
    del fp
    graph = 2 * saved[0]
    assert graph < estimate < 2 * graph + 4 * 2 * 300 * 400 * 20


# ----------------------------------------------------------------------------- class names
def test_duplicate_class_names_keep_every_map(tmp_path):
    model = FlattenHead(classes=4)
    explainer = dcsm.DistinctSaliency(model, layers=["features.4"], scales=[1.0],
                                      class_names=["crane", "dog", "crane", "cat"])
    assert explainer.adapter.class_names == ["crane (0)", "dog", "crane (2)", "cat"]
    result = explainer.explain(_image(40, 48), classes=[0, 2, "crane (2)".upper().lower()][:2])
    assert list(result.maps) == ["crane (0)", "crane (2)"]
    assert not np.array_equal(result.maps["crane (0)"], result.maps["crane (2)"])
    with pytest.raises(DcsmError, match="ambiguous.*crane \\(0\\), crane \\(2\\)"):
        explainer.explain(_image(40, 48), classes=["crane"])
    from dcsm.io import atomic_dir
    from dcsm.outputs import write_explanation

    with atomic_dir(tmp_path / "out") as tmp:
        write_explanation(result, tmp)
    import json

    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["map_images"] == {"crane (0)": "crane_0.png", "crane (2)": "crane_2.png"}
    assert [c["name"] for c in summary["candidates"]] == ["crane (0)", "crane (2)"]
    assert sorted(np.load(tmp_path / "out" / "maps.npz").files) == ["crane (0)", "crane (2)"]
    assert (tmp_path / "out" / "crane_2.png").is_file()


def test_imagenet_descriptions_with_repeats_become_unique():
    """timm's ImageNet descriptions (as older torchvision releases' categories) name two
    classes "crane" and two "maillot"."""
    timm_data = pytest.importorskip("timm.data")
    from dcsm.pipeline.adapters.base import unique_class_names

    info = timm_data.ImageNetInfo()
    names = [info.index_to_description(i) for i in range(1000)]
    assert names.count("crane") == 2
    unique = unique_class_names(names)
    assert len(set(unique)) == 1000
    assert unique[134] == "crane (134)" and unique[517] == "crane (517)"
    assert unique[1] == names[1]


def test_guided_rule_warns_when_it_finds_no_activation(monkeypatch):
    """TokenNet's only non-linearity is tanh: guided back-propagation would silently be plain."""
    import dcsm.pipeline.rules.guided as guided

    monkeypatch.setattr(guided, "_WARNED", set())
    net = TokenNet()
    x = torch.randn(1, 3, 32, 40, generator=torch.Generator().manual_seed(0))
    explainer = dcsm.DistinctSaliency(net, layers=["block_a", "block_b"], scales=[1.0])
    with pytest.warns(dcsm.DcsmWarning, match="no activation it knows"):
        guided_maps = explainer.explain(x, classes=[[0, 1]]).maps
    plain = dcsm.DistinctSaliency(net, layers=["block_a", "block_b"], scales=[1.0],
                                  backprop="plain").explain(x, classes=[[0, 1]]).maps
    torch.testing.assert_close(guided_maps, plain, rtol=0, atol=0)
    relu_net = _resnet18(classes=5)
    import warnings

    with warnings.catch_warnings():  # a ReLU network: the rule finds its activations
        warnings.filterwarnings("error", message=".*no activation it knows",
                                category=dcsm.DcsmWarning)
        dcsm.explain(relu_net, x, classes=[[0, 1]], layers=["layer4.0"], scales=[1.0])


def test_pil_images_are_held_to_the_same_rules():
    from dcsm.pipeline.images import as_rgb_array

    with pytest.raises(DcsmError, match="at least 8x8"):
        as_rgb_array(Image.new("RGB", (1, 1)))
    with pytest.raises(DcsmError, match="mode La"):
        as_rgb_array(Image.frombytes("La", (20, 20), bytes(800)))
    grey = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20))
    np.testing.assert_array_equal(as_rgb_array(grey)[:, :, 1], np.asarray(grey))
