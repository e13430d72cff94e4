"""RESULTS.md and results.csv of an experiment: one row per split x cell, the paper beside it."""
from __future__ import annotations

import csv
import io
from pathlib import Path

from pisa_jax.files import atomic_write
from pisa_jax.reproduce import statistics
from pisa_jax.reproduce.experiments import Experiment
from pisa_jax.reproduce.plan import DONE, SKIPPED, Choices, Run

RESULTS_MD, RESULTS_CSV = "RESULTS.md", "results.csv"
SUMMARY_FIGURES = ("accuracy_last", "accuracy_best", "best_epoch", "video_accuracy", "mae_levels",
                   "spearman", "seconds_per_epoch")


def aggregate(experiment: Experiment, runs: list[Run]) -> list[dict]:
    """One row per split x cell (in plan order) with the summary of its finished seeds."""
    rows = []
    for split in dict.fromkeys(r.split for r in runs):
        for cell in experiment.cells:
            mine = [r for r in runs if r.split == split and r.cell.name == cell.name]
            if not mine:
                continue
            done = [r for r in mine if r.status == DONE]
            figures = [f for f in (statistics.run_figures(r.workdir) for r in done) if f]
            skipped = [r.detail for r in mine if r.status == SKIPPED]
            rows.append({"split": split, "cell": cell, "seeds_planned": len(mine),
                         "seeds": [r.seed for r in done], "skipped": skipped[0] if skipped else "",
                         "summary": statistics.summarize_cell(figures)})
    return rows


