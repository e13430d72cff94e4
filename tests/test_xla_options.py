"""pisa_jax.xla_options: the CPU compiler options take effect, unknown ones are dropped, and the
XLA_FLAGS route keeps the user's flags and stays off once a backend runs."""
import jax
import jax.numpy as jnp
import pytest

from pisa_jax import xla_options


def _conv2d_hlo(compiler_options):
    """Optimised HLO of a 2D convolution's gradients, at a size jaxlib 0.10 hands to YNNPACK."""
    def loss(x, w):
        return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                            dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(
        jax.ShapeDtypeStruct((8, 28, 28, 64), jnp.float32),
        jax.ShapeDtypeStruct((3, 3, 64, 64), jnp.float32))
    return lowered.compile(compiler_options=compiler_options).as_text()


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")
def test_cpu_options_turn_ynn_off():
    options = xla_options.cpu_compiler_options()
    assert options == {"xla_cpu_experimental_ynn_fusion_type": "",
                       "xla_cpu_copy_insertion_use_region_analysis": True}
    assert "ynn_fusion" not in _conv2d_hlo(options)
    if "ynn_fusion" not in _conv2d_hlo({}):
        pytest.skip("this jaxlib does not send 2D convolutions to YNNPACK by default")


def test_unknown_options_are_dropped(monkeypatch):
    monkeypatch.setattr(xla_options, "CPU_OPTIONS", {
        "xla_cpu_experimental_ynn_fusion_type": "", "xla_cpu_no_such_option": True,
        "xla_cpu_experimental_xnn_fusion_type": "no_such_value"})
    on_cpu = jax.default_backend() == "cpu"
    expected = {"xla_cpu_experimental_ynn_fusion_type": ""} if on_cpu else {}
    assert xla_options.cpu_compiler_options() == expected


def test_env_flags_appended_without_clobbering(monkeypatch):
    monkeypatch.setattr(xla_options, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_options, "_jaxlib_version", lambda: (0, 10))
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    assert xla_options.add_cpu_flags_to_env(env)
    assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=4 "
                                "--xla_cpu_experimental_ynn_fusion_type= "
                                "--xla_cpu_copy_insertion_use_region_analysis=true")
    assert xla_options.add_cpu_flags_to_env(env)  # idempotent
    assert env["XLA_FLAGS"].count("ynn") == 1
    own = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=individual_dot"}
    assert xla_options.add_cpu_flags_to_env(own)
    assert own["XLA_FLAGS"] == ("--xla_cpu_experimental_ynn_fusion_type=individual_dot "
                                "--xla_cpu_copy_insertion_use_region_analysis=true")
    empty = {}
    assert xla_options.add_cpu_flags_to_env(empty)
    assert empty["XLA_FLAGS"] == ("--xla_cpu_experimental_ynn_fusion_type= "
                                  "--xla_cpu_copy_insertion_use_region_analysis=true")


def test_env_flags_left_alone_when_unsafe(monkeypatch):
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    jax.devices()  # a backend runs: XLA has read its flags already
    assert not xla_options.add_cpu_flags_to_env(env)
    monkeypatch.setattr(xla_options, "_backend_started", lambda: False)
    monkeypatch.setattr(xla_options, "_jaxlib_version", lambda: (0, 99))  # untested jaxlib
    assert not xla_options.add_cpu_flags_to_env(env)
    assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
