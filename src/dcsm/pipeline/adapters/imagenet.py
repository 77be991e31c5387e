"""ImageNet-1k class names shipped with dcsm (first WordNet synonym of each class)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet class names, unique (the two 'crane' and 'maillot' classes are
    disambiguated as ``crane (bird)``/``crane (machine)`` and ``maillot (tank suit)``)."""
    text = resources.files("dcsm").joinpath("data/imagenet_classes.json").read_text("utf-8")
    names = tuple(json.loads(text))
    assert len(names) == 1000 and len(set(names)) == 1000
    return names
