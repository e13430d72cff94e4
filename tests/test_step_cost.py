"""benchmarks/step_cost.py: what a step costs before it runs (XLA's plan, PyTorch's saved
activations) grows with the batch, and the script prints each figure."""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import jax_step  # noqa: E402
import step_cost  # noqa: E402

TINY = ["--clips", "2", "--clip_length", "4", "--image_size", "16", "--spectrogram_size", "16",
        "--base_width", "2", "--depths", "10,18"]


def _args(batch: int) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    jax_step.add_step_flags(parser)
    return parser.parse_args(["--batch_size", str(batch), *TINY])


def test_pytorchs_saved_activations_grow_in_step_with_the_batch():
    pytest.importorskip("torch")
    saved = [step_cost.torch_saved_bytes(_args(batch)) for batch in (4, 8, 12)]
    # the weights that convolutions save are counted once, each sample's activations per sample
    assert 0 < saved[0] < saved[1] < saved[2]
    assert (saved[2] - saved[1]) == pytest.approx(saved[1] - saved[0], rel=0.01)


def test_the_script_prints_flops_the_epoch_estimate_and_the_plan():
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "step_cost.py"), "--batch_size", "4", *TINY,
         "--conv_lowering", "native"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "PISA_JAX_ONEDNN": "off"})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    flops = float(lines[1].split("per step: ")[1].split()[0])
    assert flops > 0 and "516-sample epoch at 989 TFLOP/s" in lines[1]
    planned = lines[2].removeprefix("memory XLA plans per device: ")
    assert planned.endswith(" GiB") and float(planned.split()[0]) > 0
