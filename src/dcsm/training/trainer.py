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
is interrupted (Ctrl-C or SIGTERM finishes the current iteration, saves, and stops; the
data-loader workers end with the run even when it is killed, :mod:`dcsm.processes`).
``resume=True`` continues from it exactly: the batches of an epoch are planned from the seed and
the epoch, so an interrupted and resumed run gives the same weights as an uninterrupted one.
``DIR/model.pt`` is the model with the best validation mAP so far (the last one without a
validation split): the weights and what explaining needs (class names, preprocessing,
architecture), loadable as ``checkpoint:DIR/model.pt`` (or ``checkpoint:DIR``). It is first
written when the first epoch completes: a run stopped before that has no model to offer
(``checkpoint:`` says so). The file format is :mod:`dcsm.pipeline.adapters.checkpoint`'s.
``DIR/history.json`` lists per epoch the training loss, the validation loss, mAP and per-class AP,
the learning rate and the time. A run holds ``DIR/.dcsm-train.lock`` (an advisory lock, released
however the process ends), so a second run into ``DIR`` is refused; holding it, a run first deletes
the temporary files (``.last.partial-<hex>.pt`` and the like) that a killed run left there.

On a GPU, training runs with mixed precision (float16 autocast and a gradient scaler) and with
several data-loader workers; on a CPU in float32 in the main process, unless told otherwise.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from dcsm.datasets.voc import LabelledImage, VOCDataset
from dcsm.errors import DcsmError, first_line
from dcsm.evaluation.metrics import average_precision
from dcsm.io import save_json
from dcsm.io.records import Journal
from dcsm.pipeline.adapters import resolve_device
from dcsm.pipeline.adapters.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    LAST,
    MODEL,
    load_checkpoint,
    model_record,
    save_checkpoint,
)
from dcsm.processes import ParentWatch, Terminated
from dcsm.training.data import LabelledImages, ResizePlan, epoch_batches, size_batches
from dcsm.training.models import Backbone, build_backbone, parameter_groups

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LAST",
    "MODEL",
    "RunOptions",
    "TrainConfig",
    "TrainResult",
    "load_checkpoint",
    "model_record",
    "save_checkpoint",
    "train",
    "validate",
]

#: The lock file a run holds in its directory (:func:`_hold`).
RUN_LOCK = ".dcsm-train.lock"
#: The files a run writes into its directory (atomically, through temporary names).
_RUN_FILES = frozenset({LAST, MODEL, "history.json", "labels.json"})
_PARTIAL = re.compile(r"^\.(?P<stem>.+)\.partial-[0-9a-f]{12}(?P<suffix>\.[A-Za-z]+)$")

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
        missing: dict[str, Any] = {k: v for k, v in defaults.items() if getattr(self, k) is None}
        filled = replace(self, **missing)
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
        if _filled(self.min_size, "min_size") > _filled(self.max_size, "max_size"):
            raise DcsmError(f"min-size {self.min_size} is above max-size {self.max_size}")

    def plan(self) -> ResizePlan:
        """The random-resizing plan."""
        return ResizePlan(int(_filled(self.min_size, "min_size")),
                          int(_filled(self.max_size, "max_size")),
                          int(_filled(self.size_step, "size_step")))


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


# ----------------------------------------------------------------------------- helpers
def _device(name: str | None) -> torch.device:
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


def _cosine(base: float, iteration: int, total: int) -> float:
    return base * 0.5 * (1.0 + math.cos(math.pi * min(iteration, total) / max(total, 1)))


@contextlib.contextmanager
def _graceful_interrupt() -> Iterator[dict[str, Any]]:
    """Ctrl-C or SIGTERM sets a flag (the loop saves and stops; ``flag["signal"]`` says which);
    a second one interrupts at once (:class:`KeyboardInterrupt`, :class:`Terminated` for
    SIGTERM)."""
    flag: dict[str, Any] = {"stop": False, "signal": None}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    signals = [signal.SIGINT] + ([signal.SIGTERM] if hasattr(signal, "SIGTERM") else [])
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: object) -> None:
        if flag["stop"]:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        flag["stop"], flag["signal"] = True, signum

    for s in signals:
        signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, handler_before in previous.items():
            signal.signal(s, handler_before if handler_before is not None else signal.SIG_DFL)


