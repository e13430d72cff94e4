"""What a user reads in the workdir: metrics.jsonl, TensorBoard events, results.json, PNGs.

Only the lead host (process 0) writes these. TensorBoard files come from tensorboardX (no
TensorFlow needed); figures from matplotlib's Agg backend (no display needed).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"


class MetricsLog:
    """Appends one JSON record per line to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str | Path, *, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        # Records past the step we resume from belong to the killed run's lost work: drop them,
        # so that the log (and the curves) read like one uninterrupted run.
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        _atomic_write(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._writer = None
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._writer = SummaryWriter(str(Path(workdir) / "tensorboard"))

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": int(step), **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float, np.floating, np.integer)) and key != "epoch":
                    self._writer.add_scalar(f"{kind}/{key}", float(value), int(step))
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return records


def write_results(workdir: str | Path, results: dict, name: str = RESULTS_FILE) -> Path:
    path = Path(workdir) / name
    _atomic_write(path, json.dumps(results, indent=2) + "\n")
    return path


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(results: dict, path: str | Path) -> None:
    """One confusion matrix (rows true level, columns predicted level) per head."""
    plt = _pyplot()
    heads = list(results["heads"])
    fig, axes = plt.subplots(1, len(heads), figsize=(4.6 * len(heads), 4.4), squeeze=False)
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
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_curves(records: list[dict], path: str | Path) -> None:
    """Training loss/accuracy per epoch and test accuracy of each head per evaluation."""
    plt = _pyplot()
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval"]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        epochs = [r["epoch"] for r in train]
        ax_loss.plot(epochs, [r["loss"] for r in train], label="train loss (sum of heads)")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right")
    for key in sorted({k for r in train for k in r if k.startswith("accuracy_")}):
        ax_acc.plot([r["epoch"] for r in train], [r[key] for r in train], "--",
                    label=f"train {key[len('accuracy_'):]}")
    for key in sorted({k for r in evals for k in r if k.startswith("accuracy_")}):
        ax_acc.plot([r["epoch"] for r in evals], [r[key] for r in evals], "o-",
                    label=f"test {key[len('accuracy_'):]}")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend(loc="lower right", fontsize=8)
    from matplotlib.ticker import MaxNLocator
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
