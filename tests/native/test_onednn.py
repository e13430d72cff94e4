"""oneDNN's convolutions through XLA's FFI: the same values and gradients as XLA's, in 2D and
3D, under jit, pmap and vmap, inside the model; bf16 against XLA's float32 on the same rounded
values, and XLA's where the CPU has no bf16 instructions; a missing oneDNN is one clear line."""
import functools
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax
from conv_cases import CONVS_3D

from pisa_jax.models import SkillModel
from pisa_jax.models.lowering import convolve, resolve_lowering
from pisa_jax.native import onednn
from pisa_jax.native.build import NativeBuildError

needs_onednn = pytest.mark.skipif(not onednn.available(),
                                  reason=f"onednn: {onednn.unavailable_reason()}")

# name -> (x [N, *spatial, I], kernel, O, stride, padding): the 3D lowering cases and 2D ones
CONVS = {
    **CONVS_3D,
    "2D stem": ((2, 13, 13, 1), (7, 7), 4, (2, 2), (3, 3)),
    "2D 3x3 stride 2, odd size": ((2, 9, 9, 4), (3, 3), 6, (2, 2), (1, 1)),
    # fewer input channels than oneDNN's block: its own strided 1x1 weight gradient wrote past
    # its buffer here (AVX2; the aural net's first downsample at base_width 4)
    "2D 1x1 stride 2, 4 channels": ((2, 8, 8, 4), (1, 1), 8, (2, 2), (0, 0)),
    "2D 1x1 strides 2 and 3, odd size": ((3, 9, 7, 4), (1, 1), 8, (2, 3), (0, 0)),
}


def _case(name, seed=0):
    shape, kernel, out, stride, pad = CONVS[name]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, np.float32)
    w = rng.standard_normal(kernel + (shape[-1], out), np.float32) / np.sqrt(
        np.prod(kernel) * shape[-1])
    return x, w.astype(np.float32), stride, pad


def _outputs_and_gradients(lowering, x, w, stride, pad):
    """(y, d/dx, d/dw) for a fixed non-constant cotangent."""
    def run(x, w):
        y, vjp = jax.vjp(lambda x, w: convolve(x, w, stride, pad, lowering), x, w)
        return (y,) + vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape))
    return [np.asarray(a) for a in jax.jit(run)(x, w)]


def _assert_close(got, want, relative, what):
    assert got.shape == want.shape, what
    diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    assert diff <= relative * scale, (what, diff, scale)


@needs_onednn
@pytest.mark.parametrize("name", CONVS)
def test_values_and_gradients_match_xla(name):
    x, w, stride, pad = _case(name)
    want = _outputs_and_gradients("native", x, w, stride, pad)
    got = _outputs_and_gradients("onednn", x, w, stride, pad)
    for what, g, r in zip(("y", "dx", "dw"), got, want):
        _assert_close(g, r, 2e-5, f"{name} {what}")


@needs_onednn
@pytest.mark.parametrize("name", ["T=1", "kernel longer than T"])
def test_depth_taps_that_only_read_padding_are_left_out(name):
    """The handlers leave out the depth taps no output frame reads inside the input (the 3x3x3
    kernel's first and last at T = 1, the 7-tap kernel's outer two at T = 2): the same y and
    dx, and their weight gradient exactly 0. Called directly: "onednn" keeps "taps" here."""
    x, w, stride, pad = _case(name)

    def run(conv):
        def outputs(x, w):
            y, vjp = jax.vjp(conv, x, w)
            return (y,) + vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape))
        return [np.asarray(a) for a in jax.jit(outputs)(x, w)]
    got = run(lambda x, w: onednn.convolution(x, w, stride, pad))
    want = run(lambda x, w: convolve(x, w, stride, pad, "native"))
    for what, g, r in zip(("y", "dx", "dw"), got, want):
        _assert_close(g, r, 2e-5, f"{name} {what}")
    unused = [k for k in range(w.shape[0]) if not np.any(want[2][k])]
    assert unused and not np.any(got[2][unused])


@needs_onednn
def test_runs_under_pmap_on_every_device():
    x, w, stride, pad = _case("3x3x3")
    devices = jax.local_device_count()
    xs = np.stack([x * (i + 1) for i in range(devices)])  # a different input per device
    conv = jax.pmap(lambda x: convolve(x, w, stride, pad, "onednn"))
    got = np.asarray(conv(xs))
    for i in range(devices):
        want = np.asarray(jax.jit(lambda x: convolve(x, w, stride, pad, "native"))(xs[i]))
        _assert_close(got[i], want, 2e-5, f"device {i}")


