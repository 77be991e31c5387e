r"""Multi-label training as in the paper (after Oquab et al. 2015).

The fully convolutional network's class score map is reduced by a **global max pool** to one
score per class, and the loss is the **sigmoid binary cross-entropy** of those scores against
the image-level labels, averaged over classes and images. Training images are **randomly
resized** (one random square side per batch) and flipped (:mod:`dcsm.training.data`).

Defaults (``TrainConfig.for_backbone``):

=====================  ================================  ===================================
setting                ``vgg16`` (VOC, the paper)        ``small_vgg`` (synthetic set)
=====================  ================================  ===================================
optimiser              SGD, momentum 0.9                 Adam
learning rate          0.001 new layers (fc8),           0.001 (every layer is new)
                       x 0.1 = 0.0001 pretrained layers
weight decay           0.0005 (not on biases)            0.0001 (not on biases / batch norm)
schedule               cosine from the rate to 0 over all iterations
epochs                 20                                30
batch size             16                                16
random resizing        square side 256..448, step 32     80..160, step 16
flip                   horizontal, probability 0.5
=====================  ================================  ===================================

**Checkpoints.** ``DIR/last.pt`` holds everything needed to continue (weights, optimiser,
gradient scaler, random state, position in the epoch, history, settings); it is written
atomically at the end of every epoch, every ``checkpoint_every`` iterations, and when the run
is interrupted (Ctrl-C finishes the current iteration, saves, and stops). ``resume=True``
continues from it exactly: the batches of an epoch are planned from the seed and the epoch, so
an interrupted and resumed run gives the same weights as an uninterrupted one. ``DIR/model.pt``
is the model with the best validation mAP so far (the last one without a validation split): the
weights and what explaining needs (class names, preprocessing, architecture), loadable as
``checkpoint:DIR/model.pt`` (or ``checkpoint:DIR``). ``DIR/history.json`` lists per epoch the
training loss, the validation loss, mAP and per-class AP, the learning rate and the time.

On a GPU, training runs with mixed precision (float16 autocast and a gradient scaler) and with
several data-loader workers; on a CPU in float32 in the main process, unless told otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dcsm.datasets.voc import LabelledImage, VOCDataset
from dcsm.errors import DcsmError, first_line
from dcsm.evaluation.metrics import average_precision
from dcsm.io import save_json, write_atomic
from dcsm.training.data import LabelledImages, ResizePlan, epoch_batches, size_batches
from dcsm.training.models import Backbone, build_backbone, parameter_groups

CHECKPOINT_FORMAT = "dcsm-checkpoint"
CHECKPOINT_VERSION = 1
LAST = "last.pt"
MODEL = "model.pt"

_BACKBONE_DEFAULTS: dict[str, dict[str, object]] = {
    "vgg16": {"optimizer": "sgd", "lr": 1e-3, "pretrained_lr_factor": 0.1,
              "weight_decay": 5e-4, "epochs": 20, "batch_size": 16, "min_size": 256,
              "max_size": 448, "size_step": 32},
    "small_vgg": {"optimizer": "adam", "lr": 1e-3, "pretrained_lr_factor": 1.0,
                  "weight_decay": 1e-4, "epochs": 30, "batch_size": 16, "min_size": 80,
                  "max_size": 160, "size_step": 16},
}


@dataclass(frozen=True)
class TrainConfig:
    """Every training setting (see the module docstring for the defaults).

    ``None`` fields take the backbone's default (:meth:`for_backbone`).
    """

    backbone: str = "small_vgg"
    weights: str | None = None
    train_split: str = "train"
    val_split: str | None = "val"
    epochs: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    lr: float | None = None
    pretrained_lr_factor: float | None = None
    momentum: float = 0.9
    weight_decay: float | None = None
    min_size: int | None = None
    max_size: int | None = None
    size_step: int | None = None
    flip: bool = True
    seed: int = 0

    def for_backbone(self) -> TrainConfig:
        """This config with the backbone's defaults filled in, checked."""
        if self.backbone not in _BACKBONE_DEFAULTS:
            raise DcsmError(f"unknown backbone '{self.backbone}'; known: "
                            f"{', '.join(_BACKBONE_DEFAULTS)}")
        defaults = _BACKBONE_DEFAULTS[self.backbone]
        filled = replace(self, **{k: v for k, v in defaults.items()
                                  if getattr(self, k) is None})
        filled.check()
        return filled

    def check(self) -> None:
        """DcsmError for a setting out of range."""
        if self.optimizer not in ("sgd", "adam"):
            raise DcsmError(f"unknown optimiser '{self.optimizer}'; known: sgd, adam")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "lr": self.lr,
                    "min_size": self.min_size, "max_size": self.max_size,
                    "size_step": self.size_step}
        for name, value in positive.items():
            if value is None or not math.isfinite(value) or value <= 0:
                raise DcsmError(f"{name.replace('_', '-')} must be positive, got {value}")
        if not 0 <= (self.pretrained_lr_factor or 0) <= 1 or not 0 <= self.momentum < 1:
            raise DcsmError("the pretrained learning-rate factor must lie in [0, 1] and the "
                            "momentum in [0, 1)")
        if (self.weight_decay or 0) < 0:
            raise DcsmError("weight decay must not be negative")
        if self.min_size > self.max_size:  # type: ignore[operator]
            raise DcsmError(f"min-size {self.min_size} is above max-size {self.max_size}")

    def plan(self) -> ResizePlan:
        """The random-resizing plan."""
        return ResizePlan(int(self.min_size), int(self.max_size), int(self.size_step))  # type: ignore[arg-type]


