"""Input and output: reading images, writing files atomically, safe names, resumable records,
figures.

* :mod:`dcsm.io.images`: :func:`load_image` and the pixel limit (:data:`DEFAULT_MAX_PIXELS`).
* :mod:`dcsm.io.atomic`: :func:`atomic_dir`, :func:`write_atomic` and the ``save_*`` helpers.
* :mod:`dcsm.io.names`: safe file and folder names; :mod:`dcsm.io.records`: resumable runs;
  :mod:`dcsm.io.torch_files`: ``torch.save`` files read without running code;
  :mod:`dcsm.io.viz`: figures and overlays.

The names most used are importable from here.
"""

from __future__ import annotations

from dcsm.io.atomic import (
    atomic_dir,
    fsync_dir,
    fsync_file,
    fsync_tree,
    json_text,
    refuse_replacing,
    remove_path,
    save_figure,
    save_json,
    save_npz,
    save_png,
    write_atomic,
)
from dcsm.io.images import (
    DEFAULT_MAX_PIXELS,
    MIN_SIDE,
    array_to_rgb,
    check_max_pixels,
    load_image,
    pil_to_rgb,
)
from dcsm.io.names import safe_filename

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "array_to_rgb",
    "atomic_dir",
    "check_max_pixels",
    "fsync_dir",
    "fsync_file",
    "fsync_tree",
    "json_text",
    "load_image",
    "pil_to_rgb",
    "refuse_replacing",
    "remove_path",
    "safe_filename",
    "save_figure",
    "save_json",
    "save_npz",
    "save_png",
    "write_atomic",
]