def _stop(interrupt: dict[str, Any]) -> KeyboardInterrupt:
    """What an interrupted run raises once saved: :class:`Terminated` after SIGTERM."""
    return Terminated() if interrupt["signal"] == getattr(signal, "SIGTERM", None) \
        else KeyboardInterrupt()


def _labels_cache(out: Path, data: VOCDataset, split: str) -> list[LabelledImage]:
    """Image-level labels of a split, read once and kept in ``out/labels.json``."""
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


# ----------------------------------------------------------------------------- the steps
@dataclass(frozen=True)
class _Runtime:
    """Where and how the run computes: device, mixed precision, loader workers, the bar."""

    device: torch.device
    amp: bool
    workers: int
    progress: bool

    @property
    def cuda(self) -> bool:
        """Whether the run is on a CUDA device."""
        return self.device.type == "cuda"


def _runtime(options: RunOptions) -> _Runtime:
    """The device, precision and workers ``options`` ask for, checked."""
    device = _device(options.device)
    if options.threads is not None:
        torch.set_num_threads(options.threads)
    cuda = device.type == "cuda"
    amp = cuda if options.amp is None else bool(options.amp)
    if amp and not cuda:
        raise DcsmError("mixed precision (--amp) needs a CUDA device")
    workers = (min(8, os.cpu_count() or 1) if cuda else 0) if options.workers is None \
        else options.workers
    progress = sys.stderr.isatty() if options.progress is None else bool(options.progress)
    return _Runtime(device, amp, workers, progress)


def _resume_settings(last: Path, config: TrainConfig | None
                     ) -> tuple[dict[str, Any], TrainConfig]:
    """The state saved in ``last`` and the run's settings: those it was started with, only
    ``epochs`` changed if ``config`` gives it; DcsmError for any other setting that differs."""
    if not last.is_file():
        raise DcsmError(f"nothing to resume: '{last}' does not exist")
    state = load_checkpoint(last)
    if "train_config" not in state or "optimizer" not in state:
        raise DcsmError(f"'{last}' is not a dcsm training checkpoint")
    saved = TrainConfig(**state["train_config"])
    if config is not None:
        given = {f.name: getattr(config, f.name) for f in fields(TrainConfig)
                 if getattr(config, f.name) != getattr(TrainConfig(), f.name)}
        clash = {k: v for k, v in given.items() if k != "epochs" and getattr(saved, k) != v}
        if clash:
            name, value = next(iter(clash.items()))
            raise DcsmError(f"'{last}' was trained with {name}={getattr(saved, name)!r}, "
                            f"not {value!r}; a resumed run keeps its settings (only "
                            "--epochs may change)")
        if config.epochs is not None:
            saved = replace(saved, epochs=config.epochs)
    return state, saved.for_backbone()


def _new_settings(out: Path, config: TrainConfig | None) -> TrainConfig:
    """The settings of a new run into ``out``, checked; DcsmError if ``out`` holds a run."""
    if (out / LAST).exists():
        raise DcsmError(f"'{out}' already holds a training run ({LAST}); pass --resume to "
                        "continue it or choose another --out")
    return (config or TrainConfig()).for_backbone()


