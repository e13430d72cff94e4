"""benchmarks/profile_step.py: per-operation times from a jax.profiler trace."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "profile_step.py"


def _module():
    spec = importlib.util.spec_from_file_location("profile_step", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _event(pid, op, dur_us):
    return {"ph": "X", "pid": pid, "tid": 1, "ts": 0, "dur": dur_us, "name": op,
            "args": {"hlo_op": op}}


def test_device_kernels_win_over_host_events_and_times_are_per_step():
    profile = _module()
    processes = {1: "/host:CPU", 2: "/device:GPU:0"}
    events = [_event(1, "fusion.1", 9000.0),                      # host: ignored once a GPU has any
              _event(2, "convolution.3", 1500.0), _event(2, "convolution.3", 500.0),
              _event(2, "fusion.7", 1000.0),
              {"ph": "X", "pid": 2, "tid": 1, "ts": 0, "dur": 50.0, "name": "memcpy"}]  # untagged
    where, ms, count = profile.op_times(events, processes, steps=2)
    assert where == "device kernels"
    assert ms == {"convolution.3": 1.0, "fusion.7": 0.5}
    assert count == {"convolution.3": 1, "fusion.7": 0}  # launches per step, rounded
    where, ms, _ = profile.op_times(events[:1], processes, steps=1)
    assert (where, ms) == ("host threads", {"fusion.1": 9.0})


def test_hlo_shapes_and_report():
    profile = _module()
    hlo = ("ENTRY %main (p: f32[2]) -> f32[2] {\n"
           "  %transpose_copy_fusion.12 = f32[21,112,112,64]{3,2,1,0} fusion(%p), kind=kLoop\n"
           "  %while.3 = (s32[], (f32[2]{0}, f32[])) while(%t), body=%b\n"
           "  ROOT %transpose_copy_fusion.2 = f32[8]{0} fusion(%q), kind=kLoop\n}")
    shapes = profile.hlo_shapes(hlo)
    assert shapes == {"transpose_copy_fusion.12": "f32[21,112,112,64]{3,2,1,0}",
                      "while.3": "(s32[], (f32[2]{0}, f32[]))",
                      "transpose_copy_fusion.2": "f32[8]{0}"}
    lines = profile.report("host threads", {"transpose_copy_fusion.12": 3.0,
                                            "transpose_copy_fusion.2": 1.0, "while.3": 4.0},
                           {"transpose_copy_fusion.12": 1, "transpose_copy_fusion.2": 2,
                            "while.3": 1}, shapes, step_ms=10.0, threads=2, top=5)
    assert lines[0].startswith("step 10.0 ms (median); traced operations (host threads): 8.0 ms")
    assert "40% of 2 x" in lines[0]
    assert "| transpose_copy_fusion | 4.0 | 50.0% | 3 |" in lines  # both instances, one kind
    assert "| while.3 | (s32[], (f32[2]{0}, f32[])) | 4.00 | 1 |" in lines


def test_runs_the_step_and_prints_its_operations(tmp_path):
    # the environment of the suite (tests/conftest.py) gives 4 CPU devices: 4 samples split over them
    env = {**os.environ, "PISA_JAX_MALLOC": "system", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--batch_size", "4", "--clips", "1", "--clip_length", "4",
         "--image_size", "16", "--spectrogram_size", "16", "--base_width", "2", "--steps", "1",
         "--profile_steps", "1", "--top", "5", "--trace_dir", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "traced operations (host threads)" in out
    assert "| operation | shape | ms per step | launches per step |" in out
    rows = [line for line in out.splitlines() if line.startswith("| ") and "f32[" in line]
    assert rows, out  # at least one operation matched to its HLO shape
    assert list(tmp_path.rglob("*.trace.json.gz"))
