"""Any timm classifier by name: ``load_model("timm:resnet50", weights=...)``.

Weights: a local file (a state dict for timm's architecture, plain or a checkpoint dict holding it
under ``state_dict``/``model``; the class count is read from its classifier weight), ``random``
(an untrained network: tests, benchmarks), or ``pretrained`` (timm downloads its default weights,
so only with a network). ``NAME`` may carry a timm pretrained tag
(``vit_tiny_patch16_224.augreg_in21k``): the preprocessing follows that tag's configuration.

The adapter's ``model`` is the timm model itself: it returns ``(N, C)`` logits, which dcsm's core
treats as a 1 x 1 class score map (for a global-average-pooled linear head the gradient of the
pooled score is the score map's gradient up to the constant ``1 / (h * w)``).

**Input sizes.** Vision transformers are built with ``dynamic_img_size=True`` (and
``dynamic_img_pad=True``) whenever timm's constructor accepts it (ViT, DeiT, EVA, Swin, ...), so
they take any input size: the position embeddings are resampled to the token grid, and an input
whose side is not a multiple of the patch size is zero-padded at the bottom and right, so the
token grid (:func:`timm_token_grid`) is ``ceil(H / p) x ceil(W / p)`` and covers the padded image.
Swin's constructor takes ``dynamic_img_size`` but not ``dynamic_img_pad``; its patch embedding
is switched to padding after construction. A model that accepts neither and whose timm
configuration says ``fixed_input_size`` (MLP-Mixer, BEiT, CaiT, XCiT, MaxViT, ...), or that fails
on the 128 x 160 probe input but runs at its configured size (HaloNet, BAT), gets the adapter's
``input_size`` set to its configured size; other networks take any size. ``min_input`` is 32, or
the pixels per token (the patch size; a hybrid's CNN stride) for token-only models.

**Default layers** (the analogue of VGG-16's conv3_1 ... conv5_3), from ``model.feature_info``:

* Hierarchical networks (ResNet, ConvNeXt, EfficientNet, MobileNet, RegNet, Swin, ...): the
  blocks of the stages at the two deepest reductions (strides 16 and 32), at most nine layers:
  the last stride-32 blocks take at least five places (all of them when there are fewer stride-16
  blocks than four), the last stride-16 blocks the rest. ResNet-50: ``layer3.0`` ... ``layer4.2``,
  the nine of ``torchvision:resnet50``; ResNet-18: ``layer3.0`` ... ``layer4.1``; ConvNeXt:
  ``stages.3.blocks.*`` and the last ``stages.2.blocks.*``; EfficientNet-B0: ``blocks.3.2``,
  ``blocks.4.*``, ``blocks.5.*``, ``blocks.6`` (the last four stride-16 and five stride-32 blocks,
  as for ``efficientnet_lite0``; timm's ``feature_info`` names only the last block group of each
  stride, the groups before it are found among its siblings); Swin-T: ``layers.2.blocks.*``,
  ``layers.3.blocks.*``. A stage is split into its blocks (its ``blocks`` sequence, or its
  children when they are several composite modules) only when the probe pass shows them running
  in sequence with the stage returning the last one's output; otherwise the stage itself is the
  layer (DenseNet's dense blocks and transitions, Inception's mixed blocks). Grad-CAM: the
  deepest feature stage.
* Plain (single-resolution) transformers (ViT, DeiT, EVA, BEiT, CaiT, XCiT, MLP-Mixer, ...): the
  last nine transformer blocks ``blocks.K``. With class-token pooling (``global_pool='token'``
  and prefix tokens in the block output) the head reads only the prefix tokens of the *last*
  block's output, so that block's patch tokens get an exactly zero gradient: its place goes to
  the block before (ViT-Ti: ``blocks.2`` ... ``blocks.10``), and Grad-CAM reads the last block's
  ``norm1`` (its input, normalised, as pytorch-grad-cam does) instead of its output. CaiT's and
  XCiT's class attention comes after their blocks, so their last block stays.

A default layer whose output layout dcsm cannot read (below) is replaced by its stage, or
dropped; a model with none left (Hiera's unrolled tokens, LeViT, PiT, TNT, CrossViT, CoaT) is
refused with a DcsmError, as is a model without a classifier (``num_classes`` 0).
**Layouts** (:func:`timm_layer_layouts`, measured by one forward pass): ``nchw`` for CNN stages
and blocks (ResNet, ConvNeXt, EfficientNet, MobileNet, RegNet, DenseNet); ``nhwc``
(channel-last) for timm's Swin stages and blocks (and VOLO, Sequencer, MambaOut; Swin-V2-CR,
GCViT and TinyViT mix both, hence a layout per layer); ``tokens:K`` for ViT-style blocks,
``(N, K + h * w, D)`` with ``K`` prefix tokens (class, distillation or register tokens;
``model.num_prefix_tokens``) before the ``h x w`` patch tokens in raster order (``tokens:1`` for
ViT and DeiT, ``tokens:2`` for distilled DeiT, ``tokens:0`` for CaiT's and XCiT's patch-only
blocks, MLP-Mixer and ViTs pooled without a class token).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from dcsm.errors import DcsmError, first_line
from dcsm.optional import require
from dcsm.pipeline.adapters.base import IMAGENET_TORCHVISION, ModelAdapter, Preprocessing
from dcsm.pipeline.adapters.imagenet import imagenet_class_names
from dcsm.pipeline.adapters.weights import load_into, load_state_dict

PREFIX = "timm:"
MAX_DEFAULT_LAYERS = 9
# Non-square, divisible by 32: the size at which layouts are measured for models of any size.
PROBE_SIZE = (128, 160)


# --------------------------------------------------------------------------- building
def _timm() -> Any:  # noqa: ANN401 - the timm module
    return require("timm", "a timm: model")


def _classifier_key(cfg: Any) -> str | None:  # noqa: ANN401
    classifier = getattr(cfg, "classifier", None)
    if isinstance(classifier, (tuple, list)):
        classifier = classifier[0] if classifier else None
    return f"{classifier}.weight" if classifier else None


def _strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys saved from a DistributedDataParallel model start with ``module.``."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def _create(timm: Any, name: str, pretrained: bool, **kwargs: Any) -> nn.Module:  # noqa: ANN401
    """``timm.create_model`` with dynamic input sizes when the constructor accepts them."""
    attempts: list[dict[str, Any]] = [
        {"dynamic_img_size": True, "dynamic_img_pad": True},
        {"dynamic_img_size": True},
        {},
    ]
    for extra in attempts:
        try:
            model: nn.Module = timm.create_model(name, pretrained=pretrained, **kwargs, **extra)
        except TypeError as exc:
            if extra and "dynamic_img" in str(exc):
                continue  # this constructor does not take the option: try without it
            raise
        if extra and "dynamic_img_pad" not in extra:
            embed = getattr(model, "patch_embed", None)
            if embed is not None and hasattr(embed, "dynamic_img_pad"):
                embed.dynamic_img_pad = True  # Swin: pad instead of asserting divisibility
        return model
    raise AssertionError("unreachable")  # pragma: no cover


def build_timm(name: str, weights: str | Path | None) -> nn.Module:
    """The timm classifier ``name`` with ``weights`` (see the module docs), in eval mode."""
    timm = _timm()
    if not timm.is_model(name):
        raise DcsmError(f"unknown timm model '{name}' (timm.list_models() lists them)")
    if weights is None:
        raise DcsmError(
            f"timm:{name} needs --weights: a local state-dict file, 'random', or 'pretrained' "
            "(timm downloads its weights: needs a network)"
        )
    weights = str(weights)
    if weights == "random":
        model = _create(timm, name, pretrained=False)
    elif weights == "pretrained":
        try:
            model = _create(timm, name, pretrained=True)
        except Exception as exc:  # noqa: BLE001 - download failures come in many types
            raise DcsmError(f"could not download timm weights for {name} (offline?): "
                            f"{first_line(exc)}") from exc
    else:
        if not Path(weights).is_file():
            raise DcsmError(f"weights file '{weights}' does not exist (timm:{name} takes a local "
                            "state-dict file, 'random' or 'pretrained')")
        state = _strip_module_prefix(load_state_dict(weights))
        key = _classifier_key(timm.models.get_pretrained_cfg(name))
        kwargs: dict[str, Any] = {}
        if key is not None and key in state and state[key].ndim >= 1:
            kwargs["num_classes"] = int(state[key].shape[0])
        model = _create(timm, name, pretrained=False, **kwargs)
        load_into(model, state, weights)
    return model.eval()


# --------------------------------------------------------------------------- probing
def _patch_embed(model: nn.Module) -> nn.Module | None:
    """The patch embedding (``patch_embed``, or MLP-Mixer's ``stem``), if the model has one."""
    for attr in ("patch_embed", "stem"):
        embed = getattr(model, attr, None)
        if isinstance(embed, nn.Module) and getattr(embed, "patch_size", None) is not None:
            return embed
    return None


@runtime_checkable
class _DynamicFeatSize(Protocol):
    """A timm patch embedding that computes its token grid for an input size."""

    def dynamic_feat_size(self, img_size: tuple[int, int]) -> tuple[int, int]: ...


def _pair(value: Any) -> tuple[int, int]:  # noqa: ANN401
    if isinstance(value, (tuple, list)):
        return int(value[0]), int(value[-1])
    return int(value), int(value)


def _token_stride(model: nn.Module) -> int | None:
    """Input pixels per patch token (the patch size; a hybrid's CNN stride), or None."""
    grid = timm_token_grid(model, PROBE_SIZE)
    if grid is None or min(grid) <= 0:
        return None
    return max(math.ceil(PROBE_SIZE[0] / grid[0]), math.ceil(PROBE_SIZE[1] / grid[1]))


def timm_token_grid(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    """The ``(h, w)`` patch-token grid of a ViT-style model for an input of ``size`` (H, W).

    ``ceil(H / p) x ceil(W / p)`` when the patch embedding pads (as dcsm builds them),
    ``H // p x W // p`` otherwise; None for a model without a patch embedding.
    """
    embed = _patch_embed(model)
    if embed is None:
        return None
    if isinstance(embed, _DynamicFeatSize):  # timm's own (hybrid embeddings: the CNN's stride)
        h, w = embed.dynamic_feat_size((int(size[0]), int(size[1])))
        return int(h), int(w)
    ph, pw = _pair(embed.patch_size)
    if getattr(embed, "dynamic_img_pad", False):
        return math.ceil(size[0] / ph), math.ceil(size[1] / pw)
    return size[0] // ph, size[1] // pw


def _configured_size(model: nn.Module) -> tuple[int, int] | None:
    size = _pretrained_cfg(model).get("input_size")
    return (int(size[-2]), int(size[-1])) if size else None


def _size_text(size: tuple[int, int] | None) -> str:
    height, width = size or PROBE_SIZE
    return f"{height} x {width}"


def timm_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (H, W) a timm model needs (its configured size), or None when it takes any size:
    built with dynamic sizes, or not marked ``fixed_input_size`` by timm."""
    if getattr(model, "dynamic_img_size", False):
        return None
    return _configured_size(model) if _pretrained_cfg(model).get("fixed_input_size") else None


def _probe(model: nn.Module, paths: Sequence[str], size: tuple[int, int]
           ) -> dict[str, tuple[Any, Any]]:
    """(first input, output) of each module in ``paths`` in one no-grad forward pass at ``size``;
    the model's flags are restored afterwards."""
    modules = dict(model.named_modules())
    seen: dict[str, tuple[Any, Any]] = {}

    def keep(name: str) -> Any:  # noqa: ANN401
        def hook(_m: nn.Module, args: tuple[Any, ...], out: Any) -> None:  # noqa: ANN401
            seen.setdefault(name, (args[0] if args else None, out))
        return hook

    handles = [modules[p].register_forward_hook(keep(p)) for p in dict.fromkeys(paths)]
    training = [m.training for m in model.modules()]
    param = next(model.parameters(), None)
    x = torch.zeros(1, 3, *size, dtype=param.dtype if param is not None else torch.float32,
                    device=param.device if param is not None else "cpu")
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, flag in zip(model.modules(), training, strict=True):
            m.training = flag
    return seen


# --------------------------------------------------------------------------- layouts
def _plausible_grid(a: int, b: int, size: tuple[int, int]) -> bool:
    """Is (a, b) the input size (H, W) reduced by one integer stride?"""
    height, width = size
    for stride in range(1, 129):
        if (a in (height // stride, math.ceil(height / stride))
                and b in (width // stride, math.ceil(width / stride))):
            return True
    return False


def _layout_of(out: Any, model: nn.Module, size: tuple[int, int]) -> str | None:  # noqa: ANN401
    if not isinstance(out, torch.Tensor):
        return None
    if out.ndim == 4:
        nchw = _plausible_grid(out.shape[2], out.shape[3], size)
        nhwc = _plausible_grid(out.shape[1], out.shape[2], size)
        if nchw != nhwc:
            return "nchw" if nchw else "nhwc"
        return None
    if out.ndim == 3:
        grid = timm_token_grid(model, size)
        if grid is None:
            return None
        patches = grid[0] * grid[1]
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        if prefix and out.shape[1] == patches + prefix:
            return f"tokens:{prefix}"
        if out.shape[1] == patches:
            return "tokens:0"
    return None


def _probe_size(model: nn.Module, size: tuple[int, int] | None) -> tuple[int, int]:
    return size or timm_input_size(model) or PROBE_SIZE


def timm_layer_layouts(model: nn.Module, layers: Sequence[str],
                       size: tuple[int, int] | None = None) -> dict[str, str]:
    """The output layout of each layer that dcsm can read, measured by one forward pass.

    ``nchw``, ``nhwc`` or ``tokens:K`` (``(N, K + h * w, D)``, ``K`` prefix tokens before the
    patch tokens in raster order; the grid is :func:`timm_token_grid`). Layers whose output is
    something else (a tuple, tokens in another order or count) are left out. ``size`` is the
    probe input (H, W): by default the model's fixed size if it has one, else 128 x 160.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise DcsmError(f"unknown layer '{missing[0]}' for timm model {_label(model)}")
    size = _probe_size(model, size)
    seen = _probe(model, layers, size)
    layouts = {}
    for name in layers:
        layout = _layout_of(seen.get(name, (None, None))[1], model, size)
        if layout is not None:
            layouts[name] = layout
    return layouts


# --------------------------------------------------------------------------- default layers
def _label(model: nn.Module) -> str:
    """The model's timm name for messages (its class name if timm does not say)."""
    return str(_pretrained_cfg(model).get("architecture") or type(model).__name__)


def _stage_paths(model: nn.Module) -> list[tuple[int, str]]:
    """(reduction, module path) of every feature stage, in order, including the stages that
    ``feature_info`` leaves out: it names only the last module at each reduction, so a sibling
    between two listed modules has the reduction of the later one."""
    info = getattr(model, "feature_info", None)
    modules = dict(model.named_modules())
    entries = [(int(f["reduction"]), str(f["module"])) for f in info or []
               if str(f.get("module", "")) in modules]
    if not entries:
        raise DcsmError(f"timm model {_label(model)} has no usable feature_info: dcsm "
                        "cannot choose its layers")
    stages: list[tuple[int, str]] = []
    last_in_parent: dict[str, str] = {}
    for reduction, path in entries:
        parent, _, child = path.rpartition(".")
        siblings = [n for n, _ in modules[parent].named_children()]
        previous = last_in_parent.get(parent)
        if previous in siblings and child in siblings:
            for between in siblings[siblings.index(previous) + 1:siblings.index(child)]:
                stages.append((reduction, f"{parent}.{between}" if parent else between))
        stages.append((reduction, path))
        last_in_parent[parent] = child
    seen: set[str] = set()
    unique: list[tuple[int, str]] = []
    for reduction, path in stages:
        if path not in seen:
            seen.add(path)
            unique.append((reduction, path))
    return unique


def _candidate_blocks(model: nn.Module, path: str) -> list[str]:
    """The blocks a stage may be split into: its ``blocks`` sequence, or else its children,
    when there are several and every one is itself composite (blocks, not single convolutions
    or norms). Whether they run in sequence is checked by the probe (:func:`_chained`)."""
    stage = dict(model.named_modules())[path]
    blocks = getattr(stage, "blocks", None)
    if isinstance(blocks, nn.Module) and len(list(blocks.children())) > 0:
        prefix, children = f"{path}.blocks", list(blocks.named_children())
    else:
        prefix, children = path, list(stage.named_children())
    if len(children) < 2 or isinstance(stage, nn.ModuleDict):
        return []  # a single child computes what the stage does: keep the stage's name
    if not all(any(True for _ in m.children()) for _, m in children):
        return []
    return [f"{prefix}.{n}" for n, _ in children]


def _chained(stage: str, blocks: list[str], seen: dict[str, tuple[Any, Any]]) -> bool:
    """Did each block take the previous block's output (a sequence, not branches), and is the
    stage's output the last block's (no residual sum or norm after them)?"""
    if not blocks or stage not in seen or any(b not in seen for b in blocks):
        return False
    if seen[stage][1] is not seen[blocks[-1]][1]:
        return False
    return all(seen[b][0] is seen[a][1] for a, b in zip(blocks, blocks[1:], strict=False))


def timm_default_layers(model: nn.Module, size: tuple[int, int] | None = None
                        ) -> tuple[list[str], str, dict[str, str]]:
    """(default layers, Grad-CAM layer, layouts of both) of a timm model (see the module docs).

    One probe forward pass at ``size`` (default as :func:`timm_layer_layouts`) checks that the
    blocks a stage is split into run in sequence, and measures the layouts; a layer whose layout
    dcsm cannot read is replaced by its stage, or dropped.
    """
    size = _probe_size(model, size)
    stages = _stage_paths(model)
    modules = dict(model.named_modules())
    reductions = sorted({r for r, _ in stages})
    if len(reductions) == 1 and len(stages) >= 2:
        # a plain transformer: every feature entry is a block at one resolution
        blocks = [p for _, p in stages]
        last = blocks[-1]
        norm1 = f"{last}.norm1" if f"{last}.norm1" in modules else None
        seen = _probe(model, blocks + ([norm1] if norm1 else []), size)
        layouts = {p: v for p in seen if (v := _layout_of(seen[p][1], model, size))}
        blocks = [b for b in blocks if b in layouts]
        if not blocks:
            raise DcsmError(f"timm model {_label(model)}: dcsm cannot read the output of "
                            "its transformer blocks")
        gradcam = blocks[-1]
        if (getattr(model, "global_pool", None) == "token" and len(blocks) >= 2
                and layouts[blocks[-1]] != "tokens:0"):
            # the head reads only the last block's prefix tokens: its patch tokens get no gradient
            blocks = blocks[:-1]
            gradcam = norm1 if norm1 in layouts else blocks[-1]
        blocks = blocks[-MAX_DEFAULT_LAYERS:]
        return blocks, gradcam, {k: layouts[k] for k in [*blocks, gradcam]}
    deep = set([r for r in reductions if r >= 16][-2:] or reductions[-2:])
    chosen = [(r, p) for r, p in stages if r in deep]
    candidates = {p: _candidate_blocks(model, p) for _, p in chosen}
    gradcam = stages[-1][1]
    probe_paths = [gradcam, *(p for _, p in chosen), *(b for bs in candidates.values() for b in bs)]
    seen = _probe(model, probe_paths, size)
    layouts = {p: v for p in seen if (v := _layout_of(seen[p][1], model, size))}
    per_reduction: dict[int, list[str]] = {}
    for reduction, path in chosen:
        blocks = candidates[path]
        if blocks and _chained(path, blocks, seen) and all(b in layouts for b in blocks):
            per_reduction.setdefault(reduction, []).extend(blocks)
        elif path in layouts:
            per_reduction.setdefault(reduction, []).append(path)
    # at most nine layers: the deepest stride's last blocks take at least five places (all of
    # them if the other stride has fewer than four), the other stride's last blocks the rest
    order = sorted(per_reduction, reverse=True)
    deepest = per_reduction[order[0]] if order else []
    shallower = per_reduction[order[1]] if len(order) > 1 else []
    quota = max(math.ceil(MAX_DEFAULT_LAYERS / 2), MAX_DEFAULT_LAYERS - len(shallower))
    layers = deepest[-quota:]
    room = MAX_DEFAULT_LAYERS - len(layers)
    layers = (shallower[-room:] if room > 0 else []) + layers
    if not layers:
        raise DcsmError(f"timm model {_label(model)}: dcsm cannot read the output of its "
                        "feature stages")
    if gradcam not in layouts:
        gradcam = layers[-1]
    return layers, gradcam, {k: layouts[k] for k in [*layers, gradcam]}


# --------------------------------------------------------------------------- the adapter
def _preprocessing(cfg: dict[str, Any]) -> Preprocessing:
    """timm's normalisation (stated in [0, 1] units) in dcsm's 0..255 units; torchvision's
    ImageNet normalisation when the configuration has none."""
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None or len(mean) != 3 or len(std) != 3:
        return IMAGENET_TORCHVISION
    return Preprocessing.from_unit(mean, std, channel_order="RGB")


def _class_names(n: int) -> list[str]:
    return list(imagenet_class_names()) if n == 1000 else [f"class_{i}" for i in range(n)]


def _pretrained_cfg(model: nn.Module) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):
        return dataclasses.asdict(cfg)
    return dict(cfg) if isinstance(cfg, Mapping) else {}


def timm_adapter(name: str, weights: str | Path | None) -> ModelAdapter:
    """Adapter for ``timm:<name>`` (see the module docs).

    ``input_size`` is (H, W) for a fixed-size model, else None; ``layer_layouts`` holds
    ``'nchw'``, ``'nhwc'`` or ``'tokens:K'`` for each default layer and the Grad-CAM layer.
    """
    name = name.removeprefix(PREFIX)
    model = build_timm(name, weights)
    num_classes = int(getattr(model, "num_classes", 0) or 0)
    if num_classes <= 0:
        raise DcsmError(f"timm model {name} has no classifier head (num_classes 0); pass weights "
                        "of a variant with one")
    input_size = timm_input_size(model)
    try:
        layers, gradcam, layouts = timm_default_layers(model, input_size)
    except DcsmError:
        raise
    except Exception as exc:  # noqa: BLE001 - the model itself failed on the probe input
        configured = _configured_size(model)
        if input_size is not None or configured is None:
            raise DcsmError(f"timm model {name} does not run on a {_size_text(input_size)} "
                            f"input: {first_line(exc)}") from exc
        # some models (halo attention, BAT) need their configured size although timm does not
        # mark them fixed: treat them as fixed-size models
        input_size = configured
        try:
            layers, gradcam, layouts = timm_default_layers(model, input_size)
        except DcsmError:
            raise
        except Exception as exc2:  # noqa: BLE001
            raise DcsmError(f"timm model {name} does not run on a {_size_text(input_size)} "
                            f"input: {first_line(exc2)}") from exc2
    stride = _token_stride(model)
    tokens_only = all(v.startswith("tokens") for v in layouts.values())
    return ModelAdapter(
        name=f"{PREFIX}{name}",
        model=model,
        class_names=_class_names(num_classes),
        preprocess=_preprocessing(_pretrained_cfg(model)),
        default_layers=layers,
        layer_aliases={},
        multilabel=False,
        pooling="mean",
        min_input=stride if tokens_only and stride else 32,
        gradcam_layer=gradcam,
        description=f"timm {name} (weights: {weights})",
        input_size=input_size,
        layer_layouts=dict(layouts),
    )
