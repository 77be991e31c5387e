"""Class separation on two photos side by side: skimage's chelsea (left) and coffee (right).

For each model and method, the share of the cat map's mass in the left half and of the espresso
map's mass in the right half of the bundled 448 x 224 image (1.0 = perfectly separated,
0.5 = no separation). Regenerates the table in docs/benchmarks.md ("Class separation"):

    python benchmarks/separation.py
"""

from __future__ import annotations

from importlib import resources

import dcsm

CLASSES = ["tabby", "espresso"]


def shares(result: dcsm.SaliencyResult) -> tuple[float, float]:
    """(cat mass share in the left half, espresso mass share in the right half)."""
    cat, cup = result.maps[CLASSES[0]], result.maps[CLASSES[1]]
    half = cat.shape[1] // 2
    return float(cat[:, :half].sum() / cat.sum()), float(cup[:, half:].sum() / cup.sum())


def main() -> None:
    image = dcsm.load_image(resources.files("dcsm") / "data" / "chelsea_coffee.png")
    print("| model | method | cat in left half | espresso in right half |")
    print("|---|---|---|---|")
    for model in ("efficientnet_lite0", "squeezenet1_1"):
        adapter = dcsm.load_model(model)
        runs = {
            "dcsm (paper)": {"method": "dcsm", "preset": "paper"},
            "dcsm (released)": {"method": "dcsm", "preset": "released"},
            "dcsm (tuned)": {"method": "dcsm", "preset": "tuned"},
            "dcsm, no subtraction": {"method": "dcsm", "preset": "paper", "subtract": False},
            "Simonyan et al.": {"method": "simonyan"},
            "guided backprop": {"method": "guided"},
            "Grad-CAM": {"method": "gradcam"},
        }
        for label, settings in runs.items():
            left, right = shares(dcsm.explain(adapter, image, classes=CLASSES, **settings))
            print(f"| {model} | {label} | {left:.3f} | {right:.3f} |")


if __name__ == "__main__":
    main()
