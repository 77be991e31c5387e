"""dcsm.optional: the optional dependencies, imported in one place."""

from __future__ import annotations

import sys
import types

import pytest

from dcsm.errors import DcsmError
from dcsm.optional import EXTRAS, find, install_hint, require


def test_a_missing_package_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # importing it raises ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.mask", None)
    with pytest.raises(DcsmError) as info:
        require("pycocotools.mask", "COCO's polygon outlines")
    assert str(info.value) == ("COCO's polygon outlines needs pycocotools, which is not "
                               "installed: pip install 'distinct-saliency[coco]'")


def test_the_message_uses_the_package_s_own_name(monkeypatch):
    monkeypatch.setitem(sys.modules, "skimage", None)
    monkeypatch.setitem(sys.modules, "skimage.data", None)
    with pytest.raises(DcsmError, match=r"^the photos needs scikit-image, which is not "
                                        r"installed: pip install 'distinct-saliency\[bench\]'$"):
        require("skimage.data", "the photos")
    assert find("skimage.data") is None


def test_an_installed_package_is_returned(monkeypatch):
    fake = types.ModuleType("torchcam")
    monkeypatch.setitem(sys.modules, "torchcam", fake)
    assert require("torchcam", "TorchCAM's methods") is fake
    assert find("torchcam") is fake


def test_only_declared_optional_packages_are_imported():
    with pytest.raises(ValueError, match="not one of dcsm's optional dependencies"):
        require("numpy", "anything")
    with pytest.raises(ValueError, match="not one of dcsm's optional dependencies"):
        find("os")


def test_every_extra_is_declared_in_pyproject():
    from pathlib import Path

    import tomllib

    root = Path(__file__).resolve().parents[1]
    extras = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))[
        "project"]["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    assert install_hint("streamlit") == "pip install 'distinct-saliency[viewer]'"
