"""The allocator the computing commands pick: the choice by $PISA_JAX_MALLOC, the one re-run
under LD_PRELOAD, and a bad choice as one line. The library preloaded here is the C library the
process already runs on (found in /proc/self/maps), so the tests need no tcmalloc installed."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pisa_jax import malloc
from pisa_jax.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD")


def _loaded_libc() -> str:
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if os.path.basename(path).startswith("libc.so"):
            return path
    pytest.skip("no libc.so mapped (not glibc)")


ELF = b"\x7fELF" + bytes(60)  # what choose_library reads of a shared library: its magic


def _clean_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LD_PRELOAD", malloc.ENV_VAR, malloc.PRELOADED_VAR)}
    return {**env, **extra}


def test_auto_takes_the_first_tcmalloc_found_and_system_takes_none(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (second / "libtcmalloc.so.4").write_bytes(ELF)
    assert malloc.choose_library({}, [str(first), str(second)]) == str(second / "libtcmalloc.so.4")
    (first / "libtcmalloc_minimal.so.4").write_bytes(ELF)
    (second / "libtcmalloc_minimal.so.4").write_bytes(ELF)
    assert malloc.choose_library({"PISA_JAX_MALLOC": "auto"}, [str(first), str(second)]) == \
        str(first / "libtcmalloc_minimal.so.4")
    assert malloc.choose_library({"PISA_JAX_MALLOC": "system"}, [str(first)]) is None
    assert malloc.choose_library({}, [str(tmp_path / "empty")]) is None


def test_a_path_is_taken_as_given_and_a_missing_one_is_a_user_error(tmp_path):
    library = tmp_path / "libjemalloc.so.2"
    library.write_bytes(ELF)
    assert malloc.choose_library({"PISA_JAX_MALLOC": str(library)}, []) == str(library)
    with pytest.raises(UserError, match=r"PISA_JAX_MALLOC=.*nope\.so: no such file"):
        malloc.choose_library({"PISA_JAX_MALLOC": str(tmp_path / "nope.so")}, [])
    # LD_PRELOAD splits at spaces and colons: such a path is refused, and skipped by auto
    spaced = tmp_path / "my libs"
    spaced.mkdir()
    (spaced / "libtcmalloc_minimal.so.4").write_bytes(ELF)
    with pytest.raises(UserError, match="cannot name a path with a space or a colon"):
        malloc.choose_library({"PISA_JAX_MALLOC": str(spaced / "libtcmalloc_minimal.so.4")}, [])
    assert malloc.choose_library({}, [str(spaced)]) is None
    # a file that is no shared library: the loader would complain at every start and go on
    text = tmp_path / "libtcmalloc_minimal.so.4"
    text.write_text("INPUT(-ltcmalloc)\n")
    with pytest.raises(UserError, match="not a shared library"):
        malloc.choose_library({"PISA_JAX_MALLOC": str(text)}, [])
    assert malloc.choose_library({}, [str(tmp_path)]) is None


RERUN = ("import os, sys; print('start', os.getpid(), flush=True); "
         "from pisa_jax import malloc; malloc.restart_with_faster_malloc(); "
         "print(os.environ.get('LD_PRELOAD', '-'), sys.argv[1:]); print(malloc.describe())")


@linux_only
def test_the_process_reruns_itself_once_under_the_library_with_its_arguments():
    libc = _loaded_libc()
    out = subprocess.run([sys.executable, "-c", RERUN, "--flag", "x y"], cwd=ROOT, text=True,
                         capture_output=True, env=_clean_env(PISA_JAX_MALLOC=libc),
                         timeout=60).stdout.splitlines()
    starts = [line for line in out if line.startswith("start")]
    assert len(starts) == 2 and starts[0] == starts[1]  # once more, same process id
    assert out[2] == f"{libc} ['--flag', 'x y']"
    assert out[3] == f"malloc: {libc} (set PISA_JAX_MALLOC=system for the system's)"


@linux_only
@pytest.mark.parametrize("env", [{"PISA_JAX_MALLOC": "system"}, {"LD_PRELOAD": "libm.so.6"}])
def test_system_or_a_users_ld_preload_runs_the_process_once(env):
    env = _clean_env(**env)
    if "LD_PRELOAD" in env:
        env["PISA_JAX_MALLOC"] = _loaded_libc()
    out = subprocess.run([sys.executable, "-c", RERUN], cwd=ROOT, text=True,
                         capture_output=True, env=env, timeout=60).stdout.splitlines()
    assert len([line for line in out if line.startswith("start")]) == 1
    assert out[1] == f"{env.get('LD_PRELOAD', '-')} []"


# Every command that computes picks the allocator first, so a bad choice stops each of them
# with one line before it does anything (here: before --help prints).
@linux_only
@pytest.mark.parametrize("command", [["train.py"], ["-m", "pisa_jax.train"],
                                     ["-m", "pisa_jax.evaluate"], ["-m", "pisa_jax.predict"],
                                     ["-m", "pisa_jax.reproduce"]])
def test_every_computing_command_stops_on_a_missing_library_with_one_line(command, tmp_path):
    missing = tmp_path / "libtcmalloc_minimal.so.4"
    done = subprocess.run([sys.executable, *command, "--help"], cwd=ROOT, text=True,
                          capture_output=True, env=_clean_env(PISA_JAX_MALLOC=str(missing)),
                          timeout=60)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (f"error: PISA_JAX_MALLOC={missing}: no such file; give the path of "
                           f"an allocator's shared library, or auto (tcmalloc when installed), "
                           f"or system\n")


@linux_only
def test_the_start_line_says_when_the_preloaded_library_did_not_load(monkeypatch, tmp_path):
    missing = str(tmp_path / "libtcmalloc_minimal.so.4")  # as if ld.so had refused it
    monkeypatch.setenv("LD_PRELOAD", missing)
    monkeypatch.setenv(malloc.PRELOADED_VAR, missing)
    assert malloc.describe().startswith(f"malloc: the system's: {missing} did not load")
    libc = _loaded_libc()
    monkeypatch.setenv("LD_PRELOAD", libc)
    monkeypatch.setenv(malloc.PRELOADED_VAR, libc)
    assert malloc.describe() == f"malloc: {libc} (set PISA_JAX_MALLOC=system for the system's)"
