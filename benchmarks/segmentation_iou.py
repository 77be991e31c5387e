"""Segmentation of the bundled image: masks against the image halves.

The bundled image is skimage's chelsea (left half) and coffee (right half), 448 x 224, classes
``tabby`` and ``espresso``. For each model, segmenter and maps, prints the IoU of the cat mask
with the left half and of the espresso mask with the right half, and the share of each mask
inside its own half (1 = no leak into the other object). The cat fills its half; the cup and
saucer do not fill theirs (red cloth in the corners), so a perfect espresso mask scores below 1.
GrabCut rows give the label masks (overlaps resolved) and, in brackets, the share of each
class's own GrabCut region in its half. Regenerates the table of docs/segmentation.md ("Measured"):

    python benchmarks/segmentation_iou.py
"""

from __future__ import annotations

from importlib import resources

import numpy as np

import dcsm
from dcsm.bench.masks import iou

CLASSES = ["tabby", "espresso"]
#: The CRF unaries dcsm used before the real-photo study: v_0 = 1 - max_c M_c, maps as they are.
EARLIER = dict(background="power", bg_power=1.0, normalize=False, sharpness=1.0)


def scores(masks: dict[str, np.ndarray]) -> tuple[float, float, float, float]:
    """(cat IoU with left, espresso IoU with right, cat share in left, espresso in right)."""
    cat, cup = masks[CLASSES[0]], masks[CLASSES[1]]
    left = np.zeros(cat.shape, bool)
    left[:, : cat.shape[1] // 2] = True

    def share(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max(a.sum(), 1))

    return iou(cat, left), iou(cup, ~left), share(cat, left), share(cup, ~left)


def main() -> None:
    image = dcsm.load_image(resources.files("dcsm") / "data" / "chelsea_coffee.png")
    print("| model | segmentation | cat IoU, left half | espresso IoU, right half "
          "| cat share in left | espresso share in right |")
    print("|---|---|---|---|---|---|")
    for model in ("efficientnet_lite0", "squeezenet1_1"):
        adapter = dcsm.load_model(model)
        tuned = dcsm.explain(adapter, image, classes=CLASSES)  # the default preset
        paper = dcsm.explain(adapter, image, classes=CLASSES, preset="paper")
        simonyan = dcsm.explain(adapter, image, method="simonyan", classes=CLASSES)
        runs = {
            "CRF on dcsm maps (every default)": dcsm.segment(tuned),
            "dcsm maps, unaries only (0 CRF steps)": dcsm.segment(tuned, iterations=0),
            "CRF on dcsm maps, earlier unaries": dcsm.segment(tuned, **EARLIER),
            "GrabCut on dcsm maps": dcsm.segment(tuned, segmenter="grabcut"),
            "CRF on paper-preset maps": dcsm.segment(paper),
            "CRF on paper-preset maps, earlier unaries": dcsm.segment(paper, **EARLIER),
            "GrabCut on Simonyan maps (baseline)": dcsm.segment(simonyan, segmenter="grabcut"),
            "CRF on Simonyan maps": dcsm.segment(simonyan),
        }
        for label, seg in runs.items():
            cat_iou, cup_iou, cat_in, cup_in = scores(seg.masks)
            shares = f"{cat_in:.3f} | {cup_in:.3f}"
            if seg.method == "grabcut":
                _, _, r_cat, r_cup = scores(seg.regions)
                shares = f"{cat_in:.3f} ({r_cat:.3f}) | {cup_in:.3f} ({r_cup:.3f})"
            print(f"| {model} | {label} | {cat_iou:.3f} | {cup_iou:.3f} | {shares} |")


if __name__ == "__main__":
    main()
