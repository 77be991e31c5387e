"""Model adapters: fully convolutional forms reproduce the original logits, layer aliases point
at the right modules, weights load (or fail with one clear line), the offline models classify."""

from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
from skimage import data
from torch import nn

import dcsm
from dcsm.errors import DcsmError
from dcsm.pipeline.adapters.efficientnet_lite import (
    build_efficientnet_lite,
    build_efficientnet_lite0,
)
from dcsm.pipeline.adapters.squeezenet import build_squeezenet1_1

CATS = range(281, 286)  # tabby, tiger cat, Persian cat, Siamese cat, Egyptian cat
ESPRESSO = 967


def _x(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(seed))


def _assert_logits_close(fcn_logits: torch.Tensor, ref: torch.Tensor, rel: float = 1e-5) -> None:
    scale = float(ref.abs().max())
    assert ref.std() > 1e-3, "reference logits are degenerate; the check would be empty"
    diff = float((fcn_logits - ref).abs().max())
    assert diff < max(1e-4, rel * scale), f"max abs diff {diff} (logit scale {scale})"


def _calibrate_batchnorm(net: nn.Module) -> None:
    """Give a randomly initialised net BN statistics of real activations, so that its logits
    are not vanishingly small (in place; used on our own instance only)."""
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    net.train()
    with torch.no_grad():
        torch.manual_seed(0)
        net(_x(96, 96, seed=1).repeat(2, 1, 1, 1) + torch.randn(2, 3, 96, 96))
    net.eval()


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message and "\n" not in message and "\r" not in message
    return message


# ----------------------------------------------------------------------------- VGG-16
@pytest.fixture(scope="module")
def vgg() -> dcsm.ModelAdapter:
    torch.manual_seed(0)
    return dcsm.load_model("torchvision:vgg16", weights="random")


def test_vgg16_fcn_reproduces_logits_at_224(vgg):
    x = _x(224, 224)
    with torch.no_grad():
        score = vgg.model(x)
        ref = vgg.model.net(x)  # the untouched torchvision VGG-16
    assert score.shape == (1, 1000, 1, 1)
    _assert_logits_close(score[:, :, 0, 0], ref)
    _assert_logits_close(vgg.pool(score), ref)


def test_vgg16_fcn_score_map_at_256x320(vgg):
    x = _x(256, 320, seed=1)
    net = vgg.model.net
    with torch.no_grad():
        score = vgg.model(x)
        features = net.features(x)
        assert features.shape[-2:] == (8, 10)
        windows = torch.cat([features[:, :, i:i + 7, j:j + 7] for i in range(2) for j in range(4)])
        ref = net.classifier(torch.flatten(net.avgpool(windows), 1))  # (8, 1000)
    assert score.shape == (1, 1000, 2, 4)
    got = score[0].permute(1, 2, 0).reshape(8, 1000)
    _assert_logits_close(got, ref)


def test_vgg16_aliases_and_defaults(vgg):
    features = vgg.model.net.features
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)]
    names = [f"conv{b}_{k}" for b, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
             for k in range(1, n + 1)]
    assert len(convs) == len(names) == 13
    resolved = vgg.resolve_layers(names)
    for name, idx in zip(names, convs, strict=True):
        assert resolved[name] is features[idx]
        assert vgg.layer_aliases[name] == f"net.features.{idx}"
    assert vgg.resolve_layers(["conv3_1"])["conv3_1"] is features[10]
    assert vgg.resolve_layers(["conv5_3"])["conv5_3"] is features[28]
    assert vgg.resolve_layers(["conv1_1"])["conv1_1"] is features[0]
    assert vgg.resolve_layers(["relu5_3"])["relu5_3"] is features[29]
    assert vgg.resolve_layers(["pool5"])["pool5"] is features[30]
    assert vgg.default_layers == ["conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2",
                                  "conv4_3", "conv5_1", "conv5_2", "conv5_3"]
    assert [resolved[n].out_channels for n in names] == [64, 64, 128, 128] + [256] * 3 + [512] * 6
    assert vgg.min_input == 224 and vgg.gradcam_layer == "relu5_3"
    # module paths work as well as aliases, with or without the wrapper's "net." prefix
    assert vgg.resolve_layers(["net.features.10"])["net.features.10"] is features[10]
    assert vgg.resolve_layers(["features.10"])["features.10"] is features[10]
    with pytest.raises(DcsmError, match="unknown layer 'conv6_1'"):
        vgg.resolve_layers(["conv6_1"])


