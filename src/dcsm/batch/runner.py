"""The batch runner: every input of this rank's shard explained (and segmented), resumably.

For each image not done yet (see :mod:`dcsm.batch.manifest`): decode it in a loader worker,
compute the maps (and the segmentation), write ``DIR/<name>/`` exactly as ``dcsm explain``
(``dcsm segment``) does under a temporary name, rename it into place, and only then append the
``done`` record. An image that cannot be read or explained gets a ``failed`` record with the
reason and the run goes on.

The segmentation and the writing (dense CRF or GrabCut, PNG previews, figures) need no model:
with ``writers`` processes (:class:`BatchOptions`; by default one per spare core with the model
on a GPU, up to 8, and one on a CPU with a core left free) they run there while this process
explains the next images, so the device does not wait for them. The records still
follow the inputs' order.

Example::

    import dcsm
    from dcsm.batch import BatchOptions, discover, run

    explainer = dcsm.DistinctSaliency(dcsm.load_model(), scales=[1.0])
    report = run(explainer, discover("images/"), "out/", BatchOptions(classes="auto"))
    report.done, report.skipped, report.failed  # counts; report.failures: (key, reason)
"""

from __future__ import annotations

import multiprocessing
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import torch

import dcsm
from dcsm.api import Explainer
from dcsm.batch.inputs import InputItem
from dcsm.batch.loader import Loaded, iterate
from dcsm.batch.manifest import Manifest
from dcsm.batch.progress import Progress
from dcsm.batch.shard import Group, Rank, shard
from dcsm.errors import DcsmError, failure_reason
from dcsm.io import DEFAULT_MAX_PIXELS, remove_path
from dcsm.outputs import output_dir, write_explanation
from dcsm.pipeline.adapters.weights import weights_digest
from dcsm.pipeline.candidates import UnevenCandidates, parse_classes
from dcsm.pipeline.images import image_input, working_size
from dcsm.pipeline.result import SaliencyResult
from dcsm.processes import follow_parent
from dcsm.segmentation import segment

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:partial|trash)-[0-9a-f]{12}$")


@dataclass
class BatchOptions:
    """What to compute for each image, and how to run.

    ``classes``, ``top_k``, ``threshold`` and ``per_layer`` are those of
    :meth:`dcsm.DistinctSaliency.explain`; ``segmenter`` (``"crf"`` or ``"grabcut"``, None for
    maps only) and ``segment_params`` those of :func:`dcsm.segment`. ``workers``: decoding
    processes (0: decode in this process). ``force``: redo outputs made with other settings
    instead of stopping. ``progress``: the bar (None: on a terminal, rank 0 only).
    ``max_side``: the working resolution of the segmentation (the explainer has its own).
    ``batch_size``: images explained together, one tensor batch per working-resolution size
    (:func:`batches`); the maps equal those of one image at a time. ``pictures``: False writes
    the data files only (:func:`dcsm.outputs.write_explanation`). ``writers``: processes that
    segment and write the outputs while the model explains the next images (0: in this
    process, in turn); None: :func:`default_writers`.
    """

    classes: str | Sequence[str | int] | None = None
    top_k: int | None = None
    threshold: float | None = None
    per_layer: bool = False
    segmenter: str | None = None
    segment_params: Mapping[str, Any] = field(default_factory=dict)
    workers: int = 2
    force: bool = False
    progress: bool | None = None
    max_side: int | None = 512
    batch_size: int = 1
    pictures: bool = True
    writers: int | None = None


@dataclass
class BatchReport:
    """What a run did: ``total`` inputs, ``assigned`` to the rank(s), of which ``skipped``
    (already done), ``done`` now and ``failed`` now. The counts are over all ``ranks`` when a
    process group summed them, else this rank's; ``failures`` lists this rank's (key, reason).
    """

    total: int
    assigned: int
    skipped: int
    done: int
    failed: int
    failures: list[tuple[str, str]]
    seconds: float
    manifest: Path
    ranks: int = 1

    @property
    def images_per_second(self) -> float:
        """Images processed (done or failed) in this run per second of it."""
        n = self.done + self.failed
        return n / self.seconds if self.seconds > 0 else 0.0


