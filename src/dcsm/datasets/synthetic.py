r"""A generated multi-object data set in the PASCAL VOC 2012 layout, with exact masks.

``write_synthetic(root)`` (the command ``dcsm data synthetic --out ROOT``) writes
``ROOT/VOCdevkit/VOC2012/`` with ``JPEGImages/<id>.jpg``, ``SegmentationClass/<id>.png`` (VOC
palette; 0 background, label v the v-th class of ``class_names.txt``), ``SegmentationObject/
<id>.png`` (one value per object instance), ``ImageSets/Segmentation/{train,val,trainval}.txt``
and ``class_names.txt``, plus ``ROOT/synthetic.json`` with the generator's settings.

**Classes.** Six, each a combination of a shape, a colour family and a texture, so that none of
the three alone names the class:

=========  ====================  ==============  ========================================
class      shape                 hue (degrees)   texture
=========  ====================  ==============  ========================================
disc       ellipse               0 (red)         speckles, a highlight
leaf       lens, pointed ends    115 (green)     veins along the long axis
tile       square                220 (blue)      checkerboard
star       five-pointed star     45 (yellow)     radial shading
ring       annulus (has a hole)  295 (magenta)   radial stripes
cross      plus sign             180 (cyan)      stripes across the arms
=========  ====================  ==============  ========================================

The hue of each object varies by +-15 degrees, its saturation in 0.55..1 and brightness in
0.55..1; the textures' period and phase, and the shapes' aspect ratio, vary too.

**Backgrounds** are drawn from five kinds (smooth colour blotches, stripes, a checkerboard, a
linear gradient, fine grain), each in random hues of saturation 0.05..0.5, so the textures of
the objects (stripes, checks) also occur in the background, in duller colours, and pixel noise
covers everything.

**Objects.** 1 to 3 per image (probabilities 0.4, 0.35, 0.25), usually of different classes
(a class repeats with probability 0.15); each has a random size (bounding radius 14 % to 32 % of
the image side), rotation and position (uniform; objects may be cut by the border). Objects are
painted in turn and a later one may cover an earlier one (with probability 0.4 the generator
aims an object at one already placed); an object is kept only if at least 45 % of it and at
least 60 pixels stay visible, so every labelled object can be seen. The masks are the painted
pixels themselves: exact, with no void border unless ``void_border`` (pixels of VOC's 255 "void"
label on each side of every object edge) is asked for.

**Reproducible.** Image ``i`` of a split is drawn from ``numpy.random.default_rng`` seeded by
``(seed, split, i)``, so the same arguments give the same pixels, whatever the order or the
number of images generated before it. JPEG quality is 95.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from dcsm.datasets.voc import CLASS_NAMES_FILE
from dcsm.errors import DcsmError
from dcsm.io import atomic_dir, json_text
from dcsm.segmentation.palette import labels_image

#: Class names, in label order (label v is CLASSES[v - 1]).
CLASSES: tuple[str, ...] = ("disc", "leaf", "tile", "star", "ring", "cross")
#: Each class's central hue in degrees.
HUES: dict[str, float] = {"disc": 0.0, "leaf": 115.0, "tile": 220.0, "star": 45.0,
                          "ring": 295.0, "cross": 180.0}
SPLIT_SEEDS = {"train": 1, "val": 2}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of :func:`write_synthetic` (see the module docstring).

    Attributes:
        train: number of training images.
        val: number of validation images.
        size: image side in pixels (square images).
        seed: the seed every image derives from.
        void_border: width in pixels of VOC's 255 "void" band around object edges (0: none).
    """

    train: int = 480
    val: int = 160
    size: int = 112
    seed: int = 0
    void_border: int = 0

    def __post_init__(self) -> None:
        if self.train < 1 or self.val < 1:
            raise DcsmError("the synthetic set needs at least one train and one val image")
        if not 32 <= self.size <= 1024:
            raise DcsmError(f"synthetic image size must lie in 32..1024, got {self.size}")
        if not 0 <= self.void_border <= 8:
            raise DcsmError(f"void border must lie in 0..8 pixels, got {self.void_border}")


