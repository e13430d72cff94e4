"""benchmarks/jax_step.py: the step the benchmarks time is the project's train step, or with
--step eval its eval step (each head's probabilities, the state left as it was)."""
from __future__ import annotations

import argparse
import pathlib
import sys

import jax
import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import jax_step  # noqa: E402


def _args(step: str, data_on_device: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    jax_step.add_step_flags(parser)
    return parser.parse_args(["--batch_size", "4", "--clips", "1", "--clip_length", "4",
                              "--image_size", "16", "--spectrogram_size", "16",
                              "--base_width", "2", "--depths", "10,18", "--step", step,
                              *(["--data_on_device"] if data_on_device else [])])


@pytest.mark.parametrize("data_on_device", [False, True])
def test_the_eval_step_gives_each_heads_probabilities_and_keeps_the_variables(data_on_device):
    step = jax_step.JaxStep(_args("eval", data_on_device))
    before = jax.tree_util.tree_map(np.asarray, step.state)
    step.run()
    probs = step.metrics["probs"]
    assert set(probs) == {"visual", "aural", "multimodal"}
    for head in probs.values():
        np.testing.assert_allclose(np.asarray(head).sum(-1), 1.0, rtol=1e-5)
    jax.tree_util.tree_map(np.testing.assert_array_equal, before,
                           jax.tree_util.tree_map(np.asarray, step.state))


def test_the_train_step_updates_the_state():
    step = jax_step.JaxStep(_args("train"))
    step_before = int(np.asarray(step.state.step).ravel()[0])
    step.run()
    assert int(np.asarray(step.state.step).ravel()[0]) == step_before + 1
    assert np.isfinite(np.asarray(step.metrics["loss"])).all()
