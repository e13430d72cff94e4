"""benchmarks/gpu_compile.py: the step compiled for a GPU without one. Where JAX's CUDA plugin
is installed the tiny step is compiled for the H100 target; without it (CI) the script says in
one line what it needs."""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import gpu_compile  # noqa: E402
import jax_step  # noqa: E402

from pisa_jax import cudnn  # noqa: E402
from pisa_jax.train import data_parallel  # noqa: E402

TINY = ["--batch_size", "4", "--clips", "1", "--clip_length", "4", "--image_size", "16",
        "--spectrogram_size", "16", "--base_width", "2", "--depths", "10,18"]

# Lines in the form XLA's optimised GPU HLO gives cuDNN's convolutions, a GEMM and all-reduces
# (async ones in two halves, as jaxlib 0.10 and 0.11 write them, and a combined one).
HLO = """
  %cudnn-conv.1 = (bf16[32,64,16,56,56]{4,3,2,1,0}, u8[0]{0}) custom-call(%a, %w), window={size=3x3x3 pad=1_1x1_1x1_1}, dim_labels=bf012_oi012->bf012, custom_call_target="__cudnn$convForward"
  %cudnn-conv.2 = (bf16[3,3,64,64]{3,2,1,0}, u8[0]{0}) custom-call(%b, %g), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  %cudnn-conv.3 = (bf16[32,16,56,56,64]{4,3,2,1,0}, u8[0]{0}) custom-call(%c, %w), window={size=3x3x3 pad=1_1x1_1x1_1}, dim_labels=b012f_o012i->b012f, custom_call_target="__cudnn$convBackwardInput"
  %gemm.4 = (f32[32,10]{1,0}, s8[0]{0}) custom-call(%x, %y), custom_call_target="__cublas$lt$matmul"
  %all-reduce-start.1 = f32[2,64]{1,0} all-reduce-start(%s), channel_id=1, to_apply=%add
  %all-reduce-done.1 = f32[2,64]{1,0} all-reduce-done(%all-reduce-start.1)
  %all-reduce.2 = (f32[100]{0}, bf16[10]{0}) all-reduce(%g, %h), channel_id=2, to_apply=%add
  %all-reduce-start.3 = ((f32[2,128]{1,0}), f32[2,128]{1,0}) all-reduce-start(%t), channel_id=3
  %all-reduce-done.3 = f32[2,128]{1,0} all-reduce-done(%all-reduce-start.3)
"""


def _args(*extra: str) -> argparse.Namespace:
    return gpu_compile.parse_args([*TINY, *extra])


def test_convolutions_are_counted_by_rank_layout_and_kind():
    assert gpu_compile.conv_counts(HLO) == {
        ("3D", "channels first", "forward"): 1,
        ("2D", "channels last", "filter gradient"): 1,
        ("3D", "channels last", "input gradient"): 1}
    assert gpu_compile.other_calls(HLO) == {"__cublas$lt$matmul": 1}


def test_all_reduces_are_counted_once_each_with_their_bytes():
    assert gpu_compile.all_reduces(HLO) == (3, 2 * 64 * 4 + 100 * 4 + 10 * 2 + 2 * 128 * 4)


@pytest.mark.parametrize("step, data_on_device", [("train", False), ("eval", False),
                                                  ("train", True), ("eval", True)])
def test_the_abstract_inputs_are_what_the_timed_step_is_given(step, data_on_device):
    """The deviceless compile sees the shapes and dtypes JaxStep places (the tests' 4 CPU
    devices here)."""
    args = _args("--step", step, *(["--data_on_device"] if data_on_device else []))
    placed = jax_step.JaxStep(args)
    state = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], placed.state)
    abstract = gpu_compile.abstract_inputs(args, state, step == "train", len(placed.devices))

    def described(tree):
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        return treedef, [(tuple(np.shape(x)), np.dtype(x.dtype)) for x in leaves]
    assert described(abstract) == described((placed.state, *placed.inputs))


def test_while_traced_as_on_a_gpu_the_backend_and_mesh_are_the_gpus():
    devices = jax.devices()
    with gpu_compile.traced_as_on(devices):
        assert jax.default_backend() == "gpu"
        assert list(data_parallel.mesh_of(1).devices.flat) == devices[:1]
    assert jax.default_backend() == "cpu"


def test_an_unreadable_target_or_an_unsplittable_batch_is_one_line(tmp_path):
    with pytest.raises(SystemExit, match=r"^error: .*missing\.txtpb: cannot read"):
        gpu_compile.main([*TINY, "--target", str(tmp_path / "missing.txtpb")])
    with pytest.raises(SystemExit, match=r"^error: --batch_size=4 does not split over --gpus=3$"):
        gpu_compile.main([*TINY, "--gpus", "3"])


def test_the_tiny_step_compiles_for_the_h100_or_the_script_says_what_it_needs(tmp_path):
    """In a process of its own: XLA makes a GPU topology only where no CUDA backend has been
    tried first (this process's backends are started)."""
    hlo = tmp_path / "step.hlo.txt"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_compile.py"), *TINY,
                           "--precision", "bfloat16", "--hlo_out", str(hlo)],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if cudnn.version() is None:
        assert done.returncode == 1 and done.stdout == ""
        assert done.stderr.strip().splitlines() == [
            'error: compiling for a GPU needs JAX\'s CUDA plugin (pip install "jax[cuda12]"), '
            'not a GPU; this JAX has none']
        return
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert "compiled for NVIDIA H100 80GB HBM3 without it" in lines[0]
    assert lines[1].startswith("memory XLA plans per device: ") and "of the card" in lines[1]
    counts = gpu_compile.conv_counts(hlo.read_text())
    # XLA's own layout choice on Hopper: 2D convolutions channels last, 3D channels first
    assert counts[("2D", "channels last", "forward")] > 0
    assert counts[("3D", "channels first", "forward")] > 0
    assert not any(t.startswith("Pisa") for t in gpu_compile.other_calls(hlo.read_text()))
