"""A run stopped at any moment (SIGKILL, SIGTERM) and restarted ends exactly where an
uninterrupted run ends; a run without a checkpoint to resume from is never silently restarted."""
import os
import signal
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from pisa_jax.train.checkpoints import Checkpoints, load_trained

WORKER = Path(__file__).with_name("resume_worker.py")


def _run(workdir, data_dir, kill_at):
    # the restarted process reuses the compiled programs of the killed one (and of smoke_run)
    # from the session's compilation cache (conftest.py)
    env = dict(os.environ)  # conftest.py's XLA_FLAGS: the reference run compiled with them too
    return subprocess.run([sys.executable, str(WORKER), str(workdir), str(data_dir), str(kill_at)],
                          env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_killed_and_resumed_run_equals_uninterrupted_run(smoke_run, synthetic_tiny, tmp_path):
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    killed = _run(workdir, synthetic_tiny.data_dir, 8)  # mid epoch 2 of 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.latest_step() == 6   # mid-epoch (5 steps per epoch, saved every 3)
    checkpoints.close()

    resumed = _run(workdir, synthetic_tiny.data_dir, 0)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at step 6" in resumed.stdout
    _assert_same_state(workdir, reference_dir)


# --- where a run resumes from, and what it never does by itself ---

REPO = Path(__file__).resolve().parents[2]


def _smoke_config(data_dir):
    from pisa_jax.train import preset
    return preset("smoke", data_dir=str(data_dir), epochs=2, checkpoint_every_steps=2)


def _assert_same_state(workdir, reference_dir):
    _, ours = load_trained(workdir, "latest")
    _, reference = load_trained(reference_dir, "latest")
    assert int(ours.step) == int(reference.step) == 10
    for name in ("params", "batch_stats", "opt_state", "rng"):
        jax.tree_util.tree_map(np.testing.assert_array_equal, getattr(ours, name),
                               getattr(reference, name))


def _eval_records(workdir):
    from pisa_jax.train.reports import read_metrics
    return [(r["step"], r["accuracy"]) for r in read_metrics(workdir / "metrics.jsonl")
            if r["kind"] == "eval"]


def test_a_run_whose_checkpoints_are_gone_is_refused_until_restart(smoke_run, synthetic_tiny,
                                                                    tmp_path, monkeypatch):
    import shutil

    from pisa_jax.train import loop, train_and_evaluate
    from pisa_jax.train.workdir import WorkdirError
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    shutil.rmtree(workdir / "checkpoints")
    metrics = (workdir / "metrics.jsonl").read_text()

    class ModelBuilt(Exception):
        pass

    def no_model(*args, **kwargs):
        raise ModelBuilt
    monkeypatch.setattr(loop, "create_run", no_model)
    config = _smoke_config(synthetic_tiny.data_dir)
    with pytest.raises(WorkdirError, match=r"its run saved checkpoints \(the first at step 2\) "
                       r"but .*checkpoints holds none now; starting at step 0 would replace its "
                       r"history. Pass --restart"):
        train_and_evaluate(config, workdir)
    assert (workdir / "metrics.jsonl").read_text() == metrics      # untouched
    with pytest.raises(ModelBuilt):  # --restart: the run is moved aside, then it starts over
        train_and_evaluate(config.replace(epochs=1), workdir, restart=True)
    [previous] = (workdir / "previous_runs").iterdir()
    assert (previous / "metrics.jsonl").read_text() == metrics
    assert (previous / "config.json").is_file() and not (workdir / "metrics.jsonl").exists()


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_resumes_from_the_one_before(smoke_run, synthetic_tiny,
                                                                 tmp_path, capsys):
    import shutil

    from pisa_jax.train import train_and_evaluate
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    shutil.copytree(reference_dir, workdir)
    state_dir = workdir / "checkpoints" / "10" / "state"
    largest = max((p for p in state_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(64)
    metrics = (workdir / "metrics.jsonl").read_text()
    train_and_evaluate(_smoke_config(synthetic_tiny.data_dir), workdir)
    out = capsys.readouterr().out
    assert "checkpoints/10: damaged or incomplete" in out and "at step 8" in out
    assert (workdir / "damaged_checkpoints" / "10" / "state").is_dir()   # kept, not deleted
    [backup] = workdir.glob("metrics.jsonl.*.bak")   # the records past step 8, kept
    assert backup.read_text() == metrics
    _assert_same_state(workdir, reference_dir)
    assert _eval_records(workdir) == _eval_records(reference_dir)


def _train_command(workdir, data_dir):
    return [sys.executable, str(REPO / "train.py"), "--preset", "smoke", "--epochs", "2",
            "--checkpoint_every_steps", "3", "--data_dir", str(data_dir), "--workdir", str(workdir)]


def _env():
    return dict(os.environ)  # conftest.py's XLA_FLAGS, as for the reference run


@pytest.mark.slow
def test_sigterm_saves_stops_cleanly_and_resumes(smoke_run, synthetic_tiny, tmp_path):
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    command = _train_command(workdir, synthetic_tiny.data_dir)
    proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        for line in proc.stdout:
            if "epoch 1/2: step 2/5" in line:
                proc.send_signal(signal.SIGTERM)
                break
        out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err and "SIGTERM: stopped at step" in err, err[-3000:]
    resumed = subprocess.run(command, env=_env(), capture_output=True,
                             text=True, timeout=600, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout
    _assert_same_state(workdir, reference_dir)
    assert _eval_records(workdir) == _eval_records(reference_dir)


# What a smoke run prints as it goes (start-up and compile, each step, the first evaluation)
PROGRESS = (["pisa-jax training in"] + [f"epoch 1/2: step {s}/5" for s in range(1, 6)]
            + ["eval epoch 1 "] + [f"epoch 2/2: step {s}/5" for s in range(1, 5)])


@pytest.mark.slow
def test_kills_at_random_moments_resume_bit_identically(smoke_run, synthetic_tiny, tmp_path):
    """SIGKILL three times in a row, each at a random point of the run (a random moment after
    a random progress line: start-up, compiling, a step, a save, an evaluation), resuming in
    between; then run to the end: the same parameters and evaluations as without kills."""
    import random
    import time
    _, reference_dir, _ = smoke_run
    workdir = tmp_path / "run"
    command = _train_command(workdir, synthetic_tiny.data_dir)
    rng = random.Random(2)   # kills: in start-up, at the end of epoch 1, in epoch 2
    kills = []
    # one kill in each third of the run, at a random line of it and a random moment after
    for target in (rng.randrange(0, 4), rng.randrange(4, 8), rng.randrange(8, len(PROGRESS))):
        delay = rng.uniform(0.0, 1.5)
        proc = subprocess.Popen(command, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        for line in proc.stdout:
            if PROGRESS[target] in line:
                break
        time.sleep(delay)
        proc.kill()
        proc.communicate(timeout=120)
        kills.append((PROGRESS[target], round(delay, 2), proc.returncode))
    assert sum(code == -signal.SIGKILL for *_, code in kills) >= 2, kills
    final = subprocess.run(command, env=_env(), capture_output=True, text=True,
                           timeout=600, cwd=REPO)
    assert final.returncode == 0 and "resumed from" in final.stdout, (kills, final.stderr[-3000:])
    _assert_same_state(workdir, reference_dir)
    assert _eval_records(workdir) == _eval_records(reference_dir), kills
