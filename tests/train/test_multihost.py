"""Two processes on localhost joined by jax.distributed (CPU, gloo) train as one."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

WORKER = Path(__file__).with_name("multihost_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_take_a_step_and_agree(synthetic_tiny, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
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