def _make_out(out: Path) -> None:
    """Create the run directory; DcsmError (one line) when it cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or first_line(exc)
        raise DcsmError(f"cannot create the run directory '{out}': {reason}") from exc


@contextlib.contextmanager
def _hold(out: Path) -> Iterator[None]:
    """Hold ``out/.dcsm-train.lock`` for the block: an advisory lock (POSIX), released however
    the process ends; DcsmError when another run holds it."""
    # A journal that is never written: its open() takes the lock, or says who holds it.
    lock = Journal(out / RUN_LOCK, busy=f"another dcsm train run is using '{out}'")
    lock.open()
    try:
        yield
    finally:
        lock.close()


def remove_stale_partials(out: Path) -> int:
    """Delete the temporary files (``.last.partial-<hex>.pt`` and the like, from
    :func:`dcsm.io.write_atomic`) a killed run left for the files a run writes into ``out``;
    how many. Only while holding the run's lock: no live run is writing them."""
    removed = 0
    try:
        entries = list(out.iterdir())
    except OSError:
        return 0
    for entry in entries:
        m = _PARTIAL.match(entry.name)
        if m and m.group("stem") + m.group("suffix") in _RUN_FILES and entry.is_file() \
                and not entry.is_symlink():
            with contextlib.suppress(OSError):
                entry.unlink()
                removed += 1
    return removed


@dataclass
class _Run:
    """A training run in progress: the network, its optimiser, and where the run stands."""

    out: Path
    config: TrainConfig
    data: VOCDataset
    backbone: Backbone
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    runtime: _Runtime
    train_set: LabelledImages
    val_set: LabelledImages
    epoch: int = 0
    step: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_map: float | None = None

    @property
    def model(self) -> torch.nn.Module:
        """The network being trained."""
        return self.backbone.model

    @property
    def batch_size(self) -> int:
        """Images per batch."""
        return int(_filled(self.config.batch_size, "batch_size"))

    @property
    def epochs(self) -> int:
        """Epochs in all."""
        return int(_filled(self.config.epochs, "epochs"))

    @property
    def per_epoch(self) -> int:
        """Batches per epoch."""
        return math.ceil(len(self.train_set) / self.batch_size)

    @property
    def total(self) -> int:
        """Iterations in all (the length of the cosine schedule)."""
        return self.per_epoch * self.epochs

    def record(self, kind: str) -> dict[str, Any]:
        """The checkpoint record of the current weights
        (:mod:`dcsm.pipeline.adapters.checkpoint`)."""
        base = model_record(self.backbone, self.data.class_names, self.history, self.best_map)
        base["train_config"] = asdict(self.config)
        base["data"] = str(self.data.root)
        base["kind"] = kind
        return base

    def save_last(self) -> None:
        """``last.pt``: everything needed to continue from here."""
        state = self.record("training")
        state |= {"optimizer": self.optimizer.state_dict(),
                  "scaler": self.scaler.state_dict() if self.runtime.amp else None,
                  "epoch": self.epoch, "step": self.step, "iteration": self.iteration,
                  "rng": torch.get_rng_state()}
        save_checkpoint(self.out / LAST, state)

    def save_model(self) -> None:
        """``model.pt``: the model to explain (only ever after a completed epoch)."""
        save_checkpoint(self.out / MODEL, self.record("model"))

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a ``last.pt`` record."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self.iteration = int(state["iteration"])
        self.history = list(state["history"])
        self.best_map = state.get("best_map")
        torch.set_rng_state(state["rng"])


def _build(out: Path, config: TrainConfig, data: VOCDataset, runtime: _Runtime,
           train_items: list[LabelledImage], val_items: list[LabelledImage]) -> _Run:
    """The seeded network, its optimiser and scaler, and the data sets, at the start."""
    torch.manual_seed(config.seed)
    backbone = build_backbone(config.backbone, data.num_classes, config.weights)
    backbone.model.to(runtime.device)
    lr = float(_filled(config.lr, "lr"))
    groups = parameter_groups(backbone, lr, float(_filled(config.pretrained_lr_factor,
                                                          "pretrained_lr_factor")),
                              float(_filled(config.weight_decay, "weight_decay")))
    for g in groups:
        g["base_lr"] = g["lr"]
    if config.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(groups, lr=lr,
                                                           momentum=config.momentum)
    else:
        optimizer = torch.optim.Adam(groups, lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=runtime.amp)
    train_set, val_set = (
        LabelledImages(items, data.num_classes, backbone.preprocess, backbone.min_input)
        for items in (train_items, val_items))
    return _Run(out, config, data, backbone, optimizer, scaler, runtime, train_set, val_set)


