"""The optional dependencies, imported in one place.

dcsm's core runs without them. A feature that needs one gets it from :func:`require`, which
names the pip extra to install in a one-line :class:`~dcsm.errors.DcsmError` when the package is
missing; a feature that only uses a package when it is there (the benchmarks' bundled photos)
asks :func:`find`. Imports stay inside the functions that need them, so ``import dcsm`` never
loads these packages.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from dcsm.errors import DcsmError

#: The pip extra of ``distinct-saliency`` that installs each optional package (by import name).
EXTRAS: dict[str, str] = {
    "timm": "timm",
    "streamlit": "viewer",
    "starlette": "viewer",
    "pycocotools": "coco",
    "quantus": "quantus",
    "captum": "bench",
    "pytorch_grad_cam": "bench",
    "torchcam": "bench",
    "skimage": "bench",
    "sklearn": "bench",
}
#: The packages' own names, where they differ from the import name.
_NAMES = {"streamlit": "Streamlit", "quantus": "Quantus", "captum": "Captum",
          "pytorch_grad_cam": "grad-cam", "torchcam": "TorchCAM", "skimage": "scikit-image",
          "sklearn": "scikit-learn", "starlette": "Starlette"}


def install_hint(module: str) -> str:
    """The pip command that installs the optional package ``module`` (an import name)."""
    top = module.partition(".")[0]
    return f"pip install 'distinct-saliency[{EXTRAS[top]}]'"


def require(module: str, purpose: str) -> ModuleType:
    """Import the optional ``module``, or raise a one-line :class:`DcsmError`.

    The error says that ``purpose`` needs the package and which extra installs it.
    """
    top = module.partition(".")[0]
    if top not in EXTRAS:
        raise ValueError(f"{module} is not one of dcsm's optional dependencies")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DcsmError(f"{purpose} needs {_NAMES.get(top, top)}, which is not "
                        f"installed: {install_hint(module)}") from None


def find(module: str) -> ModuleType | None:
    """The optional ``module`` if it can be imported, else None."""
    if module.partition(".")[0] not in EXTRAS:
        raise ValueError(f"{module} is not one of dcsm's optional dependencies")
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
