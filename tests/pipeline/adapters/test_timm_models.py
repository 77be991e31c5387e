"""timm models (``timm:NAME``): the adapter's model is timm's own, weights round-trip through a
file, class count from the state dict, preprocessing from ``pretrained_cfg``, default layers
that exist, run, carry gradient and have the documented layouts, dynamic input sizes for ViTs,
one-line errors. Small models with random weights only (no network)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

timm = pytest.importorskip("timm")

from dcsm.errors import DcsmError  # noqa: E402
from dcsm.pipeline.adapters.imagenet import imagenet_class_names  # noqa: E402
from dcsm.pipeline.adapters.timm_models import (  # noqa: E402
    timm_adapter,
    timm_default_layers,
    timm_layer_layouts,
    timm_token_grid,
)
from dcsm.pipeline.rules import GuidedRule  # noqa: E402

# name -> (layout of every default layer, Grad-CAM layer, default layers)
FAMILIES = {
    "resnet18": ("nchw", "layer4", ["layer3.0", "layer3.1", "layer4.0", "layer4.1"]),
    "convnext_atto": ("nchw", "stages.3",
                      [f"stages.2.blocks.{i}" for i in range(6)]
                      + ["stages.3.blocks.0", "stages.3.blocks.1"]),
    "mobilenetv3_small_100": ("nchw", "blocks.5",
                              ["blocks.2.0", "blocks.2.1", "blocks.2.2", "blocks.3.0", "blocks.3.1",
                               "blocks.4.0", "blocks.4.1", "blocks.4.2", "blocks.5"]),
    "vit_tiny_patch16_224": ("tokens:1", "blocks.11.norm1", [f"blocks.{i}" for i in range(2, 11)]),
    "swin_tiny_patch4_window7_224": ("nhwc", "layers.3",
                                     [f"layers.2.blocks.{i}" for i in range(6)]
                                     + ["layers.3.blocks.0", "layers.3.blocks.1"]),
}


# stage -> stride, for the shapes of the default layers' outputs
STRIDES = {"layer3": 16, "layer4": 32, "stages.2": 16, "stages.3": 32, "blocks.2": 16,
           "blocks.3": 16, "blocks.4": 32, "blocks.5": 32, "layers.2": 16, "layers.3": 32}


@pytest.fixture(scope="module")
def adapters():
    built = {}
    for name in FAMILIES:
        torch.manual_seed(0)
        built[name] = timm_adapter(name, "random")
    return built


def _x(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _layer_outputs(model: nn.Module, layers: list[str], x: torch.Tensor,
                   grad: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    modules = dict(model.named_modules())
    outs: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_m, _i, out):
            if grad:
                out.retain_grad()
            outs[name] = out
        return hook

    handles = [modules[n].register_forward_hook(keep(n)) for n in layers]
    try:
        with torch.set_grad_enabled(grad):
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return outs, logits


# --------------------------------------------------------------------------- the model is timm's
@pytest.mark.parametrize("name", list(FAMILIES))
def test_adapter_model_is_timm_model(adapters, name):
    adapter = adapters[name]
    assert adapter.name == f"timm:{name}"
    assert type(adapter.model).__module__.startswith("timm.")
    assert not adapter.model.training
    # timm's own model (fixed-size where timm's default is), with the same weights, same logits
    own = timm.create_model(name, pretrained=False).eval()
    own.load_state_dict(adapter.model.state_dict())
    x = _x(224, 224)
    with torch.no_grad():
        torch.testing.assert_close(adapter.model(x), own(x), rtol=1e-5, atol=1e-5)
    assert adapter.multilabel is False and adapter.pooling == "mean"
    assert adapter.class_names == list(imagenet_class_names())


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "swin_tiny_patch4_window7_224"])
def test_transformers_take_any_input_size(adapters, name):
    adapter = adapters[name]
    assert getattr(adapter, "input_size", "missing") is None
    for size in [(192, 256), (200, 250), (96, 72)]:
        with torch.no_grad():
            assert adapter.model(_x(*size)).shape == (1, 1000)
    if name.startswith("vit"):
        assert adapter.min_input == 16
        assert timm_token_grid(adapter.model, (192, 256)) == (12, 16)
        assert timm_token_grid(adapter.model, (200, 250)) == (13, 16)  # padded bottom/right
    else:
        assert adapter.min_input == 32


def test_vit_padding_leaves_multiples_of_the_patch_unchanged(adapters):
    """At a multiple of the patch size the padded model is timm's dynamic model exactly."""
    adapter = adapters["vit_tiny_patch16_224"]
    plain = timm.create_model("vit_tiny_patch16_224", pretrained=False,
                              dynamic_img_size=True).eval()
    plain.load_state_dict(adapter.model.state_dict())
    x = _x(192, 256)
    with torch.no_grad():
        torch.testing.assert_close(adapter.model(x), plain(x), rtol=1e-5, atol=1e-5)
        padded = adapter.model(_x(200, 250))
        by_hand = plain(torch.nn.functional.pad(_x(200, 250), (0, 6, 0, 8)))
    torch.testing.assert_close(padded, by_hand, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- weights
def test_weights_round_trip_through_files(tmp_path):
    """timm's tiny ``test_resnet`` (fast to build), saved the ways checkpoints come."""
    torch.manual_seed(1)
    source = timm.create_model("test_resnet", pretrained=False).eval()
    state = source.state_dict()
    x = _x(64, 80)
    with torch.no_grad():
        expected = source(x)
    files = {
        "plain.pt": state,
        "ckpt.pth": {"state_dict": state, "epoch": 3},
        "model.pth": {"model": state},
        "ddp.pt": {f"module.{k}": v for k, v in state.items()},
    }
    for filename, obj in files.items():
        torch.save(obj, tmp_path / filename)
        adapter = timm_adapter("test_resnet", tmp_path / filename)
        with torch.no_grad():
            torch.testing.assert_close(adapter.model(x), expected, rtol=0, atol=0)
        assert str(tmp_path / filename) in adapter.description


def test_class_count_from_the_state_dict(tmp_path):
    torch.manual_seed(2)
    source = timm.create_model("test_vit", pretrained=False, num_classes=10).eval()
    torch.save(source.state_dict(), tmp_path / "ten.pt")
    adapter = timm_adapter("test_vit", str(tmp_path / "ten.pt"))
    assert adapter.class_names == [f"class_{i}" for i in range(10)]
    x = _x(160, 160)
    with torch.no_grad():
        torch.testing.assert_close(adapter.model(x), source(x), rtol=1e-5, atol=1e-5)
        assert adapter.model(_x(96, 128)).shape == (1, 10)  # still dynamic


def test_weights_that_do_not_fit(tmp_path):
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), tmp_path / "r.pt")
    with pytest.raises(DcsmError, match="do not fit"):
        timm_adapter("test_efficientnet", tmp_path / "r.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DcsmError, match="cannot read"):
        timm_adapter("test_resnet", tmp_path / "junk.pt")


def test_errors_are_one_line_dcsm_errors(tmp_path, monkeypatch):
    cases = [
        (("no_such_model_xyz", "random"), "unknown timm model 'no_such_model_xyz'"),
        (("test_resnet", None), "needs --weights"),
        (("test_resnet", tmp_path / "missing.pt"), "does not exist"),
        (("test_resnet", "imagenet"), "does not exist"),
    ]
    for args, pattern in cases:
        with pytest.raises(DcsmError, match=pattern) as info:
            timm_adapter(*args)
        assert "\n" not in str(info.value)

    real_create = timm.create_model

    def offline_create(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'\nmore detail")
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    with pytest.raises(DcsmError, match=r"could not download .* \(offline\?\)") as info:
        timm_adapter("test_resnet", "pretrained")
    assert "\n" not in str(info.value)


def test_pretrained_uses_timm_download(monkeypatch):
    """weights='pretrained' asks timm for pretrained=True (faked here: no network)."""
    calls = []
    real_create = timm.create_model

    def fake_create(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", fake_create)
    adapter = timm_adapter("test_resnet", "pretrained")
    assert calls and all(calls) and adapter.num_classes == 1000


# --------------------------------------------------------------------------- preprocessing
@pytest.mark.parametrize("name", ["resnet18", "vit_tiny_patch16_224"])
def test_preprocessing_from_pretrained_cfg(adapters, name):
    adapter = adapters[name]
    cfg = adapter.model.pretrained_cfg
    assert adapter.preprocess.mean == pytest.approx(tuple(m * 255 for m in cfg["mean"]))
    assert adapter.preprocess.std == pytest.approx(tuple(s * 255 for s in cfg["std"]))
    assert adapter.preprocess.channel_order == "RGB"
    expected = (127.5,) * 3 if name.startswith("vit") else (0.485 * 255, 0.456 * 255, 0.406 * 255)
    assert adapter.preprocess.mean == pytest.approx(expected)


# --------------------------------------------------------------------------- layers and layouts
@pytest.mark.parametrize("name", list(FAMILIES))
def test_default_layers_exist_run_and_have_the_documented_layout(adapters, name):
    adapter = adapters[name]
    layout, gradcam, layers = FAMILIES[name]
    assert adapter.default_layers == layers
    assert adapter.gradcam_layer == gradcam
    modules = dict(adapter.model.named_modules())
    assert all(layer in modules for layer in [*layers, gradcam])
    assert adapter.resolve_layers(None)  # the core's own lookup accepts them
    layouts = adapter.layer_layouts
    assert layouts == {layer: layout for layer in [*layers, gradcam]}
    assert timm_layer_layouts(adapter.model, [*layers, gradcam], (192, 256)) == layouts

    height, width = 192, 256
    outs, _ = _layer_outputs(adapter.model, [*layers, gradcam], _x(height, width))
    for layer, out in outs.items():
        if layout == "tokens:1":
            assert out.shape == (1, 1 + (height // 16) * (width // 16), 192), layer
            continue
        stride = next(s for prefix, s in STRIDES.items()
                      if layer == prefix or layer.startswith(prefix + "."))
        grid = (math.ceil(height / stride), math.ceil(width / stride))
        spatial = tuple(out.shape[2:]) if layout == "nchw" else tuple(out.shape[1:3])
        assert spatial == grid, (layer, tuple(out.shape))


@pytest.mark.parametrize("name", list(FAMILIES))
def test_default_layers_carry_class_gradient(adapters, name):
    """Every default layer's spatial part gets a non-zero gradient from a class score."""
    adapter = adapters[name]
    layout = FAMILIES[name][0]
    x = _x(96, 128).requires_grad_(True)
    layers = [*adapter.default_layers, adapter.gradcam_layer]
    outs, logits = _layer_outputs(adapter.model, layers, x, grad=True)
    logits[0, 3].backward()
    for layer in layers:
        g = outs[layer].grad
        if layout.startswith("tokens:"):
            g = g[:, int(layout.split(":")[1]):]
        assert g is not None and g.abs().sum() > 0, layer


def test_vit_last_block_patch_tokens_get_no_gradient(adapters):
    """Why the last ViT block is left out: with class-token pooling its patch tokens do not
    reach the head, so their gradient is exactly zero."""
    model = adapters["vit_tiny_patch16_224"].model
    x = _x(64, 96).requires_grad_(True)
    outs, logits = _layer_outputs(model, ["blocks.11"], x, grad=True)
    logits[0, 7].backward()
    g = outs["blocks.11"].grad
    assert torch.count_nonzero(g[:, 1:]) == 0
    assert torch.count_nonzero(g[:, :1]) > 0


def test_layouts_of_other_modules(adapters):
    swin = adapters["swin_tiny_patch4_window7_224"].model
    assert timm_layer_layouts(swin, ["layers.0", "layers.3", "head.fc"]) == {
        "layers.0": "nhwc", "layers.3": "nhwc"}  # the (N, C) head output is no feature map
    resnet = adapters["resnet18"].model
    assert timm_layer_layouts(resnet, ["layer1", "act1"]) == {"layer1": "nchw", "act1": "nchw"}
    with pytest.raises(DcsmError, match="unknown layer 'layer9'"):
        timm_layer_layouts(resnet, ["layer9"])


def test_prefix_token_counts():
    """Distilled DeiT: two prefix tokens (class, distillation); CaiT's patch-only blocks: none,
    and CaiT's last block stays (class attention reads its patch tokens); CaiT has a fixed size."""
    torch.manual_seed(3)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False,
                             dynamic_img_size=True, dynamic_img_pad=True).eval()
    layers, gradcam, layouts = timm_default_layers(deit)
    assert layers == [f"blocks.{i}" for i in range(2, 11)] and gradcam == "blocks.11.norm1"
    assert set(layouts.values()) == {"tokens:2"}

    cait = timm_adapter("cait_xxs24_224", "random")
    assert cait.input_size == (224, 224)
    assert cait.default_layers == [f"blocks.{i}" for i in range(15, 24)]
    assert cait.gradcam_layer == "blocks.23"
    assert set(cait.layer_layouts.values()) == {"tokens:0"}


def test_guided_rule_finds_the_activations_of_each_family(adapters):
    """ReLU (ResNet), GELU (ViT, Swin, ConvNeXt), Hardswish and ReLU (MobileNetV3)."""
    for name, adapter in adapters.items():
        rule = GuidedRule()
        with rule.active():
            adapter.model(_x(64, 64))
        assert rule.last_intercepted is not None and rule.last_intercepted > 0, name