@dataclass(frozen=True)
class RunOptions:
    """How a run executes (none of it changes the result, except ``amp``)."""

    device: str | None = None
    threads: int | None = None
    workers: int | None = None
    amp: bool | None = None
    checkpoint_every: int = 0
    max_iterations: int | None = None
    progress: bool | None = None
    log: Callable[[str], None] | None = None


# ----------------------------------------------------------------------------- checkpoints
def model_record(backbone: Backbone, class_names: list[str]) -> dict[str, Any]:
    """What explaining needs: architecture, classes, preprocessing and the weights."""
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "arch": backbone.arch, "arch_config": dict(backbone.config),
        "class_names": list(class_names),
        "preprocessing": backbone.preprocess.as_dict(),
        "default_layers": list(backbone.default_layers),
        "model": {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()},
    }


def save_checkpoint(path: Path, record: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file and a rename: never half-written."""
    write_atomic(Path(path), lambda tmp: torch.save(record, tmp))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A dcsm checkpoint (a file, or a training directory: its ``model.pt``), checked."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL
    if not path.is_file():
        raise DcsmError(f"checkpoint '{path}' does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch.load fails on junk in many ways
        raise DcsmError(f"cannot read checkpoint '{path}': {first_line(exc)}") from exc
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise DcsmError(f"'{path}' is not a dcsm checkpoint (written by dcsm train)")
    if record.get("version") != CHECKPOINT_VERSION:
        raise DcsmError(f"checkpoint '{path}' has format version {record.get('version')}; "
                        f"this dcsm reads version {CHECKPOINT_VERSION}")
    for key in ("arch", "class_names", "preprocessing", "model"):
        if key not in record:
            raise DcsmError(f"checkpoint '{path}' lacks '{key}'")
    return record


# ----------------------------------------------------------------------------- helpers
def _device(name: str | None) -> torch.device:
    from dcsm.adapters import resolve_device

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def _cosine(base: float, iteration: int, total: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / max(total, 1)))


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[dict[str, bool]]:
    """Ctrl-C sets a flag (the loop saves and stops); a second Ctrl-C interrupts at once."""
    flag = {"stop": False}
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: object) -> None:
        if flag["stop"]:
            raise KeyboardInterrupt
        flag["stop"] = True

    signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _labels_cache(out: Path, data: VOCDataset, split: str) -> list[LabelledImage]:
    """Image-level labels of a split, read once and kept in ``out/labels.json``."""
    import json

    cache = out / "labels.json"
    key = f"{data.root.resolve()}::{split}"
    stored: dict[str, Any] = {}
    if cache.is_file():
        with contextlib.suppress(ValueError, OSError):
            stored = json.loads(cache.read_text(encoding="utf-8"))
    if key in stored:
        items = [LabelledImage(i, Path(p), tuple(labels)) for i, p, labels in stored[key]]
        if all(item.image.is_file() for item in items[:50]):
            return items
    items = data.labelled_items(split)
    stored[key] = [[item.id, str(item.image), list(item.labels)] for item in items]
    save_json(cache, stored)
    return items


@dataclass
class TrainResult:
    """What a run ended with."""

    out: Path
    epochs_done: int
    iteration: int
    best_map: float | None
    history: list[dict[str, Any]]
    finished: bool


# ----------------------------------------------------------------------------- training
def train(data_root: str | Path, out: str | Path, config: TrainConfig | None = None,
          options: RunOptions | None = None, resume: bool = False,
          sbd: str | Path | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue training) a multi-label classifier into ``out``.

    See the module docstring. Raises DcsmError for bad data, settings or checkpoints.
    """
    options = options or RunOptions()
    log = options.log or (lambda text: print(text, flush=True))
    out = Path(out)
    last = out / LAST
    state: dict[str, Any] | None = None
    if resume:
        if not last.is_file():
            raise DcsmError(f"nothing to resume: '{last}' does not exist")
        state = load_checkpoint(last)
        if "train_config" not in state or "optimizer" not in state:
            raise DcsmError(f"'{last}' is not a dcsm training checkpoint")
        saved = TrainConfig(**state["train_config"])
        if config is not None:
            given = {f.name: getattr(config, f.name) for f in fields(TrainConfig)
                     if getattr(config, f.name) != getattr(TrainConfig(), f.name)}
            clash = {k: v for k, v in given.items()
                     if k != "epochs" and getattr(saved, k) != v}
            if clash:
                name, value = next(iter(clash.items()))
                raise DcsmError(f"'{last}' was trained with {name}={getattr(saved, name)!r}, "
                                f"not {value!r}; a resumed run keeps its settings (only "
                                "--epochs may change)")
            if config.epochs is not None:
                saved = replace(saved, epochs=config.epochs)
        config = saved.for_backbone()
    else:
        if last.exists():
            raise DcsmError(f"'{out}' already holds a training run ({LAST}); pass --resume to "
                            "continue it or choose another --out")
        config = (config or TrainConfig()).for_backbone()

    device = _device(options.device)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    cuda = device.type == "cuda"
    amp = cuda if options.amp is None else bool(options.amp)
    if amp and not cuda:
        raise DcsmError("mixed precision (--amp) needs a CUDA device")
    workers = (min(8, os.cpu_count() or 1) if cuda else 0) if options.workers is None \
        else options.workers

    data = VOCDataset(data_root, sbd)
    out.mkdir(parents=True, exist_ok=True)
    train_items = _labels_cache(out, data, config.train_split)
    val_items = _labels_cache(out, data, config.val_split) if config.val_split else []
    if state is not None and list(state["class_names"]) != data.class_names:
        raise DcsmError(f"'{last}' was trained on classes {state['class_names']}, but the data "
                        f"has {data.class_names}")

    torch.manual_seed(config.seed)
    backbone = build_backbone(config.backbone, data.num_classes, config.weights)
    model = backbone.model.to(device)
    groups = parameter_groups(backbone, float(config.lr), float(config.pretrained_lr_factor),
                              float(config.weight_decay))
    for g in groups:
        g["base_lr"] = g["lr"]
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=float(config.lr),
                                                           momentum=config.momentum)
    else:
        optimizer = torch.optim.Adam(groups, lr=float(config.lr))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    epoch, step, iteration = 0, 0, 0
    history: list[dict[str, Any]] = []
    best_map: float | None = None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        epoch, step, iteration = int(state["epoch"]), int(state["step"]), int(state["iteration"])
        history = list(state["history"])
        best_map = state.get("best_map")
        torch.set_rng_state(state["rng"])
        log(f"resuming {out} at epoch {epoch + 1}, batch {step} (iteration {iteration})")

    train_set = LabelledImages(train_items, data.num_classes, backbone.preprocess,
                               backbone.min_input)
    val_set = LabelledImages(val_items, data.num_classes, backbone.preprocess,
                             backbone.min_input)
    batch_size = int(config.batch_size)  # type: ignore[arg-type]
    per_epoch = math.ceil(len(train_set) / batch_size)
    total = per_epoch * int(config.epochs)  # type: ignore[arg-type]
    plan = config.plan()
    if plan.min_size < backbone.min_input:
        raise DcsmError(f"{config.backbone} needs inputs of at least {backbone.min_input} "
                        f"pixels; min-size is {plan.min_size}")
    progress = sys.stderr.isatty() if options.progress is None else options.progress

    def record(kind: str) -> dict[str, Any]:
        base = model_record(backbone, data.class_names)
        base["train_config"] = asdict(config)
        base["data"] = str(data.root)
        base["history"] = history
        base["best_map"] = best_map
        base["kind"] = kind
        return base

    def save_last() -> None:
        state_now = record("training")
        state_now |= {"optimizer": optimizer.state_dict(),
                      "scaler": scaler.state_dict() if amp else None,
                      "epoch": epoch, "step": step, "iteration": iteration,
                      "rng": torch.get_rng_state()}
        save_checkpoint(last, state_now)

    if not (out / MODEL).exists():
        save_checkpoint(out / MODEL, record("model"))
    log(f"training {config.backbone} on {len(train_set)} images ({config.train_split}), "
        f"validating on {len(val_set)} ({config.val_split}); {data.num_classes} classes, "
        f"{config.epochs} epochs of {per_epoch} batches, device {device}"
        f"{', mixed precision' if amp else ''}, {workers} workers")
    finished = False
    with _graceful_interrupt() as interrupt:
        while epoch < int(config.epochs):  # type: ignore[arg-type]
            started = time.perf_counter()
            batches = epoch_batches(len(train_set), batch_size, epoch, config.seed, plan,
                                    config.flip)
            loader = torch.utils.data.DataLoader(
                train_set, batch_sampler=batches[step:], num_workers=workers,
                pin_memory=cuda, generator=torch.Generator().manual_seed(config.seed))
            model.train()
            losses: list[float] = []
            bar = _bar(progress, per_epoch, step, f"epoch {epoch + 1}/{config.epochs}")
            stopped = False
            for x, y in loader:
                for g in optimizer.param_groups:
                    g["lr"] = _cosine(g["base_lr"], iteration, total)
                x = x.to(device, non_blocking=True)
                y = y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                    scores = model(x).amax(dim=(2, 3))
                loss = F.binary_cross_entropy_with_logits(scores.float(), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                losses.append(float(loss.detach()))
                step += 1
                iteration += 1
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
                at_limit = options.max_iterations is not None \
                    and iteration >= options.max_iterations
                if interrupt["stop"] or at_limit:
                    stopped = True
                    break
                if options.checkpoint_every and iteration % options.checkpoint_every == 0 \
                        and step < per_epoch:
                    save_last()
            if bar is not None:
                bar.close()
            if stopped and step < per_epoch:
                save_last()
                why = "interrupted" if interrupt["stop"] else "iteration limit reached"
                log(f"{why}: saved {last} at epoch {epoch + 1}, batch {step}; continue with "
                    "--resume")
                if interrupt["stop"]:
                    raise KeyboardInterrupt
                break
            entry: dict[str, Any] = {
                "epoch": epoch + 1, "iterations": iteration,
                "loss": float(np.mean(losses)) if losses else None,
                "lr": optimizer.param_groups[0]["lr"]}
            if len(val_set):
                entry |= validate(model, val_set, device, amp, batch_size, workers,
                                  data.class_names)
            entry["seconds"] = round(time.perf_counter() - started, 2)
            history.append(entry)
            epoch, step = epoch + 1, 0
            improved = len(val_set) == 0 or best_map is None or (
                entry.get("val_map") is not None and entry["val_map"] > best_map)
            if improved:
                best_map = entry.get("val_map", best_map)
                save_checkpoint(out / MODEL, record("model"))
            save_last()
            save_json(out / "history.json", history)
            log(_epoch_line(entry, int(config.epochs), improved and len(val_set) > 0))  # type: ignore[arg-type]
            if stopped:
                if interrupt["stop"]:
                    log(f"interrupted: saved {last} after epoch {epoch}; continue with "
                        "--resume")
                    raise KeyboardInterrupt
                break
        else:
            finished = True
    if finished:
        log(f"done: {out / MODEL} (best validation mAP {best_map:.4f})" if best_map is not None
            else f"done: {out / MODEL}")
    return TrainResult(out, epoch, iteration, best_map, history, finished)


def _bar(enabled: bool, total: int, initial: int, desc: str):  # noqa: ANN202 - tqdm or None
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True,
                leave=False)


