"""A run SIGKILLed mid-epoch and restarted ends exactly where an uninterrupted run ends."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from pisa_jax.train.checkpoints import load_trained
from pisa_jax.train.checkpoints import Checkpoints

WORKER = Path(__file__).with_name("resume_worker.py")


def _run(workdir, data_dir, kill_at, cache):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
               # the restarted process reuses the killed one's compiled programs
               JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    return subprocess.run([sys.executable, str(WORKER), str(workdir), str(data_dir), str(kill_at)],
                          env=env, capture_output=True, text=True, timeout=600)


def test_killed_and_resumed_run_equals_uninterrupted_run(smoke_run, synthetic_tiny, tmp_path):
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    killed = _run(workdir, synthetic_tiny.data_dir, 8, tmp_path / "cache")  # mid epoch 2 of 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.latest_step() == 6   # mid-epoch (5 steps per epoch, saved every 3)
    checkpoints.close()

    resumed = _run(workdir, synthetic_tiny.data_dir, 0, tmp_path / "cache")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 6" in resumed.stdout

    _, ours = load_trained(workdir, "latest")
    _, reference = load_trained(reference_dir, "latest")
    assert int(ours.step) == int(reference.step) == 10
    for name in ("params", "batch_stats", "opt_state", "rng"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, getattr(ours, name),
                               getattr(reference, name))