@dataclass
class Sample:
    """One generated image: (H, W, 3) uint8 pixels, class labels (H, W) uint8 and instance ids."""

    image: np.ndarray
    labels: np.ndarray
    instances: np.ndarray
    classes: list[str]


# ----------------------------------------------------------------------------- colour helpers
def hsv_to_rgb(h: np.ndarray | float, s: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """HSV (hue in degrees, s and v in [0, 1]) to RGB in [0, 1], broadcasting; (..., 3)."""
    h = np.asarray(h, dtype=np.float64) % 360.0
    s = np.asarray(s, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    k = lambda n: (n + h / 60.0) % 6.0  # noqa: E731
    f = lambda n: v - v * s * np.clip(np.minimum(k(n), 4.0 - k(n)), 0.0, 1.0)  # noqa: E731
    return np.stack(np.broadcast_arrays(f(5.0), f(3.0), f(1.0)), axis=-1)


def _smooth_noise(rng: np.random.Generator, size: int, cells: int, channels: int = 1
                  ) -> np.ndarray:
    """Random values on a ``cells x cells`` grid, bicubically enlarged: (size, size, channels)."""
    grid = rng.random((cells, cells, channels))
    out = np.empty((size, size, channels))
    for c in range(channels):
        im = Image.fromarray(grid[:, :, c].astype(np.float32), mode="F")
        out[:, :, c] = np.asarray(im.resize((size, size), Image.Resampling.BICUBIC))
    return np.clip(out, 0.0, 1.0)


# ----------------------------------------------------------------------------- backgrounds
def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random dull textured background, (size, size, 3) float RGB in [0, 1]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size

    def dull(n: int = 1) -> np.ndarray:
        return hsv_to_rgb(rng.uniform(0, 360, n), rng.uniform(0.05, 0.5, n),
                          rng.uniform(0.25, 0.9, n))

    kind = rng.integers(5)
    if kind == 0:  # colour blotches
        a, b = dull(2)
        t = _smooth_noise(rng, size, int(rng.integers(3, 8)))
        img = a * t + b * (1 - t)
    elif kind in (1, 2):  # stripes or checks
        a, b = dull(2)
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(0.04, 0.2)
        u = (xx * math.cos(theta) + yy * math.sin(theta)) / period
        if kind == 1:
            t = 0.5 + 0.5 * np.sin(2 * math.pi * u)[..., None]
        else:
            w = (-xx * math.sin(theta) + yy * math.cos(theta)) / period
            t = ((np.floor(u) + np.floor(w)) % 2)[..., None]
        img = a * t + b * (1 - t)
    elif kind == 3:  # linear gradient
        a, b = dull(2)
        theta = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(theta) + yy * math.sin(theta))
        t = ((t - t.min()) / max(np.ptp(t), 1e-9))[..., None]
        img = a * t + b * (1 - t)
    else:  # fine grain
        a = dull(1)[0]
        t = _smooth_noise(rng, size, size // 3, 1)
        img = a * (0.7 + 0.6 * (t - 0.5))
    img = img + rng.normal(0, 0.05) * _smooth_noise(rng, size, 12, 3)
    return np.clip(img, 0.0, 1.0)


# ----------------------------------------------------------------------------- objects
ShapeFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], np.ndarray]


def _star(u: np.ndarray, v: np.ndarray, points: int = 5, inner: float = 0.45) -> np.ndarray:
    angle = np.arctan2(v, u)
    rho = np.hypot(u, v)
    sector = 2 * math.pi / points
    a = np.abs((angle % sector) - sector / 2) / (sector / 2)  # 1 at the tips, 0 in between
    return rho <= inner + (1.0 - inner) * a ** 2


def _shape_mask(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator
                ) -> np.ndarray:
    """Inside-test of class ``name`` in object coordinates (unit bounding radius)."""
    if name == "disc":
        aspect = rng.uniform(0.7, 1.0)
        return u ** 2 + (v / aspect) ** 2 <= 1.0
    if name == "leaf":
        width = rng.uniform(0.4, 0.6)
        return (np.abs(u) <= 1.0) & (np.abs(v) <= width * (1.0 - u ** 2))
    if name == "tile":
        half = 0.72
        return (np.abs(u) <= half) & (np.abs(v) <= half * rng.uniform(0.8, 1.0))
    if name == "star":
        return _star(u, v)
    if name == "ring":
        rho = np.hypot(u, v)
        return (rho <= 1.0) & (rho >= rng.uniform(0.45, 0.6))
    if name == "cross":
        arm = rng.uniform(0.24, 0.34)
        return (((np.abs(u) <= arm) & (np.abs(v) <= 1.0))
                | ((np.abs(v) <= arm) & (np.abs(u) <= 1.0)))
    raise ValueError(name)  # pragma: no cover


