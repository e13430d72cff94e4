"""Two processes on localhost joined by jax.distributed (CPU, gloo) train as one, and stop
when one of them dies."""
import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

WORKER = Path(__file__).with_name("multihost_worker.py")


def _two_device_env() -> dict:
    """This session's environment (compilation cache, conftest.py's XLA flags) with 2 simulated
    devices per process: 4 in all, as in the rest of the suite."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ["XLA_FLAGS"])
    return dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count=2 {flags.strip()}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_line(stream, text: str, timeout_s: float) -> bool:
    """Reads `stream` until a line holds `text` (True), or its end or `timeout_s` (False)."""
    found = threading.Event()

    def read():
        for line in stream:
            if text in line:
                found.set()
                return
    threading.Thread(target=read, daemon=True).start()
    return found.wait(timeout_s)


@pytest.mark.slow
def test_two_processes_take_a_step_and_agree(synthetic_tiny, tmp_path):
    port = _free_port()
    env = _two_device_env()
    procs = [subprocess.Popen([sys.executable, str(WORKER), str(i), str(port),
                               str(synthetic_tiny.data_dir), str(tmp_path)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    try:
        outputs = [p.communicate(timeout=540)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"process {i}: ok" in out, out[-3000:]
    first, second = (np.load(tmp_path / f"params_{i}.npz") for i in range(2))
    assert set(first.files) == set(second.files) and len(first.files) > 10
    for name in first.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    assert np.isfinite(first["loss"])


@pytest.mark.slow
def test_a_dead_process_stops_the_others_with_a_clear_line(synthetic_tiny, tmp_path):
    """Process 1 is killed mid-training: process 0 stops within a bounded time, naming the
    cause in one line, instead of waiting for it forever."""
    port = _free_port()
    env = _two_device_env()
    repo = Path(__file__).resolve().parents[2]
    procs = [subprocess.Popen(
        [sys.executable, str(repo / "train.py"), "--preset", "smoke", "--epochs", "3",
         "--data_dir", str(synthetic_tiny.data_dir), "--workdir", str(tmp_path / "run"),
         "--coordinator_address", f"127.0.0.1:{port}", "--num_processes", "2",
         "--process_id", str(i), "--peer_timeout_s", "30"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=repo)
        for i in range(2)]
    try:
        # only the lead process prints progress; a run that never gets there fails, not hangs
        started = _wait_for_line(procs[0].stdout, "epoch 1/3: step 2/5", timeout_s=300)
        assert started, "process 0 never reached its second step"
        procs[1].kill()
        killed_at = time.monotonic()
        out, err = procs[0].communicate(timeout=300)
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            p.kill()
    assert procs[0].returncode == 1, (waited, out[-1000:], err[-3000:])
    # the next collective with the dead process fails, or it waits for it, and the watch of
    # the processes' signs of life stops it 13.5-18 s after the death (--peer_timeout_s 30); jax's
    # own heartbeat (60 s, beating every 30 s) could abort it with a page of logs from 30 s on
    assert waited < 27, waited
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith("error: process 0: "), err[-3000:]
    assert ("lost contact with another process" in lines[0]
            or "process 1 of this multi-host run has shown no sign of life for 15 s" in lines[0])
    assert "Restart every process with the same command" in lines[0]
    assert "Traceback" not in err and "Check failure" not in err
