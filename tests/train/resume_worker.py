"""Subprocess of test_resume.py: the smoke run, optionally SIGKILLed by itself after a step.

    python resume_worker.py WORKDIR DATA_DIR KILL_AT_STEP   (0 = never)

Before killing it waits until the mid-epoch checkpoint of step 6 is on disk, so the restart
resumes mid-epoch (the harder case: the data order must continue inside the epoch).
"""
import os
import signal
import sys
import time
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")


def main(workdir: str, data_dir: str, kill_at: int) -> None:
    from pisa_jax.train import preset, train_and_evaluate
    # The config of the conftest `smoke_run` fixture (checkpoint cadence aside, which changes
    # nothing computed): the uninterrupted reference.
    config = preset("smoke", data_dir=data_dir, epochs=2, checkpoint_every_steps=3)

    def on_step(step):
        if step == kill_at:
            deadline = time.time() + 60
            while not (Path(workdir) / "checkpoints/6").is_dir() and time.time() < deadline:
                time.sleep(0.05)  # orbax renames the finished step directory into place
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: a real crash

    train_and_evaluate(config, workdir, on_step=on_step)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
