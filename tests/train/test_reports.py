"""results.json scores and the report files."""
import numpy as np

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


def test_reports_are_written(tmp_path):
    labels = np.arange(10)
    results = evaluation_results({"visual": _onehot(labels), "multimodal": _onehot(labels[::-1])},
                                 labels, primary="multimodal")
    assert results["accuracy"] == 0.0 and results["heads"]["visual"]["accuracy"] == 100.0
    log = reports.MetricsLog(tmp_path)
    log.write("train", 5, {"epoch": 1, "loss": np.float32(2.0), "accuracy_visual": 10.0})
    log.write("eval", 5, {"epoch": 1, "accuracy_visual": 100.0})
    log.write("train", 10, {"epoch": 2, "loss": 1.0, "accuracy_visual": 30.0})
    log.close()
    reports.plot_confusion(results, tmp_path / "c.png")
    reports.plot_curves(reports.read_metrics(tmp_path / reports.METRICS_FILE), tmp_path / "t.png")
    assert (tmp_path / "c.png").stat().st_size > 1000 and (tmp_path / "t.png").stat().st_size > 1000
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    # a resumed run at step 5 drops what the killed run logged after it
    reports.MetricsLog(tmp_path, resume_step=5, tensorboard=False).close()
    assert [r["step"] for r in reports.read_metrics(tmp_path / reports.METRICS_FILE)] == [5, 5]
