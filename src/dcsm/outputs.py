"""Writing an explanation's files: what ``dcsm explain``, ``segment`` and ``batch`` leave.

``DIR/<image>/`` holds ``maps.npz`` (one float32 map per class at the image's full size, keyed
by the class's npz key), ``summary.json``, ``<class>.png`` (the map over the image),
``figure.png`` (the image and every map), with ``per_layer`` ``layers.png``, and with a
segmentation ``labels.png``, ``masks.npz`` and ``segmentation.png``. Without pictures
(``--no-pictures``) only the data: ``maps.npz``, ``summary.json``, ``labels.png`` and
``masks.npz``.

Names (:mod:`dcsm.io.names`): ``<image>`` is the image's stem made a safe name, distinct without
regard to case from the other images of the run (:func:`dcsm.io.names.output_names`); an npz key is
the class name itself when that is a safe name, distinct without regard to case, else a safe
name for it (:func:`dcsm.io.names.npz_keys`; ``masks.npz`` uses the same keys), and
``summary.json``'s ``map_keys`` maps each key back to its class name (:func:`load_maps` reads
the maps by class name); ``<class>`` is an ASCII stem (:func:`class_file_stems`) named in
``map_images``. An existing ``DIR/<image>/`` is replaced only when dcsm wrote it and nothing
was added to it (:func:`output_dir`); otherwise the run stops and changes nothing.

The pictures follow :class:`Display`: by default each map over the photo through viridis at
opacity 0.5, figures with a colour bar; ``style="paper"`` draws grey maps alone (the
``<class>.png`` files then hold the grey map itself). Only the pictures change with it, never
``maps.npz``, ``summary.json`` or ``labels.png``.

The PNG previews of photos larger than :data:`PREVIEW_SIDE` pixels are drawn at that size (the
arrays in ``maps.npz`` and ``labels.png`` stay at full size): a 12-megapixel overlay takes
seconds to encode and shows nothing a 2048-pixel one does not.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dcsm.errors import DcsmError, first_line
from dcsm.io import atomic_dir, safe_filename, save_figure, save_json, save_npz, save_png
from dcsm.io.names import is_safe_name, unique_names
from dcsm.io.viz import check_opacity, layers_figure, map_picture, maps_figure, style_colormap
from dcsm.pipeline.images import FIGURE_SIDE, PREVIEW_SIDE, shrink_image, shrink_map
from dcsm.pipeline.result import SaliencyResult
from dcsm.segmentation import Segmentation, write_segmentation

__all__ = ["DATA_FILES", "FIGURE_SIDE", "PICTURE_FILES", "PREVIEW_SIDE", "RESERVED_STEMS",
           "Display", "class_file_stems", "is_previous_output", "load_maps", "output_dir",
           "shrink_image", "shrink_map", "write_explanation"]

# File stems that dcsm writes itself, so a class cannot take them.
RESERVED_STEMS = ("figure", "layers", "maps", "summary", "labels", "masks", "segmentation")
#: The data files of an output folder, with and without pictures.
DATA_FILES = ("maps.npz", "summary.json", "labels.png", "masks.npz")
#: The pictures of an output folder besides the classes' ``<class>.png``.
PICTURE_FILES = ("figure.png", "layers.png", "segmentation.png")


def class_file_stems(names: list[str]) -> dict[str, str]:
    """A distinct, safe file stem for each class name: :func:`dcsm.io.safe_filename`, made
    distinct without regard to case from the others and from the files dcsm writes
    (:data:`RESERVED_STEMS`: a class ``"Figure"`` gets ``Figure-2.png``, not ``figure.png``) by
    :func:`dcsm.io.names.unique_names`."""
    return dict(zip(names, unique_names(names, RESERVED_STEMS, slug=safe_filename),
                    strict=True))


def is_previous_output(folder: Path) -> bool:
    """Whether ``folder`` is an image's output folder that dcsm wrote and nobody added to, the
    only kind :func:`output_dir` replaces.

    It must be a real folder (not a link) holding a ``summary.json`` that dcsm wrote (a JSON
    object with ``model``, ``method`` and ``candidates``) and nothing but plain files dcsm
    writes there: :data:`DATA_FILES`, :data:`PICTURE_FILES` and the class pictures that
    summary names (``map_images``). A folder of a user's own files, one with a subfolder or a
    file dcsm does not write, is not replaced.
    """
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        entries = list(os.scandir(folder))
    except (OSError, ValueError):
        return False
    if not isinstance(summary, dict) or not {"model", "method", "candidates"} <= summary.keys():
        return False
    pictures = summary.get("map_images", {})
    if not isinstance(pictures, dict):
        return False
    known = {*DATA_FILES, *PICTURE_FILES, *(str(v) for v in pictures.values())}
    return all(e.name in known and e.is_file(follow_symlinks=False) for e in entries)


@contextlib.contextmanager
def output_dir(out: Path, name: str) -> Iterator[Path]:
    """The folder ``out/name`` of one image's outputs, written atomically
    (:func:`dcsm.io.atomic_dir`): yields the temporary folder to write into.

    ``name`` must be a safe name (:func:`dcsm.io.names.safe_name`;
    :func:`dcsm.io.names.output_names`
    gives them), so the folder is a child of ``out``, never ``out`` itself or outside it. An
    existing ``out/name`` is replaced only when it is an earlier output
    (:func:`is_previous_output`); anything else stops with a :class:`DcsmError` before any work,
    and nothing is changed.

    Raises:
        ValueError: for a name that is not a safe name.
        DcsmError: when ``out/name`` exists and is not an earlier output, or cannot be written.
    """
    if not is_safe_name(name):
        raise ValueError(f"{name!r} is not a safe output folder name")
    with atomic_dir(Path(out) / name, replace=is_previous_output) as tmp:
        yield tmp


def load_maps(folder: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """The maps of an output folder, keyed by class name: ``maps.npz`` read back through
    ``summary.json``'s ``map_keys`` (npz key -> class name), in the file's order.

    A folder written before ``map_keys`` existed has the class names as keys.

    Raises:
        DcsmError: when the folder has no readable ``maps.npz`` or ``summary.json``.
    """
    folder = Path(folder)
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        with np.load(folder / "maps.npz", allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError) as exc:
        raise DcsmError(f"cannot read the maps in '{folder}': {first_line(exc)}") from exc
    names = summary.get("map_keys", {}) if isinstance(summary, dict) else {}
    return {str(names.get(key, key)): value for key, value in arrays.items()}


@dataclass(frozen=True)
class Display:
    """How the pictures draw the maps (``--style``, ``--colormap``, ``--opacity``).

    Attributes:
        style: ``"overlay"`` (each map over the photo) or ``"paper"`` (grey maps alone).
        colormap: a matplotlib colormap name; None for the style's own (viridis, or grey).
        opacity: the maps' opacity over the photo, in [0, 1].
    """

    style: str = "overlay"
    colormap: str | None = None
    opacity: float = 0.5

    def __post_init__(self) -> None:
        style_colormap(self.style, self.colormap)  # a one-line DcsmError when unknown
        check_opacity(self.opacity)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of the :mod:`dcsm.io.viz` figure builders."""
        return {"style": self.style, "cmap": self.colormap, "alpha": self.opacity}


