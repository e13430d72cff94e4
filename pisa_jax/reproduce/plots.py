"""The experiment's figure (matplotlib, Agg: no display needed), one panel per split:
a heatmap of the Table 4 grid, Figure 7's curve with error bars, Figure 6's bars of every head,
plain bars otherwise. Error bars are the std over seeds; the paper's figures are black marks."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pisa_jax.reproduce.experiments import DEPTHS, Experiment
from pisa_jax.reproduce.statistics import HEADS
from pisa_jax.train.figures import new_figure, save_png


def _value(row: dict, key: str) -> tuple[float, float]:
    mean, std = row["summary"].get(key, (None, None))
    return (np.nan if mean is None else mean), (0.0 if std is None else std)


def _metric(experiment: Experiment) -> tuple[str, str]:
    if experiment.metric == "seconds_per_epoch":
        return "seconds_per_epoch", "seconds per epoch"
    return "accuracy_last", "test accuracy (%), last epoch"


def _heatmap(ax, experiment, rows, key):
    grid = np.full((len(DEPTHS) + 1, len(DEPTHS)), np.nan)
    text = {}
    for row in rows:
        i, j = row["cell"].position
        mean, std = _value(row, key)
        grid[i, j] = mean
        paper = row["cell"].paper
        text[i, j] = ("–" if np.isnan(mean) else f"{mean:.1f}±{std:.1f}") + (
            f"\n(paper {paper:.1f})" if paper is not None else "")
    image = ax.imshow(grid, cmap="viridis")
    for (i, j), label in text.items():
        ax.text(j, i, label, ha="center", va="center", fontsize=7, color="white")
    ax.set_xticks(range(len(DEPTHS)), [f"R{d}-2D" for d in DEPTHS])
    ax.set_yticks(range(len(DEPTHS) + 1), [f"R{d}-3D" for d in DEPTHS] + ["C3D"])
    ax.set_xlabel("aural backbone")
    ax.set_ylabel("visual backbone")
    return image


def _curve(ax, rows, key):
    xs = [row["cell"].position[0] for row in rows]
    values = [_value(row, key) for row in rows]
    ax.errorbar(xs, [v[0] for v in values], yerr=[v[1] for v in values], marker="o",
                capsize=3, label="this run (mean ± std over seeds)")
    paper = [(x, row["cell"].paper) for x, row in zip(xs, rows) if row["cell"].paper is not None]
    if paper:
        ax.plot(*zip(*paper), "kx", markersize=8, label="paper")
    ax.set_xlabel("dropout rate")
    ax.legend(fontsize=7)


def _bars(ax, rows, key, heads: bool):
    labels = [row["cell"].label for row in rows]
    x = np.arange(len(rows))
    if heads:  # every head of every model, side by side
        width = 0.8 / len(HEADS)
        for k, head in enumerate(HEADS):
            pairs = [row["summary"].get("heads", {}).get(head, (None, None)) for row in rows]
            means = [np.nan if p[0] is None else p[0] for p in pairs]
            stds = [0.0 if p[1] is None else p[1] for p in pairs]
            ax.bar(x + (k - 1) * width, means, width, yerr=stds, capsize=3, label=f"{head} head")
    else:
        values = [_value(row, key) for row in rows]
        ax.bar(x, [v[0] for v in values], 0.6, yerr=[v[1] for v in values], capsize=3,
               label="this run")
    def paper_x(i, row):  # over the bar of the head the paper's figure is for
        head = row["summary"].get("prediction_head")
        return i + (HEADS.index(head) - 1) * 0.8 / len(HEADS) if heads and head in HEADS else i

    paper = [(paper_x(i, row), row["cell"].paper) for i, row in enumerate(rows)
             if row["cell"].paper is not None]
    if paper:
        ax.plot(*zip(*paper), "k_", markersize=18, markeredgewidth=2, label="paper")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    ax.legend(fontsize=7)


def plot_experiment(experiment: Experiment, rows: list[dict], path: str | Path) -> None:
    key, unit = _metric(experiment)
    splits = list(dict.fromkeys(r["split"] for r in rows)) or ["(no runs)"]
    fig = new_figure((5.5 * len(splits), 4.6))
    axes = fig.subplots(1, len(splits), squeeze=False)
    for ax, split in zip(axes[0], splits):
        mine = [r for r in rows if r["split"] == split]
        if experiment.plot == "heatmap":
            fig.colorbar(_heatmap(ax, experiment, mine, key), ax=ax, label=unit)
        elif experiment.plot == "curve":
            _curve(ax, mine, key)
            ax.set_ylabel(unit)
        else:
            _bars(ax, mine, key, heads=experiment.plot == "heads")
            ax.set_ylabel(unit)
        ax.set_title(split, fontsize=9)
    fig.suptitle(experiment.title, fontsize=10)
    fig.tight_layout()
    save_png(fig, path)
