"""Scoring a model on the test split: every sample once, padding masked out.

Shared by the training loop (after each evaluation epoch) and `python -m pisa_jax.evaluate`.
"""
from __future__ import annotations

from pathlib import Path

import jax
import numpy as np

from pisa_jax.train import reports
from pisa_jax.train.distributed import unreplicate_to_host
from pisa_jax.train.metrics import evaluation_results


def predict_split(eval_step, variables, source, *, global_batch_size: int) -> tuple[dict, np.ndarray]:
    """Class probabilities of each head for every sample of `source`.

    eval_step: from step.make_eval_step; variables: replicated {"params", "batch_stats"}.
    Returns ({head: float [n, classes]}, labels int [n]) in the pipeline's sample order.
    """
    from pisa_jax.data.pipeline import eval_batches, prefetch_to_device
    batches = eval_batches(source, global_batch_size=global_batch_size,
                           num_local_devices=jax.local_device_count())
    probs, labels = {}, []
    for batch in prefetch_to_device(batches, size=2):
        out = eval_step(variables, batch)
        # every device holds the all-gathered global batch: read the first: [global_devices, b, ...]
        out = unreplicate_to_host(out)
        keep = out["mask"].reshape(-1)
        labels.append(out["label"].reshape(-1)[keep])
        for head, p in out["probs"].items():
            probs.setdefault(head, []).append(p.reshape(-1, p.shape[-1])[keep])
    if not labels:
        raise ValueError("the test split is empty")
    return ({h: np.concatenate(v) for h, v in probs.items()},
            np.concatenate(labels).astype(np.int64))


def score(eval_step, variables, source, *, global_batch_size: int, primary: str) -> dict:
    probs, labels = predict_split(eval_step, variables, source, global_batch_size=global_batch_size)
    return evaluation_results(probs, labels, primary=primary)


def write_eval_reports(workdir: str | Path, results: dict, *, best: bool) -> None:
    """results.json + confusion matrix of this evaluation; *_best copies when it is the best;
    the training curves from metrics.jsonl."""
    workdir = Path(workdir)
    reports.write_results(workdir, results)
    reports.plot_confusion(results, workdir / reports.CONFUSION_PNG)
    if best:
        reports.write_results(workdir, results, name="results_best.json")
        reports.plot_confusion(results, workdir / "confusion_matrix_best.png")
    reports.plot_curves(reports.read_metrics(workdir / reports.METRICS_FILE),
                        workdir / reports.CURVES_PNG)


def eval_record(results: dict, epoch: int) -> dict:
    """The scalars of one evaluation for metrics.jsonl / TensorBoard (accuracies in %)."""
    record = {"epoch": epoch, "accuracy": results["accuracy"]}
    for head, scores in results["heads"].items():
        record[f"accuracy_{head}"] = scores["accuracy"]
        record[f"mae_levels_{head}"] = scores["mae_levels"]
        if scores["spearman"] is not None:
            record[f"spearman_{head}"] = scores["spearman"]
    return record
