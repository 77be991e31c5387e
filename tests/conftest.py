"""Shared fixtures: tiny hand-built models with float64 references, and the offline adapters.

The helpers live in :class:`Helpers` (exposed through the ``tiny`` fixture) so that every test
file computes its expected values with the same independent float64 machinery:

* :class:`TinyNet`: conv(3->4, 3x3) -> rectifier -> conv(4->5, 3x3, stride 2) -> rectifier ->
  conv(5->C, 1x1), a fully convolutional model whose output is a (N, C, h, w) score map.
* :meth:`Helpers.reference_forward`: the same network written out functionally in float64, with
  its own plain and guided rectifiers (a test-local autograd function), returning every
  intermediate tensor, so that reference gradients come from ``torch.autograd.grad``.
* :func:`bilinear_matrix` / :func:`antialias_matrix`: numpy float64 resampling matrices written
  from the definition of half-pixel-centred bilinear interpolation (and its antialiased,
  triangle-filter form used for downscaling images), independent of ``F.interpolate``.
"""

from __future__ import annotations

import functools
import math
import os
import random
import re
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import dcsm
from dcsm.pipeline.adapters.base import ModelAdapter, Preprocessing

# The suite runs on small CPU machines shared with other jobs; with more intra-op threads than
# free cores, OpenMP's spinning threads made the larger tests up to ten times slower. The tests
# are small, so one thread costs little and keeps the run time predictable.
torch.set_num_threads(1)

TINY_MEAN = (120.0, 128.0, 136.0)
TINY_STD = (64.0, 60.0, 70.0)
TINY_ALIASES = {"c1": "conv1", "r1": "act1", "c2": "conv2", "r2": "act2", "c3": "conv3"}
NAMES = ["alpha", "Beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


# ----------------------------------------------------------------------------- resampling
def bilinear_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of bilinear interpolation, half-pixel centres, no antialias."""
    a = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for i in range(n_out):
        src = max((i + 0.5) * scale - 0.5, 0.0)
        i0 = min(int(math.floor(src)), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        a[i, i0] += 1.0 - lam
        a[i, i1] += lam
    return a


def antialias_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of antialiased bilinear resampling (a triangle filter whose support
    grows with the downscaling factor, normalised per output pixel)."""
    a = np.zeros((n_out, n_in))
    scale = n_in / n_out
    support = max(scale, 1.0)
    for i in range(n_out):
        centre = (i + 0.5) * scale
        for j in range(n_in):
            d = abs((j + 0.5 - centre) / support)
            if d < 1.0:
                a[i, j] = 1.0 - d
        a[i] /= a[i].sum()
    return a


def resize(maps: np.ndarray, size: tuple[int, int], antialias: bool = False) -> np.ndarray:
    """Resize the last two axes of ``maps`` to ``size`` with the matrices above (float64)."""
    make = antialias_matrix if antialias else bilinear_matrix
    ah = make(maps.shape[-2], size[0])
    aw = make(maps.shape[-1], size[1])
    return np.einsum("yi,...ij,xj->...yx", ah, np.asarray(maps, dtype=np.float64), aw)


# ----------------------------------------------------------------------------- rectifiers
class _RefGuided(torch.autograd.Function):
    """Reference guided rectifier: forward clamp, backward max(g, 0) * [lo < x < hi]."""

    @staticmethod
    def forward(ctx, x, upper):
        mask = (x > 0) if upper is None else (x > 0) & (x < upper)
        ctx.save_for_backward(mask)
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return torch.where(mask & (grad > 0), grad, torch.zeros_like(grad)), None


def ref_rectifier(x: torch.Tensor, upper: float | None, rule: str) -> torch.Tensor:
    """ReLU (upper None) or ReLU6 with the plain or guided backward."""
    if rule == "guided":
        return _RefGuided.apply(x, upper)
    mask = (x > 0) if upper is None else (x > 0) & (x < upper)
    out = x * mask.to(x.dtype)
    if upper is not None:
        out = out + upper * (x >= upper).to(x.dtype)
    return out


# ----------------------------------------------------------------------------- tiny model
class TinyNet(nn.Module):
    """conv(3->4) -> act -> conv(4->5, stride 2) -> act -> conv(5->C, 1x1): a score map."""

    def __init__(self, classes: int = 3, act: str = "relu", inplace: bool = False,
                 shared: bool = False, seed: int = 0, head_bias: list[float] | None = None):
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(5, classes, 1)
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3):
                fan_in = conv.weight[0].numel()
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * 1.5
                                  / math.sqrt(fan_in))
                conv.bias.copy_(torch.randn(conv.bias.shape, generator=gen) * 0.3)
            if head_bias is not None:
                self.conv3.bias.copy_(torch.tensor(head_bias))
        self.upper = 6.0 if act == "relu6" else None
        make = {"relu": nn.ReLU, "relu6": nn.ReLU6}[act]
        self.act1 = make(inplace=inplace)
        self.act2 = self.act1 if shared else make(inplace=inplace)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(self.act2(self.conv2(self.act1(self.conv1(x)))))


