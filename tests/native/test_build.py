"""Building a native library: cached by content, atomic, and one clear line when it fails; the
compiler-only handlers (`build.load_handlers`) step aside, with the reason, when they cannot
build or are turned off."""
import jax
import jax.numpy as jnp
import pytest

from pisa_jax.native import adam, batch_norm_sums, build, frame_stack
from pisa_jax.native.build import NativeBuildError, build_and_load

needs_compiler = pytest.mark.skipif(build.compiler() is None, reason="no C++ compiler")

GOOD = 'extern "C" int pisa_answer() { return 42; }\n'


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PISA_JAX_NATIVE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@needs_compiler
def test_builds_once_and_rebuilds_when_the_source_changes(cache, tmp_path):
    source = tmp_path / "answer.cc"
    source.write_text(GOOD)
    assert build_and_load(source, [], str(tmp_path), []).pisa_answer() == 42
    built = list(cache.iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"
    mtime = built[0].stat().st_mtime_ns
    build_and_load(source, [], str(tmp_path), [])
    assert built[0].stat().st_mtime_ns == mtime  # loaded, not compiled again
    source.write_text(GOOD.replace("42", "43"))
    assert build_and_load(source, [], str(tmp_path), []).pisa_answer() == 43
    assert len(list(cache.iterdir())) == 2


@needs_compiler
def test_rebuilds_when_a_header_it_includes_changes(cache, tmp_path):
    """Another release of a library (here, its header) under the same paths builds anew."""
    include = tmp_path / "include"
    include.mkdir()
    (include / "answer.h").write_text("#define ANSWER 42\n")
    source = tmp_path / "answer.cc"
    source.write_text('#include "answer.h"\nextern "C" int pisa_answer() { return ANSWER; }\n')
    header = [include / "answer.h"]
    assert build_and_load(source, [str(include)], str(tmp_path), [], header).pisa_answer() == 42
    (include / "answer.h").write_text("#define ANSWER 7\n")
    assert build_and_load(source, [str(include)], str(tmp_path), [], header).pisa_answer() == 7
    assert len(list(cache.iterdir())) == 2


@needs_compiler
def test_a_failed_compile_is_one_line_and_leaves_nothing(cache, tmp_path):
    source = tmp_path / "broken.cc"
    source.write_text("int broken( {\n")
    with pytest.raises(NativeBuildError, match=r"compiling broken\.cc failed: .*error") as raised:
        build_and_load(source, [], str(tmp_path), [])
    assert "\n" not in str(raised.value)
    assert not cache.exists() or not list(cache.iterdir())


def test_a_missing_compiler_is_one_line(cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    source = tmp_path / "answer.cc"
    source.write_text(GOOD)
    with pytest.raises(NativeBuildError, match="no-such-compiler") as raised:
        build_and_load(source, [], str(tmp_path), [])
    assert "\n" not in str(raised.value)


# module -> (its off switch, whether it would run on float32 operands here)
COMPILER_ONLY = {
    "adam": (adam, "PISA_JAX_FUSED_ADAM", lambda: adam.applies({"w": jnp.ones(3)})),
    "batch_norm_sums": (batch_norm_sums, "PISA_JAX_NATIVE_BATCH_NORM",
                        lambda: batch_norm_sums.applies(jnp.float32)),
    "frame_stack": (frame_stack, "PISA_JAX_NATIVE_FRAME_STACK",
                    lambda: frame_stack.applies(jnp.float32)),
}


@pytest.mark.parametrize("name", COMPILER_ONLY)
def test_an_unbuildable_handler_is_one_line(name, monkeypatch, fresh_load):
    module, _, applies = COMPILER_ONLY[name]

    def fail(*args, **kwargs):
        raise NativeBuildError("no C++ compiler found (set CXX, or install g++)")

    fresh_load(module)
    monkeypatch.setattr(build, "build_and_load", fail)
    assert module.unavailable_reason() == "no C++ compiler found (set CXX, or install g++)"
    assert not applies()


@pytest.mark.parametrize("name", COMPILER_ONLY)
def test_the_environment_can_turn_it_off(name, monkeypatch, fresh_load):
    module, switch, applies = COMPILER_ONLY[name]
    fresh_load(module)
    monkeypatch.setenv(switch, "off")
    assert module.unavailable_reason() == f"turned off by {switch}=off"
    assert not applies()


@pytest.mark.parametrize("module", [batch_norm_sums, frame_stack])
def test_dtype_handlers_apply_to_float32_and_bf16_on_the_cpu_only(module):
    built = module.unavailable_reason() is None
    assert module.applies(jnp.float32) == (jax.default_backend() == "cpu" and built)
    assert module.applies(jnp.bfloat16) == module.applies(jnp.float32)
    assert not module.applies(jnp.float16)
