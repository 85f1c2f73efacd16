"""Figures written into run folders (matplotlib, no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Write a figure (tight layout) and free it."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def confusion_matrix_png(matrix: list[list[int]], labels: list[str], path: Path, title: str) -> Path:
    cm = np.asarray(matrix, dtype=float)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(labels), 0.8 + 0.7 * len(labels)))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.0%}", ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def history_png(histories: dict[str, dict[str, list[float]]], path: Path, title: str) -> Path:
    """Accuracy, loss and validation UAR against epochs, train and validation, one line per fold."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [("accuracy", "accuracy"), ("loss", "loss"), ("uar", "validation UAR")]
    for ax, (key, name) in zip(axes, panels):
        for fold, h in histories.items():
            label = fold if len(histories) > 1 else ""
            if key in h:
                line, = ax.plot(range(1, len(h[key]) + 1), h[key], lw=1, label=f"train {label}".strip())
                color = line.get_color()
            else:
                color = None
            if f"val_{key}" in h:
                ax.plot(range(1, len(h[f"val_{key}"]) + 1), h[f"val_{key}"], lw=1, ls="--", color=color,
                        label=f"validation {label}".strip())
            if "best_epoch" in h and f"val_{key}" in h:
                ax.axvline(h["best_epoch"][0], color=color or "grey", lw=0.6, ls=":")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        if len(histories) <= 3:
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