def run_settings(explainer: Explainer, options: BatchOptions) -> dict[str, Any]:
    """The settings that decide the outputs (the manifest's fingerprint is taken of them).

    The device, the number of ranks and workers and the progress bar do not count.
    """
    classes = parse_classes(options.classes)
    seg = None
    if options.segmenter is not None:
        seg = {"segmenter": options.segmenter, "parameters": dict(options.segment_params)}
    return {
        "dcsm": dcsm.__version__,
        "model": explainer.adapter.name,
        "weights_sha256": weights_digest(explainer.adapter.model),
        "method": explainer.method,
        "parameters": explainer.parameters(),
        "classes": "auto" if classes is None else list(classes),
        "top_k": options.top_k,
        "threshold": options.threshold,
        "per_layer": options.per_layer,
        "segmentation": seg,
        # only when off, so that the manifests of earlier runs keep their fingerprint
        **({} if options.pictures else {"pictures": False}),
    }


def check_classes(explainer: Explainer, options: BatchOptions) -> None:
    """Fail before any work if a named class is unknown (it would fail every image)."""
    named = parse_classes(options.classes)
    for c in named or []:
        explainer.adapter.class_index(c)


def remove_leftovers(out: Path, names: set[str]) -> int:
    """Delete temporary directories a killed run left for ``names`` (this rank's images)."""
    removed = 0
    try:
        entries = list(out.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        m = _LEFTOVER.match(entry.name)
        if m and m.group("name") in names:
            remove_path(entry)
            removed += 1
    return removed


def explain_group(explainer: Explainer, images: list[Any], options: BatchOptions
                  ) -> list[SaliencyResult]:
    """The explanations of images that share one working-resolution size, as one tensor batch
    (one by one where automatic candidates differ in number between them)."""
    if len(images) == 1:
        return [explain_one(explainer, images[0], options)]
    adapter = explainer.adapter
    max_side = explainer.max_side
    size = working_size(images[0].shape[0], images[0].shape[1], max_side)
    x = torch.cat([image_input(adapter, im, size) for im in images])
    try:
        batch = explainer.explain(x, **_explain_options(options))
    except UnevenCandidates:
        return [explain_one(explainer, im, options) for im in images]
    return batch.results(images)


def batches(samples: Iterable[Loaded], size: int, max_side: int | None,
            hold: int | None = None) -> Iterator[list[Loaded]]:
    """Group decoded images by their working-resolution size, ``size`` at most per group.

    A group goes out when full; when more than ``hold`` images (default ``4 * size``) wait, the
    largest group goes out as it is; the rest at the end. Unreadable samples go out alone.
    """
    hold = 4 * size if hold is None else hold
    waiting: dict[tuple[int, int], list[Loaded]] = {}
    count = 0
    for sample in samples:
        if sample.image is None or size <= 1:
            yield [sample]
            continue
        key = working_size(sample.image.shape[0], sample.image.shape[1], max_side)
        group = waiting.setdefault(key, [])
        group.append(sample)
        count += 1
        if len(group) >= size:
            count -= len(group)
            yield waiting.pop(key)
        elif count > hold:
            largest = max(waiting, key=lambda k: len(waiting[k]))
            count -= len(waiting[largest])
            yield waiting.pop(largest)
    for group in waiting.values():
        yield group


def _explain_options(options: BatchOptions) -> dict[str, Any]:
    """The keyword arguments of ``explain`` the options give."""
    return {"classes": options.classes, "top_k": options.top_k,
            "threshold": options.threshold, "per_layer": options.per_layer}


def explain_one(explainer: Explainer, image: Any, options: BatchOptions) -> SaliencyResult:
    """One image's explanation with the options' candidates."""
    return explainer.explain(image, **_explain_options(options))


def write_result(result: SaliencyResult, path: str, name: str, out: Path,
                 options: BatchOptions) -> tuple[list[dict[str, Any]], float]:
    """Segment (if asked) and write ``out/<name>/`` atomically; the candidates and the seconds
    it took. Needs no model, so it can run in a writer process."""
    start = time.perf_counter()
    seg = None
    if options.segmenter is not None:
        seg = segment(result, segmenter=options.segmenter, max_side=options.max_side,
                      **dict(options.segment_params))
    with output_dir(out, name) as tmp:
        write_explanation(result, tmp, path, seg, pictures=options.pictures)
    cands = [{"name": c.name, "index": c.index, "score": c.score} for c in result.candidates]
    return cands, time.perf_counter() - start


def default_writers(explainer: Explainer, decoders: int = 2) -> int:
    """``writers=None``: how many writer processes to start.

    With the model on a GPU the CPU cores are free for the writers: one per core beside this
    process and the ``decoders`` loader workers, from 1 to 8 (the dense CRF of ``--segment``
    takes one core 0.28 s for a 500 x 375 photo, GrabCut 1.1 s: at 100 photos a second the GPU
    outruns any number of writers a machine has).
    On the CPU one writer when the model's threads leave a core free (``--threads``), else none
    (it would slow the model down). The cores are shared among the processes torchrun starts on
    this machine (``LOCAL_WORLD_SIZE``).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        (os.cpu_count() or 1)
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    mine = max(1, cores // local)
    if explainer.adapter.device.type == "cuda":
        return max(1, min(8, mine - 1 - decoders))
    return 1 if torch.get_num_threads() < mine else 0


def _writer_start(parent: int | None = None) -> None:
    """A writer process ends with ``parent`` (:func:`dcsm.processes.follow_parent`) and computes
    on one thread: the model's process has the others."""
    if parent is not None:
        follow_parent(parent)
    torch.set_num_threads(1)


TagT = TypeVar("TagT")

Outcome = tuple[TagT, Any, BaseException | None]
"""What :class:`Writers` hands back for a job: its tag, its value (None if it failed) and its
error (None if it did not)."""


class Writers(Generic[TagT]):
    """Runs ``job`` (default :func:`write_result`, a module-level function) in ``processes``
    worker processes (0: at once, here) and hands back the outcomes in the order the jobs came,
    at most ``ahead`` of them in flight.

    Outcomes known without a job (:meth:`fail`) take their turn in the same queue. A worker
    that dies (killed, out of memory) breaks the pool: its jobs and every later one run in this
    process instead, so no image is lost to it. The workers end with this process, however it
    ends (:func:`dcsm.processes.follow_parent`).
    """

    def __init__(self, processes: int, ahead: int | None = None,
                 job: Callable[..., Any] = write_result) -> None:
        # "spawn": the workers start clean, holding neither CUDA state nor this process's files
        self.pool = ProcessPoolExecutor(
            processes, mp_context=multiprocessing.get_context("spawn"),
            initializer=_writer_start, initargs=(os.getpid(),)) if processes > 0 else None
        self.ahead = 2 * processes if ahead is None else ahead
        self.job = job
        self.jobs: deque[tuple[TagT, tuple[Any, ...], Future[Any] | None]] = deque()

    def submit(self, tag: TagT, *args: Any) -> list[Outcome[TagT]]:
        """Queue ``job(*args)``; the outcomes ``(tag, value, error)`` complete by now."""
        future = None
        if self.pool is not None:
            try:
                future = self.pool.submit(self.job, *args)
            except BrokenProcessPool:
                self.pool = None
        self.jobs.append((tag, args, future))
        return self._ready()

    def fail(self, tag: TagT, error: BaseException) -> list[Outcome[TagT]]:
        """Queue an outcome known already (an image that could not be read or explained), so
        that it comes back in its turn; the outcomes complete by now."""
        known: Future[Any] = Future()
        known.set_exception(error)
        self.jobs.append((tag, (), known))
        return self._ready()

    def _ready(self) -> list[Outcome[TagT]]:
        ready = []
        while self.jobs and (len(self.jobs) > self.ahead or self.jobs[0][2] is None
                             or self.jobs[0][2].done()):
            ready.append(self._next())
        return ready

    def drain(self) -> list[Outcome[TagT]]:
        """Every outcome still to come, in order (waits for them)."""
        return [self._next() for _ in range(len(self.jobs))]

    def _next(self) -> Outcome[TagT]:
        tag, args, future = self.jobs.popleft()
        if future is not None:
            try:
                return tag, future.result(), None
            except BrokenProcessPool:
                self.pool = None  # written here below, as every later job
            except Exception as exc:  # noqa: BLE001 - the job's own error, recorded
                return tag, None, exc
        try:
            return tag, self.job(*args), None
        except Exception as exc:  # noqa: BLE001 - recorded
            return tag, None, exc

    def close(self) -> None:
        """Stop the workers (jobs not started are dropped)."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


@dataclass
class _Job:
    """One input on its way through a run: the tag its outcome comes back with from
    :class:`Writers`."""

    item: InputItem
    stage: Literal["read", "explain", "write"]  # the stage to blame if the outcome is an error
    explain_seconds: float = 0.0  # the seconds its explanation took (its share of a batch's)


class _Pass:
    """This rank's pass over its pending inputs, one working-resolution group at a time: each
    image explained (together with its group where it can be), its outputs written by the
    writers, and each outcome recorded in the manifest in the inputs' order."""

    def __init__(self, explainer: Explainer, options: BatchOptions, out: Path,
                 pending: Sequence[InputItem], manifest: Manifest, fingerprint: str,
                 writer: Writers[_Job], bar: Progress) -> None:
        self.explainer = explainer
        self.options = options
        self.out = out
        self.pending = pending
        self.manifest = manifest
        self.fingerprint = fingerprint
        self.writer = writer
        self.bar = bar
        self.done = 0
        self.failed: list[tuple[str, str]] = []

    def group(self, group: list[Loaded]) -> None:
        """Explain a group of decoded images (as one batch where it has several) and hand each
        result to the writers; images the batch did not explain go one by one."""
        readable = [g for g in group if g.image is not None]
        t0 = time.perf_counter()
        results, together_failed = self._explain_together(readable)
        share = (time.perf_counter() - t0) / max(1, len(readable))
        for sample in group:
            self._sample(sample, results.get(sample.index), share)
        if together_failed and torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _explain_together(self, readable: list[Loaded]
                          ) -> tuple[dict[int, SaliencyResult], bool]:
        """The results of a batch of several images by their index, and whether the batch
        failed (its images are then retried one by one)."""
        if len(readable) < 2:
            return {}, False
        try:
            found = explain_group(self.explainer, [g.image for g in readable], self.options)
        except Exception:  # noqa: BLE001 - retried one by one
            return {}, True
        return {g.index: r for g, r in zip(readable, found, strict=True)}, False

    def _sample(self, sample: Loaded, result: SaliencyResult | None, share: float) -> None:
        """One image: its read error, its explanation (``result``, or now) and its outputs,
        queued in its turn."""
        item = self.pending[sample.index]
        if sample.image is None:
            error = DcsmError(sample.error or "cannot read image")
            self.settle(self.writer.fail(_Job(item, "read"), error))
            return
        seconds = share
        if result is None:
            t1 = time.perf_counter()
            try:
                result = explain_one(self.explainer, sample.image, self.options)
            except Exception as exc:  # noqa: BLE001 - recorded; the run goes on
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.settle(self.writer.fail(_Job(item, "explain"), exc))
                return
            seconds = time.perf_counter() - t1
        self.settle(self.writer.submit(_Job(item, "write", seconds), result, str(item.path),
                                       item.name, self.out, self.options))

    def settle(self, outcomes: list[Outcome[_Job]]) -> None:
        """Record outcomes, in the inputs' order: ``done`` with the candidates and the seconds
        (explaining and writing), or ``failed`` with the stage and the reason."""
        for job, value, error in outcomes:
            if error is not None:
                self._failure(job, failure_reason(error))
                continue
            cands, write_seconds = value
            self.manifest.write("done", **self._fields(job.item), candidates=cands,
                                seconds=round(job.explain_seconds + write_seconds, 4))
            self.done += 1
            self.bar.step()

    def _failure(self, job: _Job, reason: str) -> None:
        self.manifest.write("failed", **self._fields(job.item), stage=job.stage, reason=reason)
        self.failed.append((job.item.key, reason))
        self.bar.message(f"dcsm batch: {job.item.path}: failed: {reason}")
        self.bar.step(failed=True)

    def _fields(self, item: InputItem) -> dict[str, Any]:
        """The fields every record of ``item`` has."""
        return {"key": item.key, "image": str(item.path), "output": item.name,
                "fingerprint": self.fingerprint}


def _progress_bar(total: int, rank: Rank, options: BatchOptions) -> Progress:
    """The progress bar of a run: by default shown on rank 0 only."""
    desc = "dcsm batch" if rank.world_size == 1 else f"rank {rank.rank}/{rank.world_size}"
    show = options.progress
    if show is None and rank.rank != 0:
        show = False
    return Progress(total, desc, show)


def run(
    explainer: Explainer,
    items: Sequence[InputItem],
    out: str | Path,
    options: BatchOptions | None = None,
    rank: Rank | None = None,
) -> BatchReport:
    """Process this rank's share of ``items`` (from :func:`dcsm.batch.discover`) into ``out``.

    Raises:
        DcsmError: if ``out`` holds outputs made with other settings (and not
            ``options.force``), or another run writes this rank's manifest.
    """
    options = options or BatchOptions()
    rank = rank or Rank()
    out = Path(out)
    start = time.perf_counter()
    check_classes(explainer, options)
    manifest = Manifest(out, rank.rank)
    fp = manifest.check_settings(run_settings(explainer, options), force=options.force)
    mine = shard(items, rank)
    state = manifest.state(fp)
    pending = [it for it in mine if not manifest.is_done(state, it.key, it.name)]
    skipped = len(mine) - len(pending)
    # Start the decoding workers first: forked later, they would inherit the manifest's open
    # file and its lock, and hold it for a few seconds after this process is killed.
    samples = iterate(pending, options.workers,
                      max_pixels=getattr(explainer, "max_pixels", DEFAULT_MAX_PIXELS))
    writers = (default_writers(explainer, options.workers) if options.writers is None
               else options.writers)
    writer: Writers[_Job] | None = None
    try:
        writer = Writers(writers if pending else 0)
        manifest.open()
        cleaned = remove_leftovers(out, {it.name for it in pending})
        manifest.start(fingerprint=fp, world_size=rank.world_size, inputs=len(items),
                       assigned=len(mine), skipped=skipped, pending=len(pending),
                       leftovers_removed=cleaned, device=str(explainer.adapter.device),
                       writers=writers)
        bar = _progress_bar(len(pending), rank, options)
        this = _Pass(explainer, options, out, pending, manifest, fp, writer, bar)
        try:
            for group in batches(samples, options.batch_size,
                                 explainer.max_side):
                this.group(group)
            this.settle(writer.drain())
        finally:
            writer.close()
            bar.close()
        seconds = time.perf_counter() - start
        manifest.write("end", fingerprint=fp, done=this.done, failed=len(this.failed),
                       skipped=skipped, seconds=round(seconds, 3))
    finally:  # also on Ctrl-C and SIGTERM (dcsm.processes): no process left behind
        if writer is not None:
            writer.close()
        samples.close()
        manifest.close()
    return BatchReport(len(items), len(mine), skipped, this.done, len(this.failed), this.failed,
                       seconds, manifest.path)


def combine(report: BatchReport, group: Group) -> BatchReport:
    """The counts summed over every rank of ``group`` (waits for all); unchanged without one."""
    if not group.active:
        return report
    report.assigned, report.skipped, report.done, report.failed = group.sum(
        [report.assigned, report.skipped, report.done, report.failed])
    report.ranks = group.rank.world_size
    return report
