"""The training's figures: the confusion matrices of an evaluation and the training curves, as
PNG files drawn with matplotlib's Agg backend (no display needed), imported on first use.

Classes are skill levels: class c is level c + 1.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from pisa_jax.files import atomic_write


def new_figure(figsize: tuple[float, float]):
    """A matplotlib Figure drawn by Agg, without pyplot: no global figure registry to close, no
    display backend, and ~0.3 s less to import."""
    from matplotlib.figure import Figure
    return Figure(figsize=figsize)


def save_png(fig, path: str | Path) -> None:
    """Render the figure whole, then write it atomically (a kill never leaves half a PNG)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write(path, buffer.getvalue())


def plot_confusion(results: dict, path: str | Path) -> None:
    """One confusion matrix (rows true level, columns predicted level) per head."""
    heads = list(results["heads"])
    fig = new_figure((4.6 * len(heads), 4.4))
    axes = fig.subplots(1, len(heads), squeeze=False)
    for ax, head in zip(axes[0], heads):
        matrix = np.array(results["heads"][head]["confusion_matrix"])
        n = matrix.shape[0]
        ax.imshow(matrix, cmap="Blues")
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if matrix[i, j] > matrix.max() / 2 else "black")
        ax.set_xticks(range(n), [str(c + 1) for c in range(n)])
        ax.set_yticks(range(n), [str(c + 1) for c in range(n)])
        ax.set_xlabel("predicted level")
        ax.set_ylabel("true level")
        ax.set_title(f"{head}: {results['heads'][head]['accuracy']:.1f}%")
    fig.suptitle(f"test split, step {results.get('step', '?')}")
    # fixed margins, not tight_layout: its extra layout pass costs more than the drawing itself
    fig.subplots_adjust(left=0.14 / len(heads), right=0.99, bottom=0.12, top=0.86, wspace=0.3)
    save_png(fig, path)


def plot_curves(records: list[dict], path: str | Path) -> None:
    """Training loss/accuracy per epoch and test accuracy of each head per evaluation."""
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig = new_figure((11, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    if train:
        epochs = [r["epoch"] for r in train]
        ax_loss.plot(epochs, [r["loss"] for r in train], label="train loss (sum of heads)")
        ax_loss.legend(loc="upper right")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    for key in sorted({k for r in train for k in r if k.startswith("accuracy_")}):
        ax_acc.plot([r["epoch"] for r in train], [r[key] for r in train], "--",
                    label=f"train {key[len('accuracy_'):]}")
    for key in sorted({k for r in evals for k in r if k.startswith("accuracy_")}):
        ax_acc.plot([r["epoch"] for r in evals], [r[key] for r in evals], "o-",
                    label=f"test {key[len('accuracy_'):]}")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    if ax_acc.get_legend_handles_labels()[0]:
        ax_acc.legend(loc="lower right", fontsize=8)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.95, wspace=0.22)
    save_png(fig, path)