def test_released_preset_takes_vgg16_derivatives_at_the_conv_inputs(vgg):
    """dcsm.m's res(i).dzdx for i = conv3_1 ... conv5_3 is the derivative at each convolution's
    input; the released preset's VGG-16 layers (pool2, relu3_1, ..., relu5_2, the in-place ReLUs
    included) give exactly the derivatives of the score at those inputs."""
    from dcsm.pipeline.gradients import forward_pass, iter_class_gradients
    from dcsm.pipeline.presets import RELEASED_VGG16_LAYERS
    from dcsm.pipeline.rules import get_rule

    features = vgg.model.net.features
    convs = [i for i, m in enumerate(features) if isinstance(m, nn.Conv2d)][4:]  # conv3_1...
    explainer = dcsm.DistinctSaliency(vgg, preset="released")
    assert explainer.layers == list(RELEASED_VGG16_LAYERS)
    assert dcsm.DistinctSaliency(vgg).layers == vgg.default_layers  # paper: conv outputs
    resolved = vgg.resolve_layers(explainer.layers)
    assert [resolved[n] for n in explainer.layers] == [features[i - 1] for i in convs]
    rule = get_rule("guided")
    x = _x(224, 224, seed=4)
    fp = forward_pass(vgg, x, explainer.layers, rule)
    (got,) = list(iter_class_gradients(fp, [7], list(fp.activations.values())))
    inputs: dict[int, torch.Tensor] = {}
    handles = [features[i].register_forward_pre_hook(
        lambda m, args, i=i: inputs.__setitem__(i, args[0])) for i in convs]
    try:
        with rule.active():
            score = vgg.model(x.clone().requires_grad_(True))
    finally:
        for h in handles:
            h.remove()
    ref = torch.autograd.grad(score[:, 7].sum(), [inputs[i] for i in convs])
    for name, g, r in zip(explainer.layers, got, ref, strict=True):
        assert r.abs().max() > 0, name
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-5 * float(r.abs().max()), msg=name)


