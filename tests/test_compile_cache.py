"""pisa_jax.compile_cache: where the persistent compilation cache goes, and that a fresh process
stores its compiled programs there."""
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from pisa_jax import compile_cache

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def jax_cache_dir():
    """Restores JAX's cache directory after the test."""
    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)


def test_location_precedence(tmp_path, monkeypatch, jax_cache_dir):
    monkeypatch.delenv(compile_cache.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    jax.config.update("jax_compilation_cache_dir", None)
    assert compile_cache.enable_compilation_cache() == tmp_path / "xdg/pisa_jax/jax_cache"
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "users"))   # JAX's own setting
    assert compile_cache.enable_compilation_cache() == tmp_path / "users"
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "ours"))
    assert compile_cache.enable_compilation_cache() == tmp_path / "ours"
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "ours")
    assert compile_cache.enable_compilation_cache(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.setenv(compile_cache.ENV_VAR, "off")
    assert compile_cache.enable_compilation_cache() is None
    assert "off" in compile_cache.describe(None)
    assert str(tmp_path) in compile_cache.describe(tmp_path)


def test_a_fresh_process_fills_the_cache(tmp_path):
    code = ("import jax, jax.numpy as jnp\n"
            "from pisa_jax.compile_cache import enable_compilation_cache\n"
            "jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)\n"
            "print(enable_compilation_cache())\n"
            "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\n")
    env = {**os.environ, compile_cache.ENV_VAR: str(tmp_path / "cache")}
    env.pop("JAX_COMPILATION_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str(tmp_path / "cache")
    assert any((tmp_path / "cache").iterdir())


def test_a_multi_process_cpu_run_compiles_afresh(tmp_path, monkeypatch, jax_cache_dir):
    """Several processes on CPUs: no cache, whatever the settings (a step loaded from it by one
    process hung the others' first all-reduce with jaxlib 0.12); one process keeps it."""
    monkeypatch.setenv(compile_cache.ENV_VAR, str(tmp_path / "ours"))
    from jax._src import distributed
    jax.devices()  # this process's backend first: a fake client must not reach its start-up
    monkeypatch.setattr(distributed.global_state, "client", object())  # as if joined
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    before = jax.config.jax_enable_compilation_cache
    try:
        assert compile_cache.enable_compilation_cache() is None
        assert jax.config.jax_enable_compilation_cache is False
        assert "several processes" in compile_cache.describe(None)
    finally:
        jax.config.update("jax_enable_compilation_cache", before)
    monkeypatch.setattr(jax, "process_count", lambda: 1)
    assert compile_cache.enable_compilation_cache() == tmp_path / "ours"
