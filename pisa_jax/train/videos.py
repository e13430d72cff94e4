"""Video-level scores: one prediction per recording instead of one per sample.

A recording's prediction is the level with the highest mean class probability over its samples.
PISA's test split holds 476 samples of only a few dozen recordings, and samples of one recording
share its player, piece and room: the recordings, not the samples, are the independent units
(the bootstrap of the reproduction tool resamples them).

Classes are skill levels: class c is level c + 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pisa_jax.files import atomic_write

VIDEO_COLUMNS = ("video_id", "true_level", "samples")   # then per head: predicted, correct


def video_table(probs: dict[str, np.ndarray], labels: np.ndarray,
                video_ids: np.ndarray) -> list[dict]:
    """One row per recording, in order of first appearance:
    {"video_id", "true_level", "samples", "predicted_level": {head: level},
     "correct_samples": {head: samples whose own prediction is right}}.

    probs: {head: float [n, classes]}; labels, video_ids: int [n]. A recording whose samples
    disagree on the level (possible with one's own annotations) takes its most common level."""
    video_ids = np.asarray(video_ids)
    labels = np.asarray(labels)
    order = list(dict.fromkeys(video_ids.tolist()))
    rows = []
    for vid in order:
        members = video_ids == vid
        levels, counts = np.unique(labels[members], return_counts=True)
        label = int(levels[counts.argmax()])
        rows.append({
            "video_id": int(vid), "true_level": label + 1, "samples": int(members.sum()),
            "predicted_level": {h: int(p[members].mean(0).argmax()) + 1 for h, p in probs.items()},
            "correct_samples": {h: int((p[members].argmax(-1) == labels[members]).sum())
                                for h, p in probs.items()},
        })
    return rows


def video_accuracy(rows: list[dict], head: str) -> float:
    """% of recordings whose mean-probability prediction is the true level."""
    if not rows:
        return 0.0
    return 100.0 * float(np.mean([r["predicted_level"][head] == r["true_level"] for r in rows]))


def has_video_ids(video_ids) -> bool:
    """False when the samples carry no recording (e.g. predict's cuts of one file: all -1)."""
    return video_ids is not None and len(video_ids) > 0 and bool((np.asarray(video_ids) >= 0).all())


def table_csv(rows: list[dict]) -> str:
    """The per-video table as CSV: video_id, true_level, samples, then predicted_level_<head>
    and correct_samples_<head> for each head."""
    heads = list(rows[0]["predicted_level"]) if rows else []
    header = list(VIDEO_COLUMNS) + [f"{kind}_{h}" for h in heads
                                    for kind in ("predicted_level", "correct_samples")]
    lines = [",".join(header)]
    for r in rows:
        values = [r[c] for c in VIDEO_COLUMNS]
        values += [r[kind][h] for h in heads for kind in ("predicted_level", "correct_samples")]
        lines.append(",".join(str(v) for v in values))
    return "\n".join(lines) + "\n"


def write_table(path: str | Path, rows: list[dict]) -> Path:
    """The per-video table as a CSV file (atomic: a kill never leaves half a table)."""
    return atomic_write(path, table_csv(rows))