def _number(value, digits=2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _mean_std(pair, digits=2) -> str:
    if not pair or pair[0] is None:
        return "–"
    mean, std = pair
    return _number(mean, digits) + ("" if std is None else f" ± {_number(std, digits)}")


def _ci(summary: dict) -> str:
    ci = summary.get("ci")
    return "–" if ci is None else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def csv_text(experiment: Experiment, rows: list[dict]) -> str:
    header = ["experiment", "split", "cell", "label", "paper", "seeds_done", "seeds_planned"]
    for key in SUMMARY_FIGURES:
        header += [f"{key}_mean", f"{key}_std"]
    header += ["ci95_low", "ci95_high"]
    for head in statistics.HEADS:
        header += [f"accuracy_{head}_mean", f"accuracy_{head}_std"]
    header += ["prediction_head", "num_videos", "num_samples", "skipped"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        s, cell = row["summary"], row["cell"]
        values = [experiment.name, row["split"], cell.name, cell.label, cell.paper,
                  s["seeds_done"], row["seeds_planned"]]
        for key in SUMMARY_FIGURES:
            values += list(s.get(key, (None, None)))
        values += list(s.get("ci", (None, None)))
        for head in statistics.HEADS:
            values += list(s.get("heads", {}).get(head, (None, None)))
        values += [s.get("prediction_head"), s.get("num_videos"), s.get("num_samples"),
                   row["skipped"]]
        writer.writerow(["" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)
                         for v in values])
    return out.getvalue()


def _table(header: list[str], lines: list[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(line) + " |" for line in lines])


def _main_figure(experiment: Experiment, s: dict) -> str:
    if experiment.metric == "seconds_per_epoch":
        return _mean_std(s.get("seconds_per_epoch"), 1)
    text = _mean_std(s.get("accuracy_last"))
    return text if text == "–" else f"{text} {_ci(s)}"


def markdown(experiment: Experiment, rows: list[dict], choices: Choices, command: str,
             device: str) -> str:
    splits = list(dict.fromkeys(r["split"] for r in rows))
    cells = list(dict.fromkeys(r["cell"].name for r in rows))
    by = {(r["split"], r["cell"].name): r for r in rows}
    label = {r["cell"].name: r["cell"] for r in rows}
    seconds = experiment.metric == "seconds_per_epoch"
    lines = [f"# {experiment.title}", "", experiment.question, "",
             f"Made by `{command}` on {device}. Recipe: preset `{choices.preset}`"
             + (f", {choices.epochs} epochs" if choices.epochs else "")
             + f"; dataset `{choices.dataset}`; seeds 0-{choices.seeds - 1}.", ""]
    if choices.dataset == "synthetic":
        lines += ["**Synthetic data at CPU scale.** These runs check that the whole pipeline "
                  "works; their numbers say nothing about PISA. The paper's figures (PISA, "
                  "official split, one run each) stand beside them only to show the layout.", ""]
    if seconds:
        lines += ["Seconds per training epoch: median over the epochs after the first (which "
                  "includes compilation), mean ± std over seeds. The paper's GPU is not named.", ""]
    else:
        lines += [
            "How to read: accuracy (%) of the prediction head (the multimodal head where both "
            "branches exist) on the test split, mean ± std over seeds. *last*: after the last "
            "epoch. *best*: at the epoch with the best test accuracy, i.e. the test split chose "
            "the epoch, as the paper did (optimistic); both are given. *95 % CI*: bootstrap "
            f"interval of the last-epoch accuracy averaged over seeds, resampling test "
            f"recordings (not samples), {statistics.RESAMPLES} replicates. *video*: video-level "
            "accuracy, each recording predicted by the mean of its samples' probabilities. "
            "*MAE* (levels) and *Spearman* (predicted vs true level): per sample, last epoch.", ""]
    # Side by side: the splits next to each other (the official split lets a pianist appear in
    # train and test; the *_by_source split does not).
    what = "Seconds per epoch" if seconds else "Last-epoch accuracy [95 % CI by video]"
    lines += [f"## {what}, splits side by side", ""]
    lines += _table(["cell", "paper"] + [f"`{s}`" for s in splits],
                    [[label[c].label, _number(label[c].paper)]
                     + [_main_figure(experiment, by[s, c]["summary"]) if (s, c) in by else "–"
                        for s in splits] for c in cells])
    lines.append("")
    for split in splits:
        mine = [by[split, c] for c in cells if (split, c) in by]
        lines += [f"## `{split}`", ""]
        if seconds:
            lines += _table(["cell", "paper s/epoch", "s/epoch", "seeds"], [
                [r["cell"].label, _number(r["cell"].paper), _mean_std(r["summary"].get("seconds_per_epoch"), 1),
                 str(r["summary"]["seeds_done"])] for r in mine])
        else:
            lines += _table(["cell", "paper", "last", "best (test-selected)", "best epoch",
                             "95 % CI (by video)", "video", "MAE", "Spearman", "seeds"], [
                [r["cell"].label, _number(r["cell"].paper), _mean_std(s.get("accuracy_last")),
                 _mean_std(s.get("accuracy_best")), _mean_std(s.get("best_epoch"), 1), _ci(s),
                 _mean_std(s.get("video_accuracy")), _mean_std(s.get("mae_levels")),
                 _mean_std(s.get("spearman")), str(s["seeds_done"])]
                for r in mine for s in [r["summary"]]])
            lines += ["", "Every head, last-epoch accuracy (%):", ""]
            lines += _table(["cell"] + list(statistics.HEADS), [
                [r["cell"].label] + [_mean_std(r["summary"].get("heads", {}).get(h))
                                     for h in statistics.HEADS] for r in mine])
        lines.append("")
    skipped = [r for r in rows if r["skipped"]]
    if skipped:
        lines += ["## Not run", ""]
        lines += [f"- `{r['split']}` {r['cell'].label}: {r['skipped']}" for r in skipped]
        lines.append("")
    lines += [f"![{experiment.name}]({experiment.name}.png)", ""]
    if experiment.note:
        lines += [experiment.note, ""]
    return "\n".join(lines)


def write_report(experiment: Experiment, runs: list[Run], choices: Choices, command: str,
                 device: str) -> Path:
    """RESULTS.md, results.csv and <experiment>.png in <workdir>/<experiment>/."""
    from pisa_jax.reproduce.plots import plot_experiment
    rows = aggregate(experiment, runs)
    folder = Path(choices.workdir) / experiment.name
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / RESULTS_CSV, csv_text(experiment, rows))
    plot_experiment(experiment, rows, folder / f"{experiment.name}.png")
    atomic_write(folder / RESULTS_MD, markdown(experiment, rows, choices, command, device))
    return folder / RESULTS_MD