def _texture(name: str, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness pattern in [0, 1] of class ``name`` in object coordinates."""
    phase = rng.uniform(0, 2 * math.pi)
    if name == "disc":
        spots = rng.random(u.shape) < 0.08
        light = np.exp(-((u + 0.35) ** 2 + (v + 0.35) ** 2) / 0.15)
        return np.clip(0.75 + 0.3 * light - 0.45 * spots, 0, 1)
    if name == "leaf":
        veins = np.abs(np.sin(v * rng.uniform(9, 14) + phase))
        return 0.5 + 0.5 * veins ** 3
    if name == "tile":
        cell = rng.uniform(0.22, 0.36)
        return np.where((np.floor(u / cell) + np.floor(v / cell)) % 2 == 0, 1.0, 0.45)
    if name == "star":
        return np.clip(1.0 - 0.55 * np.hypot(u, v), 0, 1)
    if name == "ring":
        return 0.55 + 0.45 * (np.sin(np.arctan2(v, u) * 12 + phase) > 0)
    if name == "cross":
        bands = np.sin((u + v) * rng.uniform(14, 20) + phase) > 0
        return np.where(bands, 1.0, 0.5)
    raise ValueError(name)  # pragma: no cover


def _paint_object(rng: np.random.Generator, name: str, size: int, centre: tuple[float, float],
                  radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The (H, W) bool mask and (H, W, 3) colours of one object."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    theta = rng.uniform(0, 2 * math.pi)
    dx, dy = (xx - centre[0]) / radius, (yy - centre[1]) / radius
    u = dx * math.cos(theta) + dy * math.sin(theta)
    v = -dx * math.sin(theta) + dy * math.cos(theta)
    mask = _shape_mask(name, u, v, rng)
    hue = HUES[name] + rng.uniform(-15, 15)
    colour = hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.55, 1.0))
    shade = _texture(name, u, v, rng)[..., None]
    return mask, colour * (0.35 + 0.65 * shade)


def _object_count(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))


def generate_sample(rng: np.random.Generator, size: int = 112, void_border: int = 0) -> Sample:
    """One image with 1-3 objects, its class labels and instance ids (see the module doc)."""
    image = _background(rng, size)
    labels = np.zeros((size, size), np.uint8)
    instances = np.zeros((size, size), np.uint8)
    wanted = _object_count(rng)
    chosen: list[str] = []
    placed: list[tuple[float, float, float]] = []
    areas: list[int] = []
    attempts = 0
    while len(chosen) < wanted and attempts < 40:
        attempts += 1
        if chosen and rng.random() < 0.15:
            name = chosen[int(rng.integers(len(chosen)))]
        else:
            name = CLASSES[int(rng.choice([i for i, c in enumerate(CLASSES) if c not in chosen]))]
        radius = rng.uniform(0.14, 0.32) * size
        if placed and rng.random() < 0.4:  # aim at an earlier object: overlaps happen
            cx, cy, r0 = placed[int(rng.integers(len(placed)))]
            angle = rng.uniform(0, 2 * math.pi)
            dist = rng.uniform(0.6, 1.1) * (r0 + radius)
            centre = (cx + dist * math.cos(angle), cy + dist * math.sin(angle))
        else:
            centre = (rng.uniform(0.1, 0.9) * size, rng.uniform(0.1, 0.9) * size)
        mask, colours = _paint_object(rng, name, size, centre, radius)
        area = int(mask.sum())
        if area < 60:
            continue
        # The new object covers earlier ones: each must keep 45 % of itself and 60 pixels.
        ok = True
        for k in range(1, len(chosen) + 1):
            own = instances == k
            if own.any():
                left = int((own & ~mask).sum())
                total = areas[k - 1]
                if left < max(60, 0.45 * total):
                    ok = False
                    break
        if not ok:
            continue
        image[mask] = colours[mask]
        labels[mask] = CLASSES.index(name) + 1
        instances[mask] = len(chosen) + 1
        areas.append(area)
        chosen.append(name)
        placed.append((centre[0], centre[1], radius))
    image = image + rng.normal(0, 0.025, image.shape)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    if void_border:
        labels, instances = _add_void(labels, instances, void_border)
    present = sorted({CLASSES[v - 1] for v in np.unique(labels) if 0 < v < 255},
                     key=CLASSES.index)
    return Sample(pixels, labels, instances, present)


def _add_void(labels: np.ndarray, instances: np.ndarray, width: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mark pixels within ``width`` of an instance edge as 255 (VOC's void band)."""
    edge = np.zeros(labels.shape, bool)
    for v in np.unique(instances):
        region = instances == v
        grown = ndimage.binary_dilation(region, iterations=width)
        shrunk = ndimage.binary_erosion(region, iterations=width, border_value=1)
        edge |= grown & ~shrunk
    labels, instances = labels.copy(), instances.copy()
    labels[edge] = 255
    instances[edge] = 255
    return labels, instances


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of image ``index`` of ``split``."""
    return np.random.default_rng([int(seed), SPLIT_SEEDS[split], int(index)])


def image_id(split: str, index: int) -> str:
    """The VOC-style id of a generated image."""
    return f"{split}_{index:05d}"


def write_synthetic(root: str | Path, config: SyntheticConfig | None = None,
                    progress: bool = False) -> dict[str, object]:
    """Write the data set under ``root`` (replaced atomically; see the module docstring).

    ``root`` must not exist, be empty, or hold an earlier synthetic set (``synthetic.json``).
    Returns the manifest written to ``root/synthetic.json``.
    """
    config = config or SyntheticConfig()
    root = Path(root)
    if root.exists() and (not root.is_dir() or (any(root.iterdir())
                                                 and not (root / "synthetic.json").exists())):
        raise DcsmError(f"'{root}' exists and is not an earlier synthetic data set; choose an "
                        "empty or new --out")
    counts = {"train": config.train, "val": config.val}
    manifest: dict[str, object] = {
        "generator": "dcsm synthetic", "version": FORMAT_VERSION, **asdict(config),
        "classes": list(CLASSES)}
    images: dict[str, int] = {}
    images_per_class: dict[str, dict[str, int]] = {}
    manifest |= {"images": images, "images_per_class": images_per_class}
    bar = None
    if progress:
        bar = tqdm(total=sum(counts.values()), desc="synthetic", unit="img")
    with atomic_dir(root) as tmp:
        voc = tmp / "VOCdevkit" / "VOC2012"
        for sub in ("JPEGImages", "SegmentationClass", "SegmentationObject",
                    "ImageSets/Segmentation"):
            (voc / sub).mkdir(parents=True)
        (voc / CLASS_NAMES_FILE).write_text("\n".join(CLASSES) + "\n", encoding="utf-8")
        ids: dict[str, list[str]] = {}
        for split, n in counts.items():
            ids[split] = []
            per_class = dict.fromkeys(CLASSES, 0)
            for i in range(n):
                sample = generate_sample(sample_rng(config.seed, split, i), config.size,
                                         config.void_border)
                name = image_id(split, i)
                Image.fromarray(sample.image).save(voc / "JPEGImages" / f"{name}.jpg",
                                                   quality=95)
                labels_image(sample.labels).save(voc / "SegmentationClass" / f"{name}.png")
                labels_image(sample.instances).save(voc / "SegmentationObject" / f"{name}.png")
                for c in sample.classes:
                    per_class[c] += 1
                ids[split].append(name)
                if bar is not None:
                    bar.update(1)
            images[split] = n
            images_per_class[split] = per_class
        sets = voc / "ImageSets" / "Segmentation"
        for split, names in (*ids.items(), ("trainval", ids["train"] + ids["val"])):
            (sets / f"{split}.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        (tmp / "synthetic.json").write_text(json_text(manifest) + "\n", encoding="utf-8")
    if bar is not None:
        bar.close()
    return manifest