# ----------------------------------------------------------------------------- other torchvision
def test_resnet18_fcn_reproduces_logits():
    torch.manual_seed(0)
    adapter = dcsm.load_model("torchvision:resnet18", weights="random")
    net = adapter.model.net
    for size in ((224, 224), (160, 192)):
        x = _x(*size, seed=2)
        with torch.no_grad():
            score = adapter.model(x)
            ref = net(x)
        assert score.shape == (1, 1000, size[0] // 32, size[1] // 32)
        _assert_logits_close(adapter.pool(score), ref)
    assert adapter.default_layers == ["layer3.0", "layer3.1", "layer4.0", "layer4.1"]
    assert adapter.resolve_layers(["layer3.1"])["layer3.1"] is net.layer3[1]


def test_efficientnet_b0_fcn_reproduces_logits():
    torch.manual_seed(0)
    adapter = dcsm.load_model("torchvision:efficientnet_b0", weights="random")
    net = adapter.model.net
    _calibrate_batchnorm(net)
    x = _x(224, 224, seed=3)
    with torch.no_grad():
        score = adapter.model(x)
        ref = net(x)
    assert score.shape == (1, 1000, 7, 7)
    _assert_logits_close(adapter.pool(score), ref)
    assert adapter.default_layers == [f"features.{i}" for i in range(2, 9)]
    assert adapter.resolve_layers(["features.8"])["features.8"] is net.features[8]


@pytest.mark.parametrize("arch,defaults", [
    ("alexnet", ["conv3", "conv4", "conv5"]),
    ("densenet121", ["features.transition2", "features.denseblock3", "features.transition3",
                     "features.denseblock4"]),
    ("regnet_y_400mf", [f"trunk_output.block{s}.block{s}-{b}"
                        for s, n in ((3, 6), (4, 6)) for b in range(n)]),
    ("mobilenet_v2", [f"features.{i}" for i in range(10, 19)]),
    ("mnasnet0_5", [f"layers.{i}" for i in range(8, 17)]),
])
def test_more_torchvision_fcns_reproduce_logits(arch, defaults):
    """The converted model's score map, pooled as the adapter pools it, gives the untouched
    torchvision model's logits at 224 x 224 (random weights; batch norm given real
    statistics so that the logits are not degenerate)."""
    torch.manual_seed(0)
    adapter = dcsm.load_model(f"torchvision:{arch}", weights="random")
    net = adapter.model.net
    if any(isinstance(m, nn.BatchNorm2d) for m in net.modules()):
        _calibrate_batchnorm(net)
    x = _x(224, 224, seed=5)
    with torch.no_grad():
        score = adapter.model(x)
        ref = net(x)
    side = 1 if arch == "alexnet" else 7  # AlexNet's fc6 is a 6x6 convolution on 6x6 features
    assert score.shape == (1, 1000, side, side)
    _assert_logits_close(adapter.pool(score), ref)
    assert adapter.default_layers == defaults
    assert set(adapter.resolve_layers(defaults)) == set(defaults)


# ----------------------------------------------------------------------------- offline models
def _image_input(adapter, image: np.ndarray) -> torch.Tensor:
    return adapter.preprocess(image)


def _assert_lite_fcn_matches(adapter, original, images) -> None:
    """The adapter's score map, averaged, gives the plain classifier's logits."""
    for image in images:
        x = _image_input(adapter, image)
        with torch.no_grad():
            ref = original(x)
            score = adapter.model(x)
        assert score.shape[:2] == (1, 1000) and score.shape[2] > 1
        _assert_logits_close(score.mean(dim=(2, 3)), ref)


def test_efficientnet_lite0_fcn_matches_original(lite0):
    original = build_efficientnet_lite0()
    assert original is not lite0.model.net
    _assert_lite_fcn_matches(lite0, original, (data.chelsea(), data.coffee()[:224, :264]))
    assert lite0.default_layers == [f"block{i}" for i in range(7, 16)]
    assert lite0.resolve_layers(["block7"])["block7"] is lite0.model.net._blocks[7]


def test_efficientnet_lite2_fcn_matches_original_and_knows_the_photo():
    lite2 = dcsm.load_model("efficientnet_lite2")
    original = build_efficientnet_lite("efficientnet_lite2")
    _assert_lite_fcn_matches(lite2, original,
                             (data.chelsea()[:260, :260], data.coffee()[:260, :300]))
    # the packaged ImageNet weights: skimage's coffee photo is an espresso, the cat a tabby
    top = {name: ref.argmax().item() for name, ref in (
        ("coffee", original(_image_input(lite2, data.coffee()))),
        ("chelsea", original(_image_input(lite2, data.chelsea()))))}
    assert lite2.class_names[top["coffee"]] == "espresso"
    assert lite2.class_names[top["chelsea"]] in {"tabby", "tiger cat", "Egyptian cat"}
    assert lite2.default_layers == [f"block{i}" for i in range(12, 21)]
    assert lite2.resolve_layers(["block20"])["block20"] is lite2.model.net._blocks[20]


def test_squeezenet1_1_fcn_matches_original(squeeze):
    original = build_squeezenet1_1()
    for image in (data.chelsea(), data.coffee()[:200, :300]):
        x = _image_input(squeeze, image)
        with torch.no_grad():
            ref = original(x)
            score = squeeze.model(x)
        assert score.shape[2] > 1 and score.shape[3] > 1
        _assert_logits_close(squeeze.pool(score), ref)
    assert squeeze.default_layers == [f"fire{i}" for i in range(3, 10)]
    assert squeeze.resolve_layers(["fire9"])["fire9"] is squeeze.model.net.features[12]


def test_preprocessing_of_the_offline_models(lite0, squeeze):
    image = np.array([[[0, 128, 255]]], dtype=np.uint8)
    lite = lite0.preprocess(image)[0, :, 0, 0]
    torch.testing.assert_close(lite, torch.tensor([-127 / 128, 1 / 128, 1.0]))
    caffe = squeeze.preprocess(image)[0, :, 0, 0]  # BGR, minus the Caffe mean
    torch.testing.assert_close(caffe, torch.tensor([255 - 104.006, 128 - 116.669, 0 - 122.679]))


@pytest.mark.parametrize("which", ["lite0", "squeeze"])
def test_offline_models_classify_cat_and_espresso(request, which):
    adapter = request.getfixturevalue(which)
    assert adapter.class_names[281] == "tabby" and adapter.class_names[ESPRESSO] == "espresso"
    assert {adapter.class_names[i] for i in CATS} == {
        "tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
    for image, expected in ((data.chelsea(), set(CATS)), (data.coffee(), {ESPRESSO})):
        with torch.no_grad():
            probs = adapter.probabilities(adapter.pool(adapter.model(adapter.preprocess(image))))
        top = int(probs.argmax())
        assert top in expected, f"{adapter.name}: top-1 {adapter.class_names[top]}"


# ----------------------------------------------------------------------------- weights files
def test_state_dict_file_loads(tmp_path):
    torch.manual_seed(3)
    source = dcsm.load_model("torchvision:resnet18", weights="random").model.net
    with torch.no_grad():
        source.fc.bias.add_(1.0)  # something a fresh random net cannot have by chance
    plain, wrapped = tmp_path / "r18.pt", tmp_path / "wrapped.pth"
    torch.save(source.state_dict(), plain)
    torch.save({"state_dict": source.state_dict(), "epoch": 3}, wrapped)
    x = _x(64, 64, seed=4)
    with torch.no_grad():
        ref = source(x)
    for path in (plain, str(wrapped)):
        adapter = dcsm.load_model("torchvision:resnet18", weights=path)
        for key, value in source.state_dict().items():
            assert torch.equal(adapter.model.net.state_dict()[key], value), key
        with torch.no_grad():
            _assert_logits_close(adapter.pool(adapter.model(x)), ref)


def test_state_dict_with_other_class_count(tmp_path):
    torch.manual_seed(4)
    from torchvision.models import resnet18

    path = tmp_path / "ten.pt"
    torch.save(resnet18(num_classes=10).state_dict(), path)
    adapter = dcsm.load_model("torchvision:resnet18", weights=path, multilabel=True)
    assert adapter.num_classes == 10 and adapter.class_names[3] == "class_3"
    assert adapter.multilabel
    with torch.no_grad():
        assert adapter.model(_x(64, 64)).shape == (1, 10, 2, 2)


def test_lite0_weights_override(tmp_path):
    state = build_efficientnet_lite0().state_dict()
    state["_fc.bias"] = state["_fc.bias"] + 5.0
    path = tmp_path / "lite.pt"
    torch.save(state, path)
    adapter = dcsm.load_model("efficientnet_lite0", weights=path)
    torch.testing.assert_close(adapter.model.net._fc.bias, state["_fc.bias"], rtol=0, atol=0)


def test_bad_weights_files_fail_with_one_line(tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x02" + b"\xff\xfe" * 50)
    missing = tmp_path / "missing.pt"
    objecty = tmp_path / "object.pt"
    torch.save(argparse.Namespace(a=1), objecty)
    not_tensors = tmp_path / "numbers.pt"
    torch.save({"a": 1, "b": [2]}, not_tensors)
    for path in (corrupt, empty, garbage, missing, objecty, not_tensors):
        for name in ("torchvision:resnet18", "efficientnet_lite0"):
            with pytest.raises(DcsmError) as exc:
                dcsm.load_model(name, weights=path)
            assert path.name in _one_line(exc)
    bad_pickle = tmp_path / "bad.pkl"
    bad_pickle.write_bytes(b"\x80\x04garbage")
    with pytest.raises(DcsmError) as exc:
        dcsm.load_model("squeezenet1_1", weights=bad_pickle)
    assert "bad.pkl" in _one_line(exc)
    not_dict = tmp_path / "list.pkl"
    not_dict.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(DcsmError) as exc:
        dcsm.load_model("squeezenet1_1", weights=not_dict)
    _one_line(exc)


def test_text_file_as_weights_gives_dcsm_error(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(DcsmError) as exc:
        dcsm.load_model("torchvision:resnet18", weights=text)
    assert "notes.pt" in _one_line(exc)


def test_unfitting_weights_fail_with_one_line(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(5)
    state = resnet18().state_dict()
    dropped = dict(state)
    dropped.pop("layer2.0.conv1.weight")
    reshaped = dict(state)
    reshaped["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    extra = dict(state)
    extra["head.weight"] = torch.zeros(1)
    for label, bad, word in (("dropped", dropped, "missing"), ("reshaped", reshaped, "shape"),
                             ("extra", extra, "unexpected")):
        path = tmp_path / f"{label}.pt"
        torch.save(bad, path)
        with pytest.raises(DcsmError) as exc:
            dcsm.load_model("torchvision:resnet18", weights=path)
        message = _one_line(exc)
        assert word in message and f"{label}.pt" in message
    wrong_arch = tmp_path / "r18_for_lite.pt"
    torch.save(state, wrong_arch)
    with pytest.raises(DcsmError) as exc:
        dcsm.load_model("efficientnet_lite0", weights=wrong_arch)
    assert "do not fit" in _one_line(exc)


# ----------------------------------------------------------------------------- registry errors
@pytest.mark.parametrize("name,weights,match", [
    ("resnet50", None, "unknown model 'resnet50'"),
    ("torchvision:not_a_net", "random", "unknown torchvision classifier"),
    ("torchvision:resnet18", None, "needs --weights"),
    ("torchvision:shufflenet_v2_x0_5", "random", "not supported"),
])
def test_unknown_or_unsupported_models(name, weights, match):
    with pytest.raises(DcsmError, match=match) as exc:
        dcsm.load_model(name, weights=weights)
    _one_line(exc)


def test_bad_device():
    with pytest.raises(DcsmError, match="unknown device"):
        dcsm.load_model("efficientnet_lite0", device="warp-drive")
    if not torch.cuda.is_available():
        with pytest.raises(DcsmError, match="CUDA is not available"):
            dcsm.load_model("efficientnet_lite0", device="cuda")


def test_list_models_and_adapter_basics(lite0):
    names = [n for n, _ in dcsm.list_models()]
    assert names[:3] == ["efficientnet_lite0", "efficientnet_lite2", "squeezenet1_1"]
    assert "torchvision:<arch>" in names
    assert dcsm.DEFAULT_MODEL == "efficientnet_lite0"
    assert lite0.num_classes == 1000 and lite0.device == torch.device("cpu")
    assert lite0.class_index("Tabby") == 281 and lite0.class_index("967") == 967
    scores = torch.tensor([[0.0, 2.0, -1.0]])
    torch.testing.assert_close(lite0.probabilities(scores), torch.softmax(scores, dim=-1))
