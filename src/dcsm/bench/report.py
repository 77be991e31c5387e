"""Writing the grid pointing game's results: ``gridpg.json``, ``gridpg.md`` and ``gridpg.png``.

The JSON holds the settings, the views and grids, and per method (and candidate mode) every
cell's score, the summary (mean, median, quartiles, count) and the seconds per grid; the markdown
file a table of the summaries; the PNG a box plot of the score distributions (matplotlib's object
API, no ``pyplot``). Every file is written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dcsm.io import save_figure, save_json, write_atomic

#: Colours of the box plot by the library that computes the method.
SOURCE_COLOURS = {"dcsm": "#d62728", "captum": "#1f77b4", "pytorch-grad-cam": "#2ca02c",
                  "torchcam": "#9467bd"}


def _version(text: str) -> tuple[int, ...]:
    """(major, minor) of a version string such as ``3.11.2``."""
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def markdown_table(report: Mapping[str, Any]) -> str:
    """The summary table: one row per method and candidate mode."""
    n = report["grid"]
    lines = [
        f"Grid pointing game, {report['model']}, {n}x{n} grids of {report['cell']} px cells, "
        f"{len(report['grids'])} grids, {report['cells_scored']} cells, tau {report['tau']} "
        f"(chance {1 / n ** 2:.3f}).",
        "",
        "| method | library | candidates | mean | median | quartiles | s / grid |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in report["methods"].values():
        s = entry["summary"]
        candidates = entry["candidates"]
        if entry.get("candidate_recall", 1.0) < 1.0:
            candidates += f" (map for {100 * entry['candidate_recall']:.0f} % of cells)"
        lines.append(
            f"| {entry['label']} | {entry['source']} | {candidates} | {s['mean']:.3f} | "
            f"{s['median']:.3f} | {s['q1']:.3f}-{s['q3']:.3f} | "
            f"{entry['seconds_per_grid']:.2f} |")
    return "\n".join(lines) + "\n"


def box_plot(report: Mapping[str, Any]) -> Figure:
    """Horizontal box plot of each method's cell scores (mean as a dot, chance as a line)."""
    entries = list(report["methods"].values())
    data = [np.asarray([s for row in e["scores"] for s in row], dtype=float) for e in entries]
    fig = Figure(figsize=(8.0, 0.35 * len(entries) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    positions = np.arange(len(entries))[::-1]
    # matplotlib 3.10 replaced vert=False by orientation="horizontal" (vert is deprecated).
    horizontal: dict[str, Any] = (
        {"orientation": "horizontal"} if _version(matplotlib.__version__) >= (3, 10)
        else {"vert": False})
    parts = ax.boxplot(data, positions=positions, widths=0.6, patch_artist=True, showfliers=True,
                       flierprops={"markersize": 2.5, "alpha": 0.5}, **horizontal)
    for box, e in zip(parts["boxes"], entries, strict=True):
        box.set_facecolor(SOURCE_COLOURS.get(e["source"], "#7f7f7f"))
        box.set_alpha(0.55)
    ax.scatter([d.mean() if d.size else np.nan for d in data], positions, marker="o",
               color="black", s=12, zorder=3, label="mean")
    n = report["grid"]
    ax.axvline(1 / n ** 2, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_yticks(positions, [e["label"] for e in entries], fontsize=8)
    ax.set_xlim(-0.02, 1.02)
    ax.set_xlabel("grid pointing game score (share of positive mass in the class's own cell)")
    ax.set_title(f"{report['model']}, {n}x{n} grids ({len(report['grids'])} grids, "
                 f"{report['cells_scored']} cells)", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig


def write_report(report: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Write ``gridpg.json``, ``gridpg.md`` and ``gridpg.png`` into ``out`` (each atomically)."""
    out = Path(out)
    paths = {"json": out / "gridpg.json", "table": out / "gridpg.md", "plot": out / "gridpg.png"}
    save_json(paths["json"], report, nan_as_null=True)  # a metric over no photos
    text = markdown_table(report)
    write_atomic(paths["table"], lambda tmp: tmp.write_text(text, encoding="utf-8"))
    save_figure(paths["plot"], box_plot(report), dpi=110)
    return paths
