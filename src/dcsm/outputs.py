"""Writing an explanation's files: what ``dcsm explain``, ``segment`` and ``batch`` leave.

``DIR/<image>/`` holds ``maps.npz`` (one float32 map per class at the image's full size, keyed
by the class's unique name), ``summary.json``, ``<class>.png`` (the map over the image),
``figure.png`` (the image and every map), with ``per_layer`` ``layers.png``, and with a
segmentation ``labels.png``, ``masks.npz`` and ``segmentation.png``. Without pictures
(``--no-pictures``) only the data: ``maps.npz``, ``summary.json``, ``labels.png`` and
``masks.npz``.

The pictures follow :class:`Display`: by default each map over the photo through viridis at
opacity 0.5, figures with a colour bar; ``style="paper"`` draws grey maps alone (the
``<class>.png`` files then hold the grey map itself). Only the pictures change with it, never
``maps.npz``, ``summary.json`` or ``labels.png``.

The PNG previews of photos larger than :data:`PREVIEW_SIDE` pixels are drawn at that size (the
arrays in ``maps.npz`` and ``labels.png`` stay at full size): a 12-megapixel overlay takes
seconds to encode and shows nothing a 2048-pixel one does not.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dcsm.images import FIGURE_SIDE, PREVIEW_SIDE, shrink_image, shrink_map
from dcsm.result import SaliencyResult

if TYPE_CHECKING:
    from dcsm.segmentation import Segmentation

__all__ = ["FIGURE_SIDE", "PREVIEW_SIDE", "RESERVED_STEMS", "Display", "class_file_stems",
           "shrink_image", "shrink_map", "write_explanation"]

# File stems that dcsm writes itself, so a class cannot take them.
RESERVED_STEMS = ("figure", "layers", "maps", "summary", "labels", "masks", "segmentation")


def class_file_stems(names: list[str]) -> dict[str, str]:
    """A distinct, safe file stem for each class name."""
    from dcsm.io import safe_filename

    used: set[str] = set()
    stems = {}
    for name in names:
        stem = safe_filename(name)
        while stem in used or stem in RESERVED_STEMS:
            stem += "_"
        used.add(stem)
        stems[name] = stem
    return stems


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
        from dcsm.viz import check_opacity, style_colormap

        style_colormap(self.style, self.colormap)  # a one-line DcsmError when unknown
        check_opacity(self.opacity)

    def options(self) -> dict[str, Any]:
        """Keyword arguments of the :mod:`dcsm.viz` figure builders."""
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
    :func:`dcsm.io.atomic_dir` for the directory.
    """
    from dcsm.io import save_json, save_npz

    display = Display() if display is None else display

    directory = Path(directory)
    save_npz(directory / "maps.npz", result.maps)
    summary = result.summary()
    if image_path is not None:
        summary = {"image": image_path, **summary}
    if pictures:
        summary["map_images"] = _write_pictures(result, directory, display)
    if segmentation is not None:
        from dcsm.segmentation import write_segmentation

        write_segmentation(segmentation, result.image, directory, figure=pictures)
        files = {"labels": "labels.png", "masks": "masks.npz"}
        if pictures:
            files["figure"] = "segmentation.png"
        summary["segmentation"] = {**segmentation.summary(), "files": files}
    save_json(directory / "summary.json", summary)


def _write_pictures(result: SaliencyResult, directory: Path, display: Display
                    ) -> dict[str, str]:
    """``<class>.png``, ``figure.png`` and (per-layer maps) ``layers.png``; the class files."""
    from dcsm.io import save_figure, save_png
    from dcsm.viz import layers_figure, map_picture, maps_figure

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
