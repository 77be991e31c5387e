"""The explanation methods.

dcsm, its baselines and the peers it is compared with, in one registry
(:mod:`dcsm.methods.registry`).

Each method is one module that registers itself when imported: ``dcsm``
(:mod:`~dcsm.methods.distinct`), ``simonyan``, ``guided``, ``gradcam`` (dcsm's explainers), and
the benchmarks' peers (:mod:`~dcsm.methods.peer_captum`, :mod:`~dcsm.methods.peer_grad_cam`,
:mod:`~dcsm.methods.peer_torchcam`, whose libraries are optional). The import order below is the
registry's order.

"""

from __future__ import annotations

# Each import registers the module's methods: this order is the registry's.
# isort: off
from dcsm.methods import distinct  # noqa: F401
from dcsm.methods import simonyan  # noqa: F401
from dcsm.methods import guided  # noqa: F401
from dcsm.methods import gradcam  # noqa: F401
from dcsm.methods import peer_captum  # noqa: F401
from dcsm.methods import peer_grad_cam  # noqa: F401
from dcsm.methods import peer_torchcam  # noqa: F401

# isort: on
from dcsm.methods.gradcam import GradCAM
from dcsm.methods.registry import DEFAULT_METHOD, MethodSpec, get, names, register, specs
from dcsm.methods.simonyan import InputGradient

__all__ = ["DEFAULT_METHOD", "GradCAM", "InputGradient", "MethodSpec", "get", "names",
           "register", "specs"]
