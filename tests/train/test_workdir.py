"""The workdir checks: a usable path, one training at a time, history moved aside, the saved
config read with care."""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from pisa_jax.train import workdir as workdir_module
from pisa_jax.train.config import ConfigMismatchError, TrainConfigError, preset
from pisa_jax.train.workdir import (LOCK_FILE, PREVIOUS_RUNS, WorkdirError, WorkdirLock,
                                    check_path, check_workdir_config, move_history_aside)


def test_a_workdir_must_be_a_writable_directory(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkdirError, match=r"file: is a file, not a directory"):
        check_path(tmp_path / "file")
    with pytest.raises(WorkdirError, match=r"cannot be created: .*file is a file"):
        check_path(tmp_path / "file" / "run")
    with pytest.raises(WorkdirError, match="--workdir: empty"):
        check_path("")
    assert check_path(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert not (tmp_path / "new").exists()      # nothing is created by the check

    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(0o555)
    if os.geteuid() == 0:  # permission bits do not bind root: a read-only mount, as it fails
        def refuse(directory):
            raise PermissionError(13, "Read-only file system")
        monkeypatch.setattr(workdir_module, "_probe_write", refuse)
    with pytest.raises(WorkdirError, match=r"read_only: not writable"):
        check_path(read_only)
    with pytest.raises(WorkdirError, match=r"run: not writable \(cannot be created in .*read_only"):
        check_path(read_only / "run")


def test_a_second_lock_is_refused_naming_the_holder(tmp_path):
    with WorkdirLock(tmp_path):
        with pytest.raises(WorkdirError, match=rf"another training is running in this workdir "
                           rf"\(pid {os.getpid()} on host {socket.gethostname()} since "):
            WorkdirLock(tmp_path).acquire()
    with WorkdirLock(tmp_path):   # released: free again
        pass
    assert (tmp_path / LOCK_FILE).read_text() == ""


def test_the_lock_of_a_killed_process_does_not_block(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         f"fd = os.open({str(tmp_path / LOCK_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\n"
         "os.write(fd, f'pid {os.getpid()} on host elsewhere'.encode())\n"
         "print('locked', flush=True)\ntime.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkdirError, match=rf"pid {holder.pid} on host elsewhere"):
            WorkdirLock(tmp_path).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert "elsewhere" in (tmp_path / LOCK_FILE).read_text()   # its text stays behind ...
    with WorkdirLock(tmp_path):                                  # ... but not its lock
        assert f"pid {os.getpid()}" in (tmp_path / LOCK_FILE).read_text()


def test_restart_moves_the_whole_run_aside(tmp_path):
    for name in ("config.json", "metrics.jsonl", ".checkpointed"):
        (tmp_path / name).write_text(name)
    (tmp_path / "checkpoints" / "5").mkdir(parents=True)
    with WorkdirLock(tmp_path):
        moved = move_history_aside(tmp_path)
    assert moved.parent == tmp_path / PREVIOUS_RUNS
    assert sorted(p.name for p in moved.iterdir()) == [".checkpointed", "checkpoints",
                                                        "config.json", "metrics.jsonl"]
    assert (moved / "metrics.jsonl").read_text() == "metrics.jsonl"
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_FILE, PREVIOUS_RUNS]
    assert move_history_aside(tmp_path) is None      # nothing left to move
    (tmp_path / "config.json").write_text("{}")
    assert move_history_aside(tmp_path) != moved      # a second restart keeps the first


def test_the_saved_config_is_read_with_care(tmp_path):
    config = preset("smoke")
    (tmp_path / "config.json").write_text('{"depths": [10, ')
    with pytest.raises(TrainConfigError, match=r"config.json: cannot read the saved run config "
                       r"\(.*\); fix or remove it, or pass --restart"):
        check_workdir_config(config, tmp_path, override=False)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(TrainConfigError, match="not a JSON object"):
        check_workdir_config(config, tmp_path, override=False)
    # a field added after the run was saved counts as its default
    saved = config.to_dict()
    del saved["hidden"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigMismatchError, match="hidden: 128 .workdir. -> 8 .now."):
        check_workdir_config(config, tmp_path, override=False)
    check_workdir_config(config.replace(hidden=128), tmp_path, override=False)
