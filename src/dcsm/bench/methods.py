"""The methods the grid pointing game and the masks benchmark compare, each behind one small
interface: the table is :mod:`dcsm.methods.benchmarked`, derived from the registry of methods
(:mod:`dcsm.methods.registry`), and the interface (a map function) :mod:`dcsm.methods.maps`.

dcsm's own methods: the method with its ``paper``, ``released`` and ``tuned`` presets, the paper
preset without the class contrast, and its baselines (Simonyan et al.'s input gradient, guided
back-propagation, Grad-CAM). The peers run through their own public APIs on the same model:
Captum's ``Saliency`` and ``GuidedBackprop`` (:mod:`dcsm.methods.peer_captum`),
pytorch-grad-cam's ``GradCAM``, ``LayerCAM`` and ``FinerCAM``
(:mod:`dcsm.methods.peer_grad_cam`), TorchCAM's ``GradCAM`` and ``LayerCAM``
(:mod:`dcsm.methods.peer_torchcam`).
"""

from __future__ import annotations

from dcsm.methods.benchmarked import BenchMethod, bench_methods, get_methods, method_keys
from dcsm.methods.maps import Candidates, Logits, MapFunction, contrast_sets, pooled_ranking

#: What contrastive methods (dcsm, FinerCAM) are told about the classes to tell apart, with k the
#: number of cells:
#:
#: * ``oracle``: the cell's class and every other cell's class;
#: * ``target``: the cell's class only, as a user who asks about one class; the method picks the
#:   k - 1 classes it contrasts it with (dcsm: the explainer's ``min_contrast = k``, topped up by
#:   the preset's candidate rule; FinerCAM: the image's most probable other classes);
#: * ``auto``: nothing; the method explains k classes it picks itself (dcsm: its preset's
#:   candidate rule with ``top_k = k``; FinerCAM: the k most probable), and a cell whose class is
#:   not among them gets no map (score 0).
CANDIDATE_MODES: tuple[str, ...] = ("oracle", "target", "auto")
#: The modes ``dcsm bench gridpg`` runs by default. (``target`` takes one explanation per cell:
#: on 3x3 grids, with the paper's four scales, most of a run's time; ask for it with
#: ``--candidates``.)
DEFAULT_MODES: tuple[str, ...] = ("oracle", "target", "auto")
DEFAULT_MODES_3X3: tuple[str, ...] = ("oracle", "auto")
#: The benchmarks' methods, in table order (:func:`dcsm.methods.benchmarked.bench_methods`).
METHODS: tuple[BenchMethod, ...] = bench_methods()

__all__ = ["CANDIDATE_MODES", "DEFAULT_MODES", "DEFAULT_MODES_3X3", "METHODS", "BenchMethod",
           "Candidates", "Logits", "MapFunction", "contrast_sets", "get_methods",
           "method_keys", "pooled_ranking"]
