"""Scores of a test-split evaluation: what results.json holds.

Classes are skill levels: class c is level c + 1 (PISA rates players 1-10).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int [num_classes (true), num_classes (predicted)]."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def head_scores(probs: np.ndarray, labels: np.ndarray) -> dict:
    """probs float [n, classes], labels int [n] -> accuracy (%), per-class accuracy (%, None
    where a class has no test sample), mean absolute error in levels, Spearman correlation of the
    predicted with the true level (None when either is constant), confusion matrix."""
    num_classes = probs.shape[-1]
    predictions = probs.argmax(-1)
    matrix = confusion_matrix(labels, predictions, num_classes)
    support = matrix.sum(1)
    per_class = {str(c + 1): (100.0 * matrix[c, c] / support[c] if support[c] else None)
                 for c in range(num_classes)}
    if len(set(predictions.tolist())) > 1 and len(set(labels.tolist())) > 1:
        spearman = stats.spearmanr(predictions, labels).statistic
    else:
        spearman = float("nan")
    return {
        "accuracy": 100.0 * float((predictions == labels).mean()) if len(labels) else 0.0,
        "per_class_accuracy": per_class,
        "mae_levels": float(np.abs(predictions - labels).mean()) if len(labels) else 0.0,
        "spearman": _finite_or_none(float(spearman)),
        "confusion_matrix": matrix.tolist(),
    }


def evaluation_results(probs: dict[str, np.ndarray], labels: np.ndarray, *, primary: str) -> dict:
    """Scores of every head; `primary` names the head that makes the prediction."""
    heads = {head: head_scores(p, labels) for head, p in probs.items()}
    return {"num_samples": int(len(labels)), "prediction_head": primary,
            "accuracy": heads[primary]["accuracy"], "heads": heads}


def summary_line(results: dict) -> str:
    heads = results["heads"]
    accs = "  ".join(f"{h} {heads[h]['accuracy']:.2f}%" for h in heads)
    primary = heads[results["prediction_head"]]
    rho = primary["spearman"]
    return (f"test accuracy: {accs}  | {results['prediction_head']}: MAE "
            f"{primary['mae_levels']:.3f} levels, Spearman "
            f"{'n/a' if rho is None else f'{rho:.3f}'} ({results['num_samples']} samples)")