@needs_onednn
def test_the_same_bits_wherever_the_buffers_lie_and_with_every_device_busy():
    """Results are a function of the values only: inputs at other (unaligned) addresses, and
    the calls of all devices at once under pmap, give the same bits. (A training run that
    differs in the last digits from another comes from XLA's fusions around the calls, which
    training amplifies, not from here.)"""
    x, w, stride, pad = _case("3x3x3")
    want = _outputs_and_gradients("onednn", x, w, stride, pad)

    def shifted(flat, w, offset):  # x read from `offset` floats into a larger buffer
        x_moved = lax.slice(flat, (offset,), (offset + x.size,)).reshape(x.shape) + 0.0
        y, vjp = jax.vjp(lambda x, w: convolve(x, w, stride, pad, "onednn"), x_moved, w)
        return (y,) + vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(y.shape))
    for offset in (1, 3):
        flat = np.concatenate([np.ones(offset, np.float32), x.ravel(), np.ones(5, np.float32)])
        got = jax.jit(shifted, static_argnums=2)(flat, w, offset)
        for what, g, r in zip(("y", "dx", "dw"), got, want):
            np.testing.assert_array_equal(np.asarray(g), r, f"offset {offset} {what}")
    devices = jax.local_device_count()
    together = jax.pmap(lambda x: convolve(x, w, stride, pad, "onednn"))(np.stack([x] * devices))
    for i in range(devices):
        np.testing.assert_array_equal(np.asarray(together[i]), want[0], f"device {i}")


@needs_onednn
def test_skill_model_logits_and_gradients_match_xla():
    rng = np.random.default_rng(1)
    video = rng.standard_normal((2, 1, 4, 16, 16, 3), np.float32)  # [B, clips, T, H, W, C]
    spectrogram = rng.random((2, 32, 32), np.float32)

    def model(lowering):
        return SkillModel(visual_depth=10, aural_depth=18, base_width=4, conv_lowering=lowering)
    variables = model("native").init(jax.random.PRNGKey(0), video, spectrogram, train=False)

    def loss_and_grads(lowering):
        def loss(params):
            out = model(lowering).apply({**variables, "params": params}, video, spectrogram,
                                        train=False)
            return sum(jnp.sum(logits * jnp.cos(logits)) for logits in out["logits"].values())
        return jax.jit(jax.value_and_grad(loss))(variables["params"])
    want_loss, want = loss_and_grads("native")
    for lowering in ("onednn",):
        got_loss, got = loss_and_grads(lowering)
        _assert_close(np.asarray(got_loss), np.asarray(want_loss), 1e-5, f"{lowering} loss")
        for (path, g), r in zip(jax.tree_util.tree_leaves_with_path(got),
                                jax.tree_util.tree_leaves(want)):
            _assert_close(np.asarray(g), np.asarray(r), 1e-4, f"{lowering} {path}")
    # the convolutions of both nets run in oneDNN (the T = 1 last stage keeps taps); not in
    # "auto" at these sizes, below ONEDNN_AUTO_MIN_FLOPS
    def program(lowering):
        return jax.jit(lambda v, s: model(lowering).apply(variables, v, s, train=False)).lower(
            video, spectrogram).as_text()
    assert program("onednn").count(onednn.TARGETS["forward"]) >= 20
    assert onednn.TARGETS["forward"] not in program("auto")


needs_onednn_bf16 = pytest.mark.skipif(
    not onednn.preferred(jnp.bfloat16),
    reason="oneDNN's bf16 convolutions need oneDNN and a CPU with bf16 instructions")


@needs_onednn_bf16
@pytest.mark.parametrize("kernel_dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize("name", CONVS)
def test_bf16_matches_xla_float32_on_the_rounded_inputs(name, kernel_dtype):
    """bf16 activations, the kernel in bf16 or float32 (a float32 parameter, which oneDNN
    rounds while reordering it): every product is exact in float32 and oneDNN accumulates in
    float32, so against XLA's float32 convolution of the same rounded values the only error is
    the bf16 rounding of y and dx, and float32 summation order for a float32 dw."""
    x, w, stride, pad = _case(name)
    x = np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32))
    w = np.asarray(jnp.asarray(w, jnp.bfloat16).astype(jnp.float32))

    def run(x, w, lowering):
        y, vjp = jax.vjp(lambda x, w: convolve(x, w, stride, pad, lowering), x, w)
        cotangent = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return (y,) + vjp(cotangent.astype(jnp.bfloat16).astype(y.dtype))
    bf16 = jax.jit(functools.partial(run, lowering="onednn"))
    got = bf16(x.astype(jnp.bfloat16), w.astype(kernel_dtype))
    assert onednn.TARGETS["forward"] in bf16.lower(x.astype(jnp.bfloat16),
                                                   w.astype(kernel_dtype)).as_text()
    want = jax.jit(functools.partial(run, lowering="native"))(x, w)
    assert [g.dtype for g in got] == [jnp.bfloat16, jnp.bfloat16, jnp.dtype(kernel_dtype)]
    for what, g, r in zip(("y", "dx", "dw"), got, want):
        exact = what == "dw" and kernel_dtype == jnp.float32
        _assert_close(np.asarray(g, np.float32), np.asarray(r), 1e-5 if exact else 8e-3,
                      f"{name} {what}")