def reference_forward(net: TinyNet, x: torch.Tensor, rule: str = "plain",
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """TinyNet written out in float64: (intermediates by alias, score map)."""
    p = {k: v.detach().double() for k, v in net.state_dict().items()}
    x = x.detach().double().requires_grad_(True)
    c1 = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)
    r1 = ref_rectifier(c1, net.upper, rule)
    c2 = F.conv2d(r1, p["conv2.weight"], p["conv2.bias"], stride=2, padding=1)
    r2 = ref_rectifier(c2, net.upper, rule)
    c3 = F.conv2d(r2, p["conv3.weight"], p["conv3.bias"])
    return {"input": x, "c1": c1, "r1": r1, "c2": c2, "r2": r2, "c3": c3}, c3


def reference_class_grads(net: TinyNet, x: torch.Tensor, targets: list[int], layers: list[str],
                          rule: str = "plain") -> dict[str, torch.Tensor]:
    """float64 d(sum of score map of class c)/d(layer), one class at a time: (K, C, h, w)."""
    acts, score = reference_forward(net, x, rule)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for c in targets:
        grads = torch.autograd.grad(score[:, c].sum(), [acts[n] for n in layers],
                                    retain_graph=True)
        for name, g in zip(layers, grads, strict=True):
            out[name].append(g[0])
    return {name: torch.stack(gs) for name, gs in out.items()}


def tiny_adapter(net: nn.Module, classes: int | None = None, multilabel: bool = False,
                 layers: tuple[str, ...] = ("c1", "c2"), min_input: int = 8,
                 gradcam_layer: str | None = "r2", names: list[str] | None = None,
                 ) -> ModelAdapter:
    """A ModelAdapter around a tiny score-map model."""
    if classes is None:
        classes = net.conv3.out_channels
    return ModelAdapter(
        name="tiny",
        model=net,
        class_names=list(names or NAMES[:classes]),
        preprocess=Preprocessing(mean=TINY_MEAN, std=TINY_STD),
        default_layers=list(layers),
        layer_aliases=dict(TINY_ALIASES),
        multilabel=multilabel,
        pooling="mean",
        min_input=min_input,
        gradcam_layer=gradcam_layer,
    )


def narrow_checkpoint(folder: Path, classes: list[str]) -> str:
    """A ``checkpoint:`` model saved in ``folder``: a very narrow small_vgg (seeded) with
    ``classes``, a real checkpoint that runs fast."""
    from dcsm.pipeline.adapters.checkpoint import model_record, save_checkpoint
    from dcsm.pipeline.adapters.fcn import build_backbone

    torch.manual_seed(0)
    backbone = build_backbone("small_vgg", len(classes), config={
        "widths": [4, 4, 6, 6, 8], "convs": [1, 1, 1, 1, 1], "fc": 8})
    path = folder / "model.pt"
    save_checkpoint(path, model_record(backbone, classes, history=[{"epoch": 1}]))
    return f"checkpoint:{path}"


