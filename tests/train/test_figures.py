"""The training's PNG figures."""
from pathlib import Path

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
    from PIL import Image
    with Image.open(tmp_path / "c.png") as image:
        assert image.width > 1.5 * image.height


def test_a_figure_that_fails_to_render_keeps_the_previous_png(tmp_path, monkeypatch):
    path = tmp_path / "training_curves.png"
    records = [{"kind": "train", "step": 5, "epoch": 1, "loss": 2.0, "accuracy_visual": 10.0}]
    figures.plot_curves(records, path)
    before = path.read_bytes()
    from matplotlib.figure import Figure

    def killed(self, target, *args, **kwargs):  # Ctrl-C with half of the PNG written
        if hasattr(target, "write"):
            target.write(b"\x89PNG half")
        else:
            Path(target).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(Figure, "savefig", killed)
    try:
        figures.plot_curves(records * 2, path)
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("savefig was not called")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
