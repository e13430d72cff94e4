"""pisa_jax.host_memory: when the training command re-executes itself with huge-page malloc,
and that the re-executed process gets the same arguments and the tunable."""
import os
import subprocess
import sys
import textwrap

from pisa_jax import host_memory

LINUX = dict(platform="linux", glibc=(2, 36), thp="madvise")


def test_adds_the_tunable():
    env = host_memory.hugepage_environment({"PATH": "/bin"}, **LINUX)
    assert env == {"PATH": "/bin", "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}


def test_keeps_other_tunables():
    env = host_memory.hugepage_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"},
                                           **LINUX)
    assert env["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_nothing_to_do():
    assert host_memory.hugepage_environment(
        {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, **LINUX) is None  # the user chose
    assert host_memory.hugepage_environment({"PISA_JAX_HUGEPAGE_MALLOC": "off"}, **LINUX) is None
    assert host_memory.hugepage_environment({}, **{**LINUX, "thp": "never"}) is None
    assert host_memory.hugepage_environment({}, **{**LINUX, "thp": None}) is None
    assert host_memory.hugepage_environment({}, **{**LINUX, "glibc": (2, 31)}) is None
    assert host_memory.hugepage_environment({}, **{**LINUX, "platform": "darwin"}) is None


def test_thp_mode(tmp_path):
    setting = tmp_path / "enabled"
    setting.write_text("always [madvise] never\n")
    assert host_memory.thp_mode(setting) == "madvise"
    assert host_memory.thp_mode(tmp_path / "missing") is None


def test_reexec_keeps_arguments_and_runs_once(tmp_path):
    """A script calling reexec_with_hugepage_malloc() first: where the tunable applies it runs
    twice (before and after the exec) with the same arguments, the second time with the
    tunable; elsewhere once. Either way it ends with the arguments it was given."""
    script = tmp_path / "entry.py"
    script.write_text(textwrap.dedent("""
        import os, sys
        print("start", os.environ.get("GLIBC_TUNABLES", ""), flush=True)
        from pisa_jax import host_memory
        host_memory.reexec_with_hugepage_malloc()
        print("args", sys.argv[1:], os.environ.get("GLIBC_TUNABLES", ""))
    """))
    env = {k: v for k, v in os.environ.items()
           if k not in ("GLIBC_TUNABLES", host_memory.ENV_VAR)}
    out = subprocess.run([sys.executable, str(script), "--a", "1"], env=env, text=True,
                         capture_output=True, check=True).stdout.splitlines()
    applies = host_memory.hugepage_environment(env) is not None
    assert len([line for line in out if line.startswith("start")]) == (2 if applies else 1)
    expected = "glibc.malloc.hugetlb=1" if applies else ""
    assert out[-1] == f"args ['--a', '1'] {expected}".rstrip()
