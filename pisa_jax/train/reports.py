"""What a user reads in the workdir: the scores of an evaluation (results.json), metrics.jsonl,
TensorBoard events and the PNG figures (drawn by pisa_jax.train.figures).

Classes are skill levels: class c is level c + 1 (PISA rates players 1-10). Only the lead host
(process 0) writes files. TensorBoard files come from tensorboardX (no TensorFlow needed).
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path

import numpy as np

from pisa_jax.files import atomic_write
from pisa_jax.train import figures, videos
from pisa_jax.train.background import BackgroundJobs

METRICS_FILE = "metrics.jsonl"
RESULTS_FILE = "results.json"
CONFUSION_PNG = "confusion_matrix.png"
CURVES_PNG = "training_curves.png"


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """int [num_classes (true), num_classes (predicted)]."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix


def _finite_or_none(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """float [n]: 1-based ranks, tied values sharing the mean of their ranks."""
    _, group, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)                                  # [groups]: rank of each group's last
    return ((last - counts + 1 + last) / 2.0)[group.reshape(-1)]


def spearman_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation of two [n] arrays (Pearson's of their average ranks), None
    when either is constant. In numpy: importing scipy.stats costs every process over a second."""
    a, b = np.asarray(a), np.asarray(b)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return None
    ranks_a, ranks_b = _average_ranks(a), _average_ranks(b)
    return _finite_or_none(float(np.corrcoef(ranks_a, ranks_b)[0, 1]))


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
    return {
        "accuracy": 100.0 * float((predictions == labels).mean()) if len(labels) else 0.0,
        "per_class_accuracy": per_class,
        "mae_levels": float(np.abs(predictions - labels).mean()) if len(labels) else 0.0,
        "spearman": spearman_correlation(predictions, labels),
        "confusion_matrix": matrix.tolist(),
    }


def evaluation_results(probs: dict[str, np.ndarray], labels: np.ndarray, *, primary: str,
                       video_ids: np.ndarray | None = None) -> dict:
    """Scores of every head; `primary` names the head that makes the prediction.

    With the samples' video_ids also the video-level scores: each head's `video_accuracy` (the
    mean of a recording's sample probabilities decides) and `videos`, the per-recording table
    (`pisa_jax.train.videos.video_table`)."""
    heads = {head: head_scores(p, labels) for head, p in probs.items()}
    results = {"num_samples": int(len(labels)), "prediction_head": primary,
               "accuracy": heads[primary]["accuracy"], "heads": heads}
    if videos.has_video_ids(video_ids):
        table = videos.video_table(probs, labels, video_ids)
        for head, scores in heads.items():
            scores["video_accuracy"] = videos.video_accuracy(table, head)
        results.update(num_videos=len(table), video_accuracy=heads[primary]["video_accuracy"],
                       videos=table)
    return results


def summary_line(results: dict) -> str:
    heads = results["heads"]
    accs = "  ".join(f"{h} {heads[h]['accuracy']:.2f}%" for h in heads)
    primary = heads[results["prediction_head"]]
    rho = primary["spearman"]
    by_video = (f", video-level {results['video_accuracy']:.2f}% of {results['num_videos']} videos"
                if "video_accuracy" in results else "")
    return (f"test accuracy: {accs}  | {results['prediction_head']}: MAE "
            f"{primary['mae_levels']:.3f} levels, Spearman "
            f"{'n/a' if rho is None else f'{rho:.3f}'} ({results['num_samples']} samples{by_video})")


def eval_record(results: dict, epoch: int) -> dict:
    """The scalars of one evaluation for metrics.jsonl / TensorBoard (accuracies in %)."""
    record = {"epoch": epoch, "accuracy": results["accuracy"]}
    for head, scores in results["heads"].items():
        record[f"accuracy_{head}"] = scores["accuracy"]
        record[f"mae_levels_{head}"] = scores["mae_levels"]
        if "video_accuracy" in scores:
            record[f"video_accuracy_{head}"] = scores["video_accuracy"]
        if scores["spearman"] is not None:
            record[f"spearman_{head}"] = scores["spearman"]
    return record


class MetricsLog:
    """Appends one JSON record per line to metrics.jsonl and mirrors scalars (and figures) to
    TensorBoard under workdir/tensorboard."""

    def __init__(self, workdir: str | Path, *, resume_step: int = 0, tensorboard: bool = True):
        self.path = Path(workdir) / METRICS_FILE
        # Records past the step we resume from belong to the killed run's lost work: drop them,
        # so that the log (and the curves) read like one uninterrupted run; the file as it was
        # is kept beside it first (metrics.jsonl.<time>.bak) whenever anything is dropped.
        before = self.path.read_text() if self.path.is_file() else ""
        kept = "".join(json.dumps(r) + "\n" for r in read_metrics(self.path)
                       if r.get("step", 0) <= resume_step)
        if kept != before:
            if before.strip():
                atomic_write(_backup_path(self.path), before)
            atomic_write(self.path, kept)
        self._writer = None
        # TensorBoard's writer is shared with the figures' thread (`image`): one call at a time
        self._writer_lock = threading.Lock()
        self.background = BackgroundJobs()  # the evaluation figures (write_eval_reports)
        if tensorboard:
            SummaryWriter = _summary_writer_class()
            # purge_step: TensorBoard hides events past the resumed step that the killed run
            # wrote, so resumed curves do not double back.
            self._writer = SummaryWriter(str(Path(workdir) / "tensorboard"),
                                         purge_step=resume_step or None)

    def write(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": int(step), **{k: _plain(v) for k, v in values.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        self.scalars(kind, step, values)

    def scalars(self, kind: str, step: int, values: dict, flush: bool = True) -> None:
        """TensorBoard only (per-step values, which metrics.jsonl does not keep)."""
        if self._writer is None:
            return
        with self._writer_lock:
            for key, value in values.items():
                if isinstance(value, (int, float, np.floating, np.integer)) and key != "epoch":
                    self._writer.add_scalar(f"{kind}/{key}", float(value), int(step))
            if flush:
                self._writer.flush()

    def image(self, tag: str, png: str | Path, step: int) -> None:
        """A PNG the reports wrote (confusion matrix, curves), as a TensorBoard image."""
        if self._writer is None or not Path(png).is_file():
            return
        from PIL import Image  # matplotlib's own dependency
        with Image.open(png) as image:
            pixels = np.asarray(image.convert("RGB"))  # uint8 [H, W, 3]
        with self._writer_lock:
            self._writer.add_image(tag, pixels, int(step), dataformats="HWC")
            self._writer.flush()

    def close(self) -> None:
        """After the figures in flight are written (their error, if any, is raised here)."""
        try:
            self.background.close()
        finally:
            if self._writer is not None:
                self._writer.close()


def _summary_writer_class():
    """tensorboardX's SummaryWriter, imported without PyTorch: its writer module tries
    `import torch` only to accept torch tensors (this module passes floats and numpy arrays),
    and where the torch extra is installed that import cost every training process 2-4 s."""
    if "tensorboardX.writer" in sys.modules or "torch" in sys.modules:
        from tensorboardX import SummaryWriter
        return SummaryWriter
    sys.modules["torch"] = None  # `import torch` raises ImportError while this entry is None
    try:
        from tensorboardX import SummaryWriter
    finally:
        del sys.modules["torch"]  # a later `import torch` works as usual
    return SummaryWriter


class _PlainProgress:
    """The progress bar for logs that are files: one line per tenth of an epoch."""

    def __init__(self, total: int, initial: int, desc: str):
        self.total, self.count, self.desc, self.postfix = total, initial, desc, {}
        self.every = max(total // 10, 1)

    def set_postfix(self, **values):
        self.postfix = values

    def update(self, n: int = 1):
        self.count += n
        if self.count % self.every == 0 or self.count == self.total:
            shown = "  ".join(f"{k} {v}" for k, v in self.postfix.items())
            print(f"{self.desc}: step {self.count}/{self.total}  {shown}", flush=True)

    def close(self):
        pass


class _Silent(_PlainProgress):
    """Hosts other than the lead print nothing."""

    def update(self, n: int = 1):
        self.count += n


def progress_bar(total: int, initial: int, desc: str, *, shown: bool = True):
    """A redrawn bar on a terminal; plain lines when stderr is a file (a log, a cluster job),
    where a redrawn bar would write every frame into the file."""
    if not shown:
        return _Silent(total, initial, desc)
    if sys.stderr.isatty():
        from tqdm import tqdm
        return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, leave=True)
    return _PlainProgress(total, initial, desc)


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        return value.item()
    return value


def _backup_path(path: Path) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup = path.with_name(f"{path.name}.{stamp}.bak")
    n = 1
    while backup.exists():
        backup, n = path.with_name(f"{path.name}.{stamp}_{n}.bak"), n + 1
    return backup


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
    atomic_write(path, json.dumps(results, indent=2) + "\n")
    return path


def write_eval_reports(workdir: str | Path, results: dict, *, best: bool,
                       log: MetricsLog | None = None) -> None:
    """results.json (and results_best.json when it is the best) now; the confusion matrix
    (*_best copy too), the training curves from metrics.jsonl and, when `log` is given, both
    figures in TensorBoard: drawn on the log's background thread, or here without a log."""
    workdir = Path(workdir)
    write_results(workdir, results)
    if best:
        write_results(workdir, results, name="results_best.json")
    records = read_metrics(workdir / METRICS_FILE)  # as of this evaluation, whenever it is drawn

    def draw() -> None:
        figures.plot_confusion(results, workdir / CONFUSION_PNG)
        if best:  # the same figure: a copy, not a second rendering
            atomic_write(workdir / "confusion_matrix_best.png",
                         (workdir / CONFUSION_PNG).read_bytes())
        figures.plot_curves(records, workdir / CURVES_PNG)
        if log is not None:
            step = results.get("step", 0)
            log.image("eval/confusion_matrix", workdir / CONFUSION_PNG, step)
            log.image("eval/training_curves", workdir / CURVES_PNG, step)
    if log is None:
        draw()
    else:
        log.background.submit(draw)