_Setting = TypeVar("_Setting", int, float)


def _filled(value: _Setting | None, name: str) -> _Setting:
    """A setting that :meth:`TrainConfig.for_backbone` has filled in."""
    if value is None:
        raise DcsmError(f"training setting {name} is not set (TrainConfig.for_backbone fills it)")
    return value


def _check_sizes(run: _Run) -> None:
    """DcsmError when random resizing would go below the network's smallest input."""
    plan = run.config.plan()
    if plan.min_size < run.backbone.min_input:
        raise DcsmError(f"{run.config.backbone} needs inputs of at least "
                        f"{run.backbone.min_input} pixels; min-size is {plan.min_size}")


def _train_epoch(run: _Run, options: RunOptions, interrupt: dict[str, Any]
                 ) -> tuple[list[float], bool]:
    """The batches of the current epoch from ``run.step`` on: (their losses, whether the run
    stopped early: interrupted, or at ``options.max_iterations``)."""
    config, rt = run.config, run.runtime
    batches = epoch_batches(len(run.train_set), run.batch_size, run.epoch, config.seed,
                            config.plan(), config.flip)
    loader = torch.utils.data.DataLoader(
        run.train_set, batch_sampler=batches[run.step:], num_workers=rt.workers,
        pin_memory=rt.cuda, generator=torch.Generator().manual_seed(config.seed),
        worker_init_fn=ParentWatch() if rt.workers else None)
    run.model.train()
    losses: list[float] = []
    bar = _bar(rt.progress, run.per_epoch, run.step, f"epoch {run.epoch + 1}/{run.epochs}")
    stopped = False
    try:
        for x, y in loader:
            losses.append(_train_step(run, x, y))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
            at_limit = options.max_iterations is not None \
                and run.iteration >= options.max_iterations
            if interrupt["stop"] or at_limit:
                stopped = True
                break
            if options.checkpoint_every and run.iteration % options.checkpoint_every == 0 \
                    and run.step < run.per_epoch:
                run.save_last()
    finally:
        if bar is not None:
            bar.close()
    return losses, stopped


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimiser step on a batch (the cosine learning rate set first); its loss."""
    rt = run.runtime
    for g in run.optimizer.param_groups:
        g["lr"] = _cosine(g["base_lr"], run.iteration, run.total)
    x = x.to(rt.device, non_blocking=True)
    y = y.to(rt.device, non_blocking=True)
    with torch.autocast(rt.device.type, dtype=torch.float16, enabled=rt.amp):
        scores = run.model(x).amax(dim=(2, 3))
    loss = F.binary_cross_entropy_with_logits(scores.float(), y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.step += 1
    run.iteration += 1
    return float(loss.detach())


def _end_epoch(run: _Run, losses: list[float], started: float) -> tuple[dict[str, Any], bool]:
    """Validate, add the epoch to the history, export ``model.pt`` if it is the best so far,
    save ``last.pt`` and ``history.json``: (the history entry, whether it is the best)."""
    rt = run.runtime
    entry: dict[str, Any] = {
        "epoch": run.epoch + 1, "iterations": run.iteration,
        "loss": float(np.mean(losses)) if losses else None,
        "lr": run.optimizer.param_groups[0]["lr"]}
    validating = len(run.val_set) > 0
    if validating:
        entry |= validate(run.model, run.val_set, rt.device, rt.amp, run.batch_size,
                          rt.workers, run.data.class_names)
    entry["seconds"] = round(time.perf_counter() - started, 2)
    run.history.append(entry)
    run.epoch, run.step = run.epoch + 1, 0
    improved = not validating or run.best_map is None or (
        entry.get("val_map") is not None and entry["val_map"] > run.best_map)
    if improved:
        run.best_map = entry.get("val_map", run.best_map)
        run.save_model()
    run.save_last()
    save_json(run.out / "history.json", run.history, nan_as_null=True)  # a diverged loss
    return entry, improved and validating


def _loop(run: _Run, options: RunOptions, log: Callable[[str], None]) -> bool:
    """Train epoch after epoch; True when every epoch is done, False when stopped early (saved
    to resume). Ctrl-C (SIGTERM) finishes the current batch, saves and raises KeyboardInterrupt
    (:class:`dcsm.processes.Terminated`)."""
    last = run.out / LAST
    with _graceful_interrupt() as interrupt:
        while run.epoch < run.epochs:
            started = time.perf_counter()
            losses, stopped = _train_epoch(run, options, interrupt)
            if stopped and run.step < run.per_epoch:
                run.save_last()
                why = "interrupted" if interrupt["stop"] else "iteration limit reached"
                log(f"{why}: saved {last} at epoch {run.epoch + 1}, batch {run.step}; continue "
                    "with --resume")
                if interrupt["stop"]:
                    raise _stop(interrupt)
                return False
            entry, best = _end_epoch(run, losses, started)
            log(_epoch_line(entry, run.epochs, best))
            if stopped:
                if interrupt["stop"]:
                    log(f"interrupted: saved {last} after epoch {run.epoch}; continue with "
                        "--resume")
                    raise _stop(interrupt)
                return False
    return True


# ----------------------------------------------------------------------------- training
def train(data_root: str | Path, out: str | Path, config: TrainConfig | None = None,
          options: RunOptions | None = None, resume: bool = False,
          sbd: str | Path | None = None) -> TrainResult:
    """Train (or, with ``resume``, continue training) a multi-label classifier into ``out``.

    See the module docstring. Raises DcsmError for bad data, settings or checkpoints, and for
    a run directory that cannot be created or written.
    """
    options = options or RunOptions()
    log = options.log or (lambda text: print(text, flush=True))
    out = Path(out)
    state: dict[str, Any] | None = None
    if resume:
        state, config = _resume_settings(out / LAST, config)
    else:
        config = _new_settings(out, config)
    runtime = _runtime(options)
    data = VOCDataset(data_root, sbd)
    _make_out(out)
    with _hold(out):
        removed = remove_stale_partials(out)
        if removed:
            log(f"removed {removed} temporary file(s) an interrupted run left in {out}")
        train_items = _labels_cache(out, data, config.train_split)
        val_items = _labels_cache(out, data, config.val_split) if config.val_split else []
        if state is not None and list(state["class_names"]) != data.class_names:
            raise DcsmError(f"'{out / LAST}' was trained on classes {state['class_names']}, but "
                            f"the data has {data.class_names}")
        run = _build(out, config, data, runtime, train_items, val_items)
        if state is not None:
            run.restore(state)
            log(f"resuming {out} at epoch {run.epoch + 1}, batch {run.step} (iteration "
                f"{run.iteration})")
        _check_sizes(run)
        log(f"training {config.backbone} on {len(run.train_set)} images ({config.train_split}), "
            f"validating on {len(run.val_set)} ({config.val_split}); {data.num_classes} classes, "
            f"{config.epochs} epochs of {run.per_epoch} batches, device {runtime.device}"
            f"{', mixed precision' if runtime.amp else ''}, {runtime.workers} workers")
        finished = _loop(run, options, log)
        if finished:
            log(f"done: {out / MODEL} (best validation mAP {run.best_map:.4f})"
                if run.best_map is not None else f"done: {out / MODEL}")
        return TrainResult(out, run.epoch, run.iteration, run.best_map, run.history, finished)


def _bar(enabled: bool, total: int, initial: int, desc: str) -> tqdm[NoReturn] | None:
    if not enabled:
        return None
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
        num_workers=workers, pin_memory=device.type == "cuda",
        worker_init_fn=ParentWatch() if workers else None)
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
