"""The training's PNG figures."""
import numpy as np

from pisa_jax.train import figures
from pisa_jax.train.reports import evaluation_results


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    return len(data)


def test_confusion_matrices_and_curves_are_drawn(tmp_path):
    labels = np.arange(10)
    onehot = np.eye(10)[labels] * 0.9 + 0.01
    results = evaluation_results({"visual": onehot, "multimodal": onehot[::-1]}, labels,
                                 primary="multimodal")
    figures.plot_confusion({**results, "step": 7}, tmp_path / "c.png")
    records = [{"kind": "train", "step": 5, "epoch": 1, "loss": 2.0, "accuracy_visual": 10.0},
               {"kind": "eval", "step": 5, "epoch": 1, "accuracy_visual": 100.0},
               {"kind": "train", "step": 10, "epoch": 2, "loss": 1.0, "accuracy_visual": 30.0}]
    figures.plot_curves(records, tmp_path / "t.png")
    assert _png_size(tmp_path / "c.png") > 1000 and _png_size(tmp_path / "t.png") > 1000
    # two heads side by side: the confusion figure is wider than it is tall
    image = figures.pyplot().imread(str(tmp_path / "c.png"))
    assert image.shape[1] > 1.5 * image.shape[0]