def _epoch_line(entry: dict[str, Any], epochs: int, best: bool) -> str:
    text = f"epoch {entry['epoch']}/{epochs}: loss {entry['loss']:.4f}"
    if "val_map" in entry:
        text += f", val loss {entry['val_loss']:.4f}, val mAP {entry['val_map']:.4f}"
        text += " (best)" if best else ""
    return text + f", {entry['seconds']:.0f} s"


@torch.no_grad()
def validate(model: torch.nn.Module, val_set: LabelledImages, device: torch.device, amp: bool,
             batch_size: int, workers: int, class_names: list[str]) -> dict[str, Any]:
    """Validation loss, mAP and per-class AP, each image at its own size."""
    model.eval()
    loader = torch.utils.data.DataLoader(
        val_set, batch_sampler=size_batches(val_set.items, batch_size, val_set.min_input),
        num_workers=workers, pin_memory=device.type == "cuda")
    scores, targets, losses = [], [], []
    for x, y in loader:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            s = model(x.to(device)).amax(dim=(2, 3)).float()
        losses.append(float(F.binary_cross_entropy_with_logits(s, y.to(device),
                                                                reduction="sum")))
        scores.append(s.cpu().numpy())
        targets.append(y.numpy())
    all_scores, all_targets = np.concatenate(scores), np.concatenate(targets)
    ap = average_precision(all_scores, all_targets)
    return {"val_loss": sum(losses) / all_targets.size,
            "val_map": float(np.nanmean(ap)) if np.isfinite(ap).any() else None,
            "val_ap": {name: (None if np.isnan(v) else float(v))
                       for name, v in zip(class_names, ap, strict=True)}}
