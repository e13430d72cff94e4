"""The numbers of RESULTS.md: per cell, means and spreads over seeds, and a bootstrap confidence
interval that resamples test videos.

Why videos: samples of one recording share its pianist, piece, instrument and room, so they are
not independent draws. PISA's test split is 476 samples of a few dozen recordings; an interval
from resampling samples would be several times too narrow. Each bootstrap replicate draws the
test recordings with replacement, scores every seed's run on that draw (correct samples / all
samples of the drawn recordings) and averages over seeds; the interval is the 2.5th and 97.5th
percentile of 2000 replicates (a fixed generator seed, so RESULTS.md is reproducible). It
describes the uncertainty from the choice of test recordings, for the mean over the seeds run;
the std over seeds describes the training noise.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

RESAMPLES = 2000
CONFIDENCE = 0.95
BOOTSTRAP_SEED = 0
HEADS = ("visual", "aural", "multimodal")


def mean_std(values) -> tuple[float | None, float | None]:
    """(mean, sample std with ddof 1); std None for one value, both None for none. None values
    (e.g. an undefined Spearman correlation) are left out."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return None, None
    std = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return float(np.mean(values)), std


def bootstrap_ci_by_video(tables: list[list[dict]], head: str, *, resamples: int = RESAMPLES,
                          confidence: float = CONFIDENCE,
                          seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """Percentile interval (%) of the sample-level accuracy, averaged over runs, resampling
    recordings. tables: one per-video table per run (results.json["videos"]: rows with
    video_id, samples, correct_samples[head]), all of the same test recordings."""
    if not tables or not tables[0]:
        raise ValueError("no per-video tables to resample")
    ids = [row["video_id"] for row in tables[0]]
    position = {vid: i for i, vid in enumerate(ids)}
    samples = np.array([row["samples"] for row in tables[0]], np.float64)       # [V]
    correct = np.zeros((len(tables), len(ids)))                                 # [runs, V]
    for run, table in enumerate(tables):
        if sorted(row["video_id"] for row in table) != sorted(ids):
            raise ValueError("the runs scored different test videos: no joint resampling")
        for row in table:
            correct[run, position[row["video_id"]]] = row["correct_samples"][head]
    draws = np.random.default_rng(seed).integers(0, len(ids), (resamples, len(ids)))  # [B, V]
    accuracy = correct[:, draws].sum(-1) / samples[draws].sum(-1)              # [runs, B]
    statistic = 100.0 * accuracy.mean(0)                                        # [B]
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(statistic, [tail, 1.0 - tail])
    return float(low), float(high)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def seconds_per_epoch(metrics_file: Path) -> float | None:
    """Median training seconds of the epochs after the first (which includes compilation);
    the only epoch's when there is one."""
    seconds = []
    try:
        lines = metrics_file.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("kind") == "train" and "seconds" in record:
            seconds.append(float(record["seconds"]))
    if not seconds:
        return None
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def run_figures(workdir: Path) -> dict | None:
    """The figures of one finished run, read from its workdir; None when it has no results."""
    last = _read_json(workdir / "results.json")
    if last is None:
        return None
    best = _read_json(workdir / "results_best.json") or last
    primary = last["heads"][last["prediction_head"]]
    return {
        "accuracy_last": last["accuracy"],
        "accuracy_best": best["accuracy"],
        "best_epoch": best.get("epoch"),
        "video_accuracy": last.get("video_accuracy"),
        "mae_levels": primary["mae_levels"],
        "spearman": primary["spearman"],
        "heads": {h: s["accuracy"] for h, s in last["heads"].items()},
        "head_video_accuracy": {h: s.get("video_accuracy") for h, s in last["heads"].items()},
        "prediction_head": last["prediction_head"],
        "videos": last.get("videos"),
        "num_samples": last.get("num_samples"),
        "num_videos": last.get("num_videos"),
        "seconds_per_epoch": seconds_per_epoch(workdir / "metrics.jsonl"),
    }


def summarize_cell(figures: list[dict]) -> dict:
    """Mean and std over the seeds' runs of every figure; the bootstrap interval by video."""
    summary = {"seeds_done": len(figures)}
    if not figures:
        return summary
    for key in ("accuracy_last", "accuracy_best", "best_epoch", "video_accuracy", "mae_levels",
                "spearman", "seconds_per_epoch"):
        summary[key] = mean_std(f[key] for f in figures)
    summary["heads"] = {h: mean_std(f["heads"].get(h) for f in figures)
                        for h in HEADS if any(h in f["heads"] for f in figures)}
    summary["prediction_head"] = figures[0]["prediction_head"]
    summary["num_samples"] = figures[0]["num_samples"]
    summary["num_videos"] = figures[0]["num_videos"]
    tables = [f["videos"] for f in figures]
    if all(tables):
        summary["ci"] = bootstrap_ci_by_video(tables, figures[0]["prediction_head"])
    return summary