# 2D convolutions of the aural net where oneDNN 3.2's AMX bf16 weight gradient went wrong in its
# 1-deep 3D form: (x shape, kernel shape, stride, padding)
LARGE_2D = {
    "stem, batch 1": ((1, 224, 224, 1), (7, 7, 1, 64), 2, 3),  # NaN at every thread count
    "stem, batch 2": ((2, 224, 224, 1), (7, 7, 1, 64), 2, 3),  # inf/NaN; 54 % off at 1 thread
    "layer 1, batch 2": ((2, 56, 56, 64), (3, 3, 64, 64), 1, 1),  # 13 % off at 1 thread
}


@needs_onednn
@pytest.mark.parametrize("dtype",
                         [jnp.float32, pytest.param(jnp.bfloat16, marks=needs_onednn_bf16)])
@pytest.mark.parametrize("case", LARGE_2D)
def test_large_2d_weight_gradient(case, dtype):
    """The aural net's convolutions at the paper's size: oneDNN 3.2's AMX bf16 weight gradient
    of a 1-deep 3D convolution was wrong here (depending on the batch and on the thread count,
    which is one thread per bf16 call on 2 cores), so the handlers run them as 2D ones."""
    x_shape, w_shape, stride, padding = LARGE_2D[case]
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(x_shape), dtype).astype(jnp.float32)
    w = jnp.asarray(rng.standard_normal(w_shape) / np.sqrt(np.prod(w_shape[:3])), dtype)
    w = w.astype(jnp.float32)

    def weight_gradient(x, w, lowering):
        y, vjp = jax.vjp(lambda w: convolve(x, w, (stride,) * 2, (padding,) * 2, lowering), w)
        cotangent = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return vjp(cotangent.astype(dtype).astype(y.dtype))[0]
    got = jax.jit(functools.partial(weight_gradient, lowering="onednn"))(x.astype(dtype), w)
    want = jax.jit(functools.partial(weight_gradient, lowering="native"))(x, w)
    assert got.dtype == jnp.float32
    _assert_close(np.asarray(got), np.asarray(want), 1e-5, f"{case} {dtype} dw")


def test_bf16_without_bf16_instructions_stays_with_xla(monkeypatch):
    monkeypatch.setattr(onednn, "preferred", lambda dtype=jnp.float32: dtype == jnp.float32)
    x, w, stride, pad = _case("3x3x3")
    conv = jax.jit(lambda x, w: convolve(x.astype(jnp.bfloat16), w, stride, pad, "onednn"))
    got = conv(x, w)
    assert got.dtype == jnp.bfloat16
    assert onednn.TARGETS["forward"] not in conv.lower(x, w).as_text()
    want = jax.jit(lambda x, w: convolve(x, w, stride, pad, "native"))(x, w)
    _assert_close(np.asarray(got, np.float32), np.asarray(want), 2e-2, "bf16")


@needs_onednn
def test_other_dtypes_are_refused_in_one_line(monkeypatch):
    x, w, stride, pad = _case("3x3x3")
    with pytest.raises(TypeError, match="kernel bfloat16 with input float32"):
        onednn.convolution(jnp.asarray(x), jnp.asarray(w, jnp.bfloat16), stride, pad)
    with pytest.raises(TypeError, match="got float16"):
        onednn.convolution(jnp.asarray(x, jnp.float16), jnp.asarray(w), stride, pad)
    monkeypatch.setattr(onednn, "preferred", lambda dtype=jnp.float32: dtype == jnp.float32)
    with pytest.raises(TypeError, match="bfloat16 on a CPU with bfloat16 instructions"):
        onednn.convolution(jnp.asarray(x, jnp.bfloat16), jnp.asarray(w), stride, pad)


@pytest.fixture
def no_onednn(monkeypatch, tmp_path, fresh_load):
    """This process without oneDNN: its root points at an empty directory."""
    monkeypatch.setenv("PISA_JAX_ONEDNN_ROOT", str(tmp_path))
    fresh_load(onednn)
    return tmp_path