def write_explanation(result: SaliencyResult, directory: Path, image_path: str | None = None,
                      segmentation: Segmentation | None = None,
                      display: Display | None = None, pictures: bool = True) -> None:
    """Write an explanation's files (and its segmentation's, if given) into ``directory``.

    ``display`` chooses how the PNG files draw the maps (default :class:`Display`: over the
    photo, viridis, opacity 0.5). ``pictures=False`` writes the data alone: ``maps.npz``,
    ``summary.json`` (without ``map_images``) and a segmentation's ``labels.png`` and
    ``masks.npz``, the arrays the same bytes as with pictures, and no previews or figures (at
    data-set scale the figures cost more than the maps). Each file is written atomically; use
    :func:`output_dir` for the directory.
    """
    display = Display() if display is None else display

    directory = Path(directory)
    keys = save_npz(directory / "maps.npz", result.maps)
    summary = result.summary()
    assert summary["map_keys"] == {k: n for n, k in keys.items()}, "npz keys disagree"
    if image_path is not None:
        summary = {"image": image_path, **summary}
    if pictures:
        summary["map_images"] = _write_pictures(result, directory, display)
    if segmentation is not None:
        write_segmentation(segmentation, result.image, directory, figure=pictures)
        files = {"labels": "labels.png", "masks": "masks.npz"}
        if pictures:
            files["figure"] = "segmentation.png"
        summary["segmentation"] = {**segmentation.summary(), "files": files}
    save_json(directory / "summary.json", summary)


def _write_pictures(result: SaliencyResult, directory: Path, display: Display
                    ) -> dict[str, str]:
    """``<class>.png``, ``figure.png`` and (per-layer maps) ``layers.png``; the class files."""
    stems = class_file_stems(list(result.maps))
    picture = shrink_image(result.image, PREVIEW_SIDE)
    files = {}
    for name, m in result.maps.items():
        files[name] = f"{stems[name]}.png"
        save_png(directory / files[name],
                 map_picture(picture, shrink_map(m, PREVIEW_SIDE), **display.options()))
    small = shrink_image(result.image, FIGURE_SIDE)
    small_maps = {n: shrink_map(m, FIGURE_SIDE) for n, m in result.maps.items()}
    titles = {c.name: f"{c.name} ({c.score:.2f})" for c in result.candidates}
    save_figure(directory / "figure.png",
                maps_figure(small, small_maps, titles, **display.options()))
    if result.layer_maps:
        layer_maps = {c: {name: shrink_map(m, FIGURE_SIDE) for name, m in layers.items()}
                      for c, layers in result.layer_maps.items()}
        save_figure(directory / "layers.png",
                    layers_figure(small, layer_maps, small_maps, **display.options()))
    return files