def random_image(height: int = 20, width: int = 24, seed: int = 0) -> np.ndarray:
    """A smooth-ish random RGB uint8 image."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 4 + 2, width // 4 + 2, 3)).astype(np.float64)
    smooth = np.stack([resize(base[:, :, k], (height, width)) for k in range(3)], axis=2)
    noise = rng.normal(0, 20, size=(height, width, 3))
    return np.clip(smooth + noise, 0, 255).astype(np.uint8)


def reference_input(image: np.ndarray, scale: float, min_input: int = 8) -> torch.Tensor:
    """float64 (1, 3, h, w) model input of a tiny adapter at ``scale`` (antialiased resize)."""
    mean = np.array(TINY_MEAN).reshape(3, 1, 1)
    std = np.array(TINY_STD).reshape(3, 1, 1)
    x = (image.transpose(2, 0, 1).astype(np.float64) - mean) / std
    h, w = round(image.shape[0] * scale), round(image.shape[1] * scale)
    if min(h, w) < min_input:  # enlarged, keeping the aspect, to the smallest accepted side
        f = min_input / min(h, w)
        h, w = max(min_input, round(h * f)), max(min_input, round(w * f))
    if (h, w) != image.shape[:2]:
        x = resize(x, (h, w), antialias=True)
    return torch.from_numpy(np.ascontiguousarray(x))[None]


def tanh_norm64(m: np.ndarray, alpha: float) -> np.ndarray:
    """tanh(alpha * m / max m) over the last two axes, 0 where max <= 0 (float64)."""
    m = np.asarray(m, dtype=np.float64)
    out = np.zeros_like(m)
    for idx in np.ndindex(m.shape[:-2]):
        peak = m[idx].max()
        if peak > 0:
            out[idx] = np.tanh(alpha * m[idx] / peak)
    return out


class Helpers(SimpleNamespace):
    """Namespace handed to tests by the ``tiny`` fixture."""


HELPERS = Helpers(
    TinyNet=TinyNet,
    adapter=tiny_adapter,
    image=random_image,
    narrow_checkpoint=narrow_checkpoint,
    reference_forward=reference_forward,
    reference_class_grads=reference_class_grads,
    reference_input=reference_input,
    ref_rectifier=ref_rectifier,
    bilinear_matrix=bilinear_matrix,
    antialias_matrix=antialias_matrix,
    resize=resize,
    tanh_norm=tanh_norm64,
    names=NAMES,
)


@pytest.fixture(scope="session")
def tiny() -> Helpers:
    """Tiny-model helpers (see the module docstring)."""
    return HELPERS


# ----------------------------------------------------------------------------- parallel runs
# `make test` runs the suite on two workers (pytest-xdist, ``--dist loadgroup``), with the
# scheduler below. The tests that start several processes of their own (loader workers,
# writers, torchrun ranks) go to one worker in turn, so that two of them never share the cores
# (their waits would stretch); the tests of a module with a module-scoped fixture (often a model
# or a whole ``dcsm batch`` run) go to one worker, so that the fixture is built once.
#
# (xdist's own ``xdist_group`` marks do not work with pytest 9.2, whose node ids no longer read
# the attribute xdist rewrites; a scheduler that groups node ids works with any version.)
MULTI_PROCESS = (
    "tests/test_processes.py::test_batch_stopped_by_sigterm_or_sigkill_leaves_no_process",
    "tests/batch/test_writers.py::test_batch_with_a_writer_equals_writing_in_turn",
    "tests/batch/test_runner.py::test_two_ranks_torchrun_equal_single_process",
    "tests/batch/test_runner.py::test_sigkill_then_rerun_gives_uninterrupted_outputs",
    "benchmarks/test_gpu_benchmark.py::test_tiny_run_agrees_and_reports_every_configuration",
)
ROOT = Path(__file__).resolve().parent.parent
_MODULE_FIXTURE = re.compile(r"@pytest\.fixture\(\s*scope=[\"']module[\"']")


@functools.cache
def _has_module_fixture(module: str) -> bool:
    """Whether the test module ``module`` (a path from the repository root) defines a fixture
    of module scope."""
    try:
        return bool(_MODULE_FIXTURE.search((ROOT / module).read_text(encoding="utf-8")))
    except OSError:
        return False


def group_of(nodeid: str) -> str:
    """The group a test runs in: ``multi-process``, its module's path, or its own node id.

    A module with a module-scoped fixture and a test of :data:`MULTI_PROCESS` goes wholly to
    ``multi-process``, so that its fixture too is built once.
    """
    module = nodeid.split("::")[0]
    if nodeid.split("[")[0] in MULTI_PROCESS or (
            _has_module_fixture(module) and any(t.startswith(module + "::")
                                                for t in MULTI_PROCESS)):
        return "multi-process"
    return module if _has_module_fixture(module) else nodeid


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: pytest alone runs without it
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadgroup``: xdist's scope scheduling over :func:`group_of`'s groups
    (the largest groups first, then one test at a time as the workers free up)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

    return GroupScheduling(config, log)


# ----------------------------------------------------------------------------- seeds
@pytest.fixture(autouse=True)
def seeded_generators():
    """Each test starts from the same global random state (torch, numpy, ``random``).

    Under pytest-xdist the tests a worker ran before decide the global state a test inherits,
    and that order changes from run to run: a layer built without a generator of its own would
    get other weights each time, and a test could pass or fail by the schedule.
    """
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


# ----------------------------------------------------------------------------- temp folder
@pytest.fixture(scope="session", autouse=True)
def temp_folder_left_clean(tmp_path_factory):
    """The suite leaves nothing of dcsm's (``dcsm-*``) in the temporary folder.

    The folder is one of this session's own (``tempfile.tempdir`` and ``TMPDIR``, so the
    ``dcsm`` processes the tests start use it too): what other programs on the machine put in
    the system's temporary folder meanwhile cannot be mistaken for a leftover of the tests.
    Under pytest-xdist each worker has its own (``tmp_path_factory`` is per worker), checked
    when that worker ends: one worker's live files are never in another's folder.
    """
    folder = tmp_path_factory.mktemp("system-temp")
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
    try:
        yield folder
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
    left = sorted(p.name for p in folder.glob("dcsm-*"))
    assert not left, f"the tests left {left} in the temporary folder"


# ----------------------------------------------------------------------------- real models
@pytest.fixture(scope="session")
def lite0() -> ModelAdapter:
    """The default offline model, loaded once per session (do not modify it in tests)."""
    return dcsm.load_model("efficientnet_lite0")


@pytest.fixture(scope="session")
def squeeze() -> ModelAdapter:
    """SqueezeNet 1.1 with its offline weights, loaded once per session."""
    return dcsm.load_model("squeezenet1_1")


# ----------------------------------------------------------------------------- cleanliness
def leftover_state(model: nn.Module | None = None) -> list[str]:
    """Everything a rule or a forward pass could leave behind; empty when clean."""
    import torch.nn.modules.module as module_mod
    from torch.overrides import _get_current_function_mode_stack

    problems = []
    if _get_current_function_mode_stack():
        problems.append(f"torch function modes: {_get_current_function_mode_stack()}")
    if torch._C._len_torch_function_stack() != 0:
        problems.append("torch function stack not empty")
    for name in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks"):
        if getattr(module_mod, name):
            problems.append(f"global {name}")
    if model is not None:
        for path, m in model.named_modules():
            for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                         "_backward_pre_hooks"):
                if getattr(m, attr):
                    problems.append(f"{path or '<root>'}.{attr}")
    return problems


HELPERS.leftover_state = leftover_state
