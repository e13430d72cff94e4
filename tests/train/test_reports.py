"""results.json scores and the report files."""
import json
import threading

import numpy as np
import pytest

from pisa_jax.train import reports
from pisa_jax.train.reports import evaluation_results, head_scores


def _onehot(predictions, classes=10):
    return np.eye(classes)[predictions] * 0.9 + 0.01


def test_head_scores():
    labels = np.array([0, 0, 1, 2, 9])
    scores = head_scores(_onehot(np.array([0, 1, 1, 2, 7])), labels)
    assert scores["accuracy"] == 60.0
    assert scores["per_class_accuracy"]["1"] == 50.0 and scores["per_class_accuracy"]["2"] == 100.0
    assert scores["per_class_accuracy"]["4"] is None        # no test sample of level 4
    assert scores["mae_levels"] == (0 + 1 + 0 + 0 + 2) / 5
    assert 0.9 < scores["spearman"] <= 1.0
    assert np.array(scores["confusion_matrix"]).sum() == 5
    assert head_scores(_onehot(np.zeros(5, int)), labels)["spearman"] is None  # constant


def test_spearman_correlation_equals_scipys_with_ties():
    from scipy import stats
    rng = np.random.default_rng(0)
    for n in (2, 3, 10, 117):
        predictions, labels = rng.integers(0, 4, n), rng.integers(0, 10, n)  # many ties
        if len(set(predictions)) > 1 and len(set(labels)) > 1:
            np.testing.assert_allclose(reports.spearman_correlation(predictions, labels),
                                       stats.spearmanr(predictions, labels).statistic, rtol=1e-12)
    spearman = reports.spearman_correlation
    assert spearman(np.array([3, 1, 2]), np.array([30, 10, 20])) == pytest.approx(1)
    assert spearman(np.array([1, 2]), np.array([2, 1])) == pytest.approx(-1)
    assert spearman(np.array([2, 2, 2]), np.array([1, 2, 3])) is None
    assert spearman(np.array([1]), np.array([1])) is None


def test_scores_and_the_metrics_log(tmp_path):
    labels = np.arange(10)
    results = evaluation_results({"visual": _onehot(labels), "multimodal": _onehot(labels[::-1])},
                                 labels, primary="multimodal")
    assert results["accuracy"] == 0.0 and results["heads"]["visual"]["accuracy"] == 100.0
    log = reports.MetricsLog(tmp_path)
    log.write("train", 5, {"epoch": 1, "loss": np.float32(2.0), "accuracy_visual": 10.0})
    log.write("eval", 5, {"epoch": 1, "accuracy_visual": 100.0})
    log.write("train", 10, {"epoch": 2, "loss": 1.0, "accuracy_visual": 30.0})
    log.close()
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # a resumed run at step 5 drops what the killed run logged after it
    reports.MetricsLog(tmp_path, resume_step=5, tensorboard=False).close()
    assert [r["step"] for r in reports.read_metrics(tmp_path / reports.METRICS_FILE)] == [5, 5]


def test_tensorboard_writer_starts_without_importing_torch(tmp_path):
    """Where the torch extra is installed, tensorboardX's writer would import PyTorch (seconds
    per training process); the metrics log keeps it out, and torch still imports afterwards."""
    import subprocess
    import sys
    code = ("import sys\n"
            "from pisa_jax.train import reports\n"
            f"log = reports.MetricsLog({str(tmp_path)!r})\n"
            "log.scalars('train', 1, {'loss': 1.5})\n"
            "log.close()\n"
            "print('torch' in sys.modules)\n"
            "try:\n"
            "    import torch\n"
            "except ImportError:\n"
            "    print('no torch')\n"
            "else:\n"
            "    print('torch', torch.__name__)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[0] == "False", out.stdout
    assert lines[1:] in (["no", "torch"], ["torch", "torch"]), out.stdout
    assert list((tmp_path / "tensorboard").iterdir()), "no event file written"


def test_eval_reports_keep_the_best_evaluation_beside_the_latest(tmp_path):
    labels = np.arange(10)
    good = evaluation_results({"multimodal": _onehot(labels)}, labels, primary="multimodal")
    worse = evaluation_results({"multimodal": _onehot(labels[::-1])}, labels, primary="multimodal")
    log = reports.MetricsLog(tmp_path, tensorboard=False)
    log.write("train", 5, {"epoch": 1, "loss": 2.0, "accuracy_multimodal": 10.0})
    log.write("eval", 5, {"epoch": 1, "accuracy_multimodal": 100.0})
    log.close()
    reports.write_eval_reports(tmp_path, {**good, "step": 5}, best=True)
    best_png = (tmp_path / "confusion_matrix_best.png").read_bytes()
    assert best_png == (tmp_path / reports.CONFUSION_PNG).read_bytes() and len(best_png) > 1000
    reports.write_eval_reports(tmp_path, {**worse, "step": 10}, best=False)
    assert (tmp_path / "confusion_matrix_best.png").read_bytes() == best_png  # kept
    assert (tmp_path / reports.CONFUSION_PNG).read_bytes() != best_png        # the latest
    assert json.loads((tmp_path / "results_best.json").read_text())["step"] == 5
    assert not list(tmp_path.glob("*.tmp"))


def test_eval_figures_are_drawn_in_the_background_and_finished_at_close(tmp_path, monkeypatch):
    labels = np.arange(10)
    results = {**evaluation_results({"visual": _onehot(labels)}, labels, primary="visual"),
               "step": 5}
    log = reports.MetricsLog(tmp_path, tensorboard=False)
    log.write("eval", 5, {"epoch": 1, "accuracy_visual": 100.0})
    release, draw = threading.Event(), reports.figures.plot_confusion

    def slow_draw(*args):
        release.wait(10)
        draw(*args)
    monkeypatch.setattr(reports.figures, "plot_confusion", slow_draw)
    reports.write_eval_reports(tmp_path, results, best=True, log=log)
    assert (tmp_path / reports.RESULTS_FILE).is_file() and (tmp_path / "results_best.json").is_file()
    assert not (tmp_path / reports.CONFUSION_PNG).exists()  # the loop goes on while it draws
    release.set()
    log.close()
    assert {reports.CONFUSION_PNG, "confusion_matrix_best.png", reports.CURVES_PNG} <= {
        p.name for p in tmp_path.iterdir()}