def test_missing_onednn_is_one_line(no_onednn):
    x, w, stride, pad = _case("3x3x3")
    with pytest.raises(NativeBuildError) as raised:
        convolve(x, w, stride, pad, "onednn")
    message = str(raised.value)
    assert "\n" not in message and str(no_onednn) in message and "pisa-jax[onednn]" in message
    with pytest.raises(NativeBuildError):  # also when reached through the model
        SkillModel(visual_depth=10, aural_depth=18, base_width=4, conv_lowering="onednn").init(
            jax.random.PRNGKey(0), np.zeros((1, 1, 4, 16, 16, 3), np.float32),
            np.zeros((1, 32, 32), np.float32), train=False)


@needs_onednn
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_a_2d_kernel_convolves_every_frame_without_a_reshape(dtype):
    """A 2D kernel with frames [N, T, H, W, I] is one 2D convolution of all N * T frames (the
    "onednn_stacked" stems), with the operands handed over as they are: on XLA's CPU backend a
    bf16 reshape between two custom calls is a copy."""
    if not onednn.supports(dtype):
        pytest.skip("no bfloat16 instructions")
    x, w, stride, pad = _case("2D 3x3 stride 2, odd size")
    frames = np.stack([x, -0.5 * x, x[::-1]], axis=1)  # [N, 3, H, W, I]
    frames, w = jnp.asarray(frames, dtype), jnp.asarray(w)

    def run(conv, frames, w):
        y, vjp = jax.vjp(conv, frames, w)
        return (y,) + vjp(jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
                          .astype(y.dtype))

    def per_frame(frames, w):  # XLA, on the frames as a batch of images, in float32
        n, t = frames.shape[:2]
        flat = frames.astype(jnp.float32).reshape((n * t,) + frames.shape[2:])
        y = convolve(flat, w.astype(jnp.float32), stride, pad, "native")
        return y.reshape((n, t) + y.shape[1:]).astype(frames.dtype)

    got = jax.jit(functools.partial(run, lambda f, w: onednn.convolution(f, w, stride, pad)))(
        frames, w)
    want = jax.jit(functools.partial(run, per_frame))(frames, w)
    relative = 2e-5 if dtype == jnp.float32 else 2e-2
    for what, g, r in zip(("y", "dx", "dw"), got, want):
        _assert_close(np.asarray(g, np.float32), np.asarray(r, np.float32), relative, what)
    program = jax.jit(lambda f, w: onednn.convolution(f, w, stride, pad)).lower(
        frames, w).as_text()
    assert "stablehlo.reshape" not in program


@needs_onednn
def test_operands_of_the_wrong_rank_are_refused():
    x, w, stride, pad = _case("3x3x3")
    with pytest.raises(ValueError, match="a 3D kernel or"):
        onednn.convolution(jnp.asarray(x[:, 0]), jnp.asarray(w), stride, pad)
    # the handler's own check, past the Python one: a 3D kernel with 4D activations
    call = jax.ffi.ffi_call(onednn.TARGETS["forward"],
                            jax.ShapeDtypeStruct((2, 4, 4, 3), jnp.float32))
    with pytest.raises(Exception, match=r"a kernel \[kd, kh, kw, I, O\] with activations"):
        jax.jit(lambda x, w: call(x, w, strides=np.ones(3, np.int64),
                                  pad_lo=np.ones(3, np.int64), pad_hi=np.ones(3, np.int64)))(
            jnp.asarray(x[:, 0]), jnp.asarray(w)).block_until_ready()


@needs_onednn
def test_vmap_runs_the_calls_in_turn():
    x, w, stride, pad = _case("3x3x3")
    xs = np.stack([x, -2 * x])
    got = jax.jit(jax.vmap(lambda x: convolve(x, w, stride, pad, "onednn")))(xs)
    want = jax.jit(jax.vmap(lambda x: convolve(x, w, stride, pad, "native")))(xs)
    _assert_close(np.asarray(got), np.asarray(want), 2e-5, "vmap")


@needs_onednn
@pytest.mark.skipif(not Path("/proc/cpuinfo").exists(), reason="no /proc/cpuinfo")
def test_preferred_where_the_cpu_has_avx512():
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    avx512_core = {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags
    assert onednn.preferred() == avx512_core
    assert onednn.preferred(jnp.bfloat16) == (avx512_core and "avx512_bf16" in flags)


def test_the_environment_can_turn_it_off(monkeypatch, fresh_load):
    monkeypatch.setenv("PISA_JAX_ONEDNN", "off")
    fresh_load(onednn)
    assert onednn.unavailable_reason() == "turned off by PISA_JAX_ONEDNN=off"
    assert not onednn.preferred()
    stem = ((2, 16, 112, 112, 3), (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3))
    assert resolve_lowering("auto", *stem, backend="cpu") == "stacked"
