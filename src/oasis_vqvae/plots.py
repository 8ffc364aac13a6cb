"""Figures people would rather look at than read: loss curves, image grids, histograms.

Every function writes one PNG and returns its path; nothing is shown on screen.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")  # files only, also on machines without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def training_curves(history: pd.DataFrame, path: Path, title: str) -> Path:
    """One panel per metric of a Keras history (train and ``val_`` curves together)."""
    names = [c for c in history.columns if c != "epoch" and not c.startswith("val_")]
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    epochs = history["epoch"] + 1 if "epoch" in history else np.arange(1, len(history) + 1)
    for ax, name in zip(axes.flat, names, strict=False):
        ax.plot(epochs, history[name], label="train")
        if f"val_{name}" in history:
            ax.plot(epochs, history[f"val_{name}"], label="validate")
        ax.set_title(name.replace("_", " "))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def image_grid(
    images: np.ndarray, path: Path, title: str, labels: Sequence[str] | None = None, cols: int = 8
) -> Path:
    """Grayscale images (N, H, W) or (N, H, W, 1), values in [0, 1], in a grid.

    Drawn as one mosaic in one axes, each label above its tile: a figure of one axes renders
    in a fraction of a second, where one axes per image took about 0.1 s each on a small CPU.
    """
    images = np.asarray(images, dtype=np.float32).reshape(len(images), *np.shape(images)[1:3])
    count, height, width = images.shape
    cols = max(1, min(cols, count))
    rows = max(1, math.ceil(count / cols))
    gap = max(1, height // 16)
    band = max(gap, math.ceil(0.14 * height)) if labels is not None else gap  # room for a label
    mosaic = np.full((rows * (height + band), cols * (width + gap)), np.nan, np.float32)
    fig, ax = plt.subplots(figsize=(1.6 * cols, 1.6 * rows + 0.5))
    for index, image in enumerate(images):
        top = (index // cols) * (height + band) + band
        left = (index % cols) * (width + gap)
        mosaic[top : top + height, left : left + width] = image
        if labels is not None and labels[index]:
            ax.text(left + width / 2, top - 0.5, labels[index], fontsize=7, ha="center",
                    va="bottom")  # fmt: skip
    gray = plt.get_cmap("gray").copy()
    gray.set_bad("white")  # the gaps between tiles
    ax.imshow(np.ma.masked_invalid(mosaic), cmap=gray, vmin=0.0, vmax=1.0,
              interpolation="nearest")  # fmt: skip
    ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def paired_grid(
    top: np.ndarray, bottom: np.ndarray, path: Path, title: str, labels: Sequence[str] = ()
) -> Path:
    """Originals (top row) above their reconstructions (bottom row)."""
    cols = len(top)
    names = list(labels) + [""] * cols if labels else None
    return image_grid(np.concatenate([top, bottom]), path, title, labels=names, cols=cols)


def histogram(
    values: np.ndarray, path: Path, title: str, xlabel: str, bins: int | Sequence[float] = 40
) -> Path:
    """A histogram of one array of values."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.hist(np.asarray(values).ravel(), bins=bins, color="#4c72b0")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def histograms(
    series: Mapping[str, np.ndarray],
    path: Path,
    title: str,
    xlabel: str,
    bins: int | Sequence[float] = 20,
    marker: tuple[float, str] | None = None,
    share: bool = False,
) -> Path:
    """Overlaid histograms of several named arrays; ``marker`` = (x, label) draws a line.

    ``share``: each bar is its series' share of values (sets of different sizes compare).
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    edges = np.histogram_bin_edges(np.concatenate([np.ravel(v) for v in series.values()]), bins)
    for name, values in series.items():
        weights = np.full(np.size(values), 1.0 / max(1, np.size(values))) if share else None
        ax.hist(np.ravel(values), bins=edges, weights=weights, alpha=0.55,
                label=f"{name} (n={np.size(values)})")  # fmt: skip
    if marker is not None:
        ax.axvline(marker[0], color="#c44e52", linestyle="--", label=marker[1])
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of images" if share else "count")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def spectrum_ratios(ratios: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Ratios of radial power spectra (index k = frequency radius k + 1) on a log scale.

    The x axis is the share of the Nyquist frequency; the fine band (from 0.5 up) is shaded.
    """
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, ratio in ratios.items():
        radius = np.arange(1, len(ratio) + 1)
        ax.plot(radius / len(ratio), ratio, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8, label="real held-out slices")
    ax.axvspan(0.5, 1.0, color="#dddddd", alpha=0.5, label="fine band")
    ax.set_yscale("log")
    ticks = matplotlib.ticker.FormatStrFormatter("%.2g")  # 0.8, not 8 x 10^-1
    ax.yaxis.set_major_formatter(ticks)
    ax.yaxis.set_minor_formatter(ticks)
    ax.set_title(title)
    ax.set_xlabel("spatial frequency / Nyquist")
    ax.set_ylabel("power / real power")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def code_usage(counts: Mapping[str, np.ndarray], path: Path, title: str) -> Path:
    """Bar chart of how often each codebook entry is used, one series per split."""
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / max(1, len(counts))
    for offset, (name, values) in enumerate(counts.items()):
        share = np.asarray(values, dtype=float) / max(1, np.sum(values))
        ax.bar(np.arange(len(share)) + offset * width, share, width=width, label=name)
    ax.set_title(title)
    ax.set_xlabel("code index")
    ax.set_ylabel("share of positions")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def table_grid(
    cells: Sequence[Sequence[np.ndarray | None]],
    path: Path,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    xlabel: str = "",
    ylabel: str = "",
) -> Path:
    """Images ``(H, W)`` in [0, 1] in a rows x columns table; None leaves a cell empty."""
    rows, cols = len(cells), max(1, max(len(row) for row in cells))
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 1, 1.3 * rows + 0.8), squeeze=False)
    for r, row in enumerate(cells):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = row[c] if c < len(row) else None
            if image is not None:
                ax.imshow(image, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
            else:
                ax.set_facecolor("#f4f4f4")
            if r == rows - 1:
                ax.set_xlabel(col_labels[c], fontsize=7)
            if c == 0:
                ax.set_ylabel(row_labels[r], fontsize=7)
    fig.supxlabel(xlabel, fontsize=9)
    fig.supylabel(ylabel, fontsize=9)
    fig.suptitle(title)
    return _save(fig, path)


def _save(fig: plt.Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
