"""3D convolution lowerings: every form against PyTorch, against each other (values and
gradients, float32 and bf16), the same parameters whatever the form, and what "auto" picks."""
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conv_cases import CONVS_3D

from pisa_jax.models import ResNet3D, SkillModel
from pisa_jax.models.layers import ResidualBlock, torch_conv
from pisa_jax.models.lowering import (CONV_LOWERINGS, ONEDNN_AUTO_MIN_FLOPS, convolve,
                                     forward_flops, resolve_lowering)
from pisa_jax.native import onednn

TOLERANCE = 1e-4  # on max |logit diff|, relative to max(1, max |logit|)
TINY_CLIP = (2, 3, 6, 32, 32)  # [N, C, T, H, W]: T reaches 1 in the last stages
FORMS = ("taps", "stacked")  # compared with "native"

CONVS = CONVS_3D


def _check(name, diff, scale):
    print(f"parity {name}: max abs diff {diff:.3g}, max |logit| {scale:.3g}")
    assert diff <= TOLERANCE * max(1.0, scale), (name, diff, scale)


@pytest.mark.parametrize("lowering", ("native",) + FORMS + ("onednn",))
@pytest.mark.parametrize("layout", ["hara", "torchvision", "hara time stride 2"])
def test_parity_with_pytorch(torch_reference, layout, lowering):
    if lowering == "onednn" and onednn.unavailable_reason():
        pytest.skip(f"onednn: {onednn.unavailable_reason()}")
    if layout == "torchvision":
        torch_model = torch_reference.torchvision_video_resnet(10, num_classes=10)
    else:
        torch_model = torch_reference.hara_resnet3d(10, 10, conv1_t_stride=1 + layout.endswith("2"))
    model = ResNet3D(10, 10, stem=layout.split()[0], conv1_t_stride=1 + layout.endswith("2"),
                     conv_lowering=lowering)
    diff, scale, report = torch_reference.parity(torch_model, model,
                                                 torch_reference.random_input(TINY_CLIP))
    assert not report.skipped and not report.left_initialised
    _check(f"r3d10-{layout} {lowering}", diff, scale)


def _conv_case(name):
    """x [N, T, H, W, I], w [kt, kh, kw, I, O] (numpy float32), strides, padding."""
    shape, kernel, out, stride, pad = CONVS[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, np.float32)
    w = rng.standard_normal(kernel + (shape[-1], out), np.float32)
    return x, (w / np.sqrt(np.prod(kernel) * shape[-1])).astype(np.float32), stride, pad


def _assert_close(got, want, relative, what):
    """max |got - want| <= relative * max |want| (compared in numpy: no per-shape compiles)."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, what
    diff, scale = float(np.abs(got - want).max()), float(np.abs(want).max())
    assert diff <= relative * scale, (what, diff, scale)


@pytest.mark.parametrize("name", CONVS)
def test_forms_give_the_same_values_and_gradients(name):
    x, w, stride, pad = _conv_case(name)

    @jax.jit
    def outputs_and_gradients(x, w):  # {lowering: (y, d/dx, d/dw)} for one random cotangent
        results = {}
        for lowering in ("native",) + FORMS:
            y, vjp = jax.vjp(lambda x, w, low=lowering: convolve(x, w, stride, pad, low), x, w)
            results[lowering] = (y,) + vjp(jnp.cos(jnp.arange(y.size, dtype=y.dtype)).reshape(
                y.shape))
        return results
    results = outputs_and_gradients(x, w)
    for form in FORMS:
        for what, got, want in zip(("y", "dx", "dw"), results[form], results["native"]):
            _assert_close(got, want, 2e-5, f"{name} {form} {what}")


def test_native_matches_torch_conv3d(torch_reference):
    """The reference itself: padding and strides mean what PyTorch means by them."""
    import torch
    x, w, stride, pad = _conv_case("hara stem, time stride 2")
    want = torch.nn.functional.conv3d(torch.from_numpy(np.moveaxis(x, -1, 1).copy()),
                                      torch.from_numpy(np.transpose(w, (4, 3, 0, 1, 2)).copy()),
                                      stride=stride, padding=pad).numpy()
    got = jax.jit(lambda x, w: {low: convolve(x, w, stride, pad, low)
                                for low in ("native",) + FORMS})(x, w)
    for lowering, y in got.items():
        _assert_close(np.moveaxis(np.asarray(y), -1, 1), want, 1e-5, lowering)


def _block_gradients(lowering, dtype=jnp.float32):
    """d(loss)/d(params) and d(loss)/d(input) of a strided basic block with its 1x1x1 shortcut,
    BatchNorm in training mode, for a loss linear in the block's output."""
    block = ResidualBlock("basic", 8, stride=2, ndim=3, dtype=dtype, conv_lowering=lowering)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 12, 12, 4), np.float32)  # [N, T, H, W, C]
    weights = rng.standard_normal((2, 3, 6, 6, 8), np.float32)  # like the output
    variables = jax.eval_shape(lambda: block.init(jax.random.PRNGKey(0), x, train=False))
    params = {name: {leaf: rng.standard_normal(shape.shape, np.float32) * 0.3
                     for leaf, shape in layer.items()}
              for name, layer in variables["params"].items()}
    stats = jax.tree_util.tree_map(lambda s: np.ones(s.shape, np.float32),
                                   variables["batch_stats"])  # unused in training mode

    def loss(params, x):
        y, _ = block.apply({"params": params, "batch_stats": stats}, x,
                           train=True, mutable=["batch_stats"])
        return jnp.sum(y.astype(jnp.float32) * weights)
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)


@pytest.fixture(scope="module")
def float32_block_gradients():
    return {low: _block_gradients(low) for low in ("native",) + FORMS}


def test_block_gradients_agree_across_forms(float32_block_gradients):
    grads = float32_block_gradients
    assert set(grads["native"][0]) == {"conv1", "bn1", "conv2", "bn2", "downsample_conv",
                                       "downsample_bn"}
    for form in FORMS:
        for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads[form]),
                                jax.tree_util.tree_leaves(grads["native"])):
            _assert_close(g, w, 1e-5, f"{form} {jax.tree_util.keystr(path)}")


needs_onednn_bf16 = pytest.mark.skipif(
    not onednn.preferred(jnp.bfloat16),
    reason="oneDNN's bf16 convolutions need oneDNN and a CPU with bf16 instructions")


@pytest.mark.parametrize("form", FORMS + (pytest.param("onednn", marks=needs_onednn_bf16),))
def test_bf16_close_to_float32(float32_block_gradients, form):
    """bf16 compute: values and gradients of a single conv and of a block stay close to float32.
    "onednn": oneDNN's bf16 convolutions (the block's first one stacked on channels: 4 input
    channels), with the kernel in bf16 for the single conv and the float32 parameters in the
    block.

    The block's bound is looser: bf16 rounding passes through training-mode BatchNorm. Native
    bf16 measured 0.069 on the input gradient with XLA's excess precision off, as the forms do
    (0.007 with it on, because XLA then keeps the float32 input where the native conv reads it)."""
    x, w, stride, pad = _conv_case("3x3x3 stride 2")

    def outputs_and_gradients(x, w, lowering):
        y, vjp = jax.vjp(lambda x, w: convolve(x, w, stride, pad, lowering), x, w)
        cotangent = jnp.cos(jnp.arange(y.size, dtype=jnp.float32)).reshape(y.shape)
        return (y,) + vjp(cotangent.astype(y.dtype))
    bf16 = jax.jit(outputs_and_gradients, static_argnums=2)(
        x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), form)
    want = jax.jit(outputs_and_gradients, static_argnums=2)(x, w, "native")
    for what, got, expected in zip(("y", "dx", "dw"), bf16, want):
        assert got.dtype == jnp.bfloat16
        _assert_close(got, expected, 2e-2, f"bf16 {form} {what}")

    grads = _block_gradients(form, jnp.bfloat16)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(grads),
                            jax.tree_util.tree_leaves(float32_block_gradients["native"])):
        assert g.dtype == jnp.float32
        _assert_close(g, w, 0.1, f"bf16 {form} block {jax.tree_util.keystr(path)}")


def test_parameters_do_not_depend_on_the_lowering():
    """Same names, shapes and initial values as nn.Conv: checkpoints and conversion hold."""
    x = jnp.zeros((1, 4, 16, 16, 3))
    trees = [jax.eval_shape(lambda low=low: SkillModel(visual_depth=10, aural_depth=18,
                                                        base_width=4, conv_lowering=low)
                            .init({"params": jax.random.PRNGKey(0)}, x[None],
                                  jnp.zeros((1, 32, 32)), train=False))
             for low in CONV_LOWERINGS if low != "onednn" or onednn.available()]
    for tree in trees[1:]:
        assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(trees[0])
        assert jax.tree_util.tree_leaves(tree) == jax.tree_util.tree_leaves(trees[0])
    assert trees[0]["params"]["visual_backbone"]["conv1"]["kernel"].shape == (7, 7, 7, 3, 4)

    key = jax.random.PRNGKey(5)
    ours = torch_conv(8, (3, 3, 3), (1, 1, 1), (1, 1, 1), dtype=jnp.float32, name="conv",
                      use_bias=True, lowering="taps")
    flax_conv = nn.Conv(8, (3, 3, 3), padding=((1, 1),) * 3, use_bias=True,
                        kernel_init=nn.initializers.variance_scaling(2.0, "fan_out", "normal"),
                        name="conv")
    for a, b in zip(jax.tree_util.tree_leaves(jax.jit(ours.init)(key, x)),
                    jax.tree_util.tree_leaves(jax.jit(flax_conv.init)(key, x))):
        np.testing.assert_array_equal(a, b)


def test_bias_is_added():
    x, w, stride, pad = _conv_case("3x3x3")
    bias = np.arange(6, dtype=np.float32)
    for lowering in ("native",) + FORMS:
        conv = torch_conv(6, (3, 3, 3), stride, pad, dtype=jnp.float32, name="c", use_bias=True,
                          lowering=lowering)
        y = jax.jit(conv.apply)({"params": {"kernel": w, "bias": bias}}, x)
        without = jax.jit(lambda x, w: convolve(x, w, stride, pad, "native"))(x, w)
        _assert_close(y, np.asarray(without) + bias, 1e-5, lowering)


def test_auto_picks_per_backend_and_shape():
    def auto(t, kernel, stride, pad, backend="cpu"):  # XLA's forms: oneDNN not preferred
        return resolve_lowering("auto", (4, t, 56, 56, kernel[3]), kernel, stride, pad, backend,
                                onednn_preferred=False)
    assert auto(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3)) == "stacked"  # thin stems
    assert auto(16, (3, 7, 7, 3, 64), (1, 2, 2), (1, 3, 3)) == "stacked"
    assert auto(8, (3, 3, 3, 64, 64), (1, 1, 1), (1, 1, 1)) == "stacked"  # 1/12 padding
    assert auto(8, (3, 3, 3, 64, 128), (2, 2, 2), (1, 1, 1)) == "stacked"
    assert auto(4, (3, 3, 3, 128, 128), (1, 1, 1), (1, 1, 1)) == "taps"  # 1/6 padding
    assert auto(1, (3, 3, 3, 512, 512), (1, 1, 1), (1, 1, 1)) == "taps"
    assert auto(8, (1, 1, 1, 64, 128), (2, 2, 2), (0, 0, 0)) == "stacked"
    for backend in ("gpu", "cuda", "tpu"):
        assert auto(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3), backend) == "native"
    assert resolve_lowering("stacked", (1, 4, 8, 8, 64), (3, 3, 3, 64, 64), (1, 1, 1),
                            (1, 1, 1), "gpu") == "stacked"


def test_onednn_keeps_taps_where_they_skip_padding():
    def pick(t, kernel, stride, pad, backend="cpu", dtype=jnp.float32, lowering="onednn",
             preferred=None):
        x_shape = (4, t, 56, 56, kernel[-2]) if len(kernel) == 5 else (4, 56, 56, kernel[-2])
        return resolve_lowering(lowering, x_shape, kernel, stride, pad, backend, dtype,
                                onednn_preferred=preferred)
    assert pick(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3)) == "onednn"
    assert pick(8, (3, 3, 3, 64, 64), (1, 1, 1), (1, 1, 1)) == "onednn"
    assert pick(4, (3, 3, 3, 128, 256), (2, 2, 2), (1, 1, 1)) == "onednn"  # 1/6 padding
    assert pick(2, (3, 3, 3, 256, 256), (1, 1, 1), (1, 1, 1)) == "taps"  # 1/3 padding
    assert pick(2, (3, 3, 3, 256, 512), (2, 2, 2), (1, 1, 1)) == "taps"
    assert pick(1, (3, 3, 3, 512, 512), (1, 1, 1), (1, 1, 1)) == "taps"  # 2/3 padding
    assert pick(None, (7, 7, 1, 64), (2, 2), (3, 3)) == "onednn"  # 2D: the aural net
    # 2D convolutions are native for every other lowering
    assert pick(None, (7, 7, 1, 64), (2, 2), (3, 3), lowering="stacked") == "native"
    # bf16 where the CPU has bf16 instructions: every convolution, the thin stems stacked on
    # channels, the padded last stages too (XLA's bf16 taps are the slower ones)
    bf16 = functools.partial(pick, dtype=jnp.bfloat16, preferred=True)
    assert bf16(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3)) == "onednn_stacked"
    assert bf16(16, (3, 7, 7, 3, 64), (1, 2, 2), (1, 3, 3)) == "onednn_stacked"
    assert bf16(8, (3, 3, 3, 64, 64), (1, 1, 1), (1, 1, 1)) == "onednn"
    assert bf16(1, (3, 3, 3, 512, 512), (1, 1, 1), (1, 1, 1)) == "onednn"
    assert bf16(None, (7, 7, 1, 64), (2, 2), (3, 3)) == "onednn"
    assert bf16(None, (7, 7, 1, 64), (2, 2), (3, 3), lowering="stacked") == "native"
    # elsewhere (bf16 without those instructions, a GPU) "onednn" means "auto"
    assert bf16(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3), preferred=False) == "stacked"
    assert bf16(1, (3, 3, 3, 512, 512), (1, 1, 1), (1, 1, 1), preferred=False) == "taps"
    assert bf16(None, (7, 7, 1, 64), (2, 2), (3, 3), preferred=False) == "native"
    assert bf16(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3), "gpu") == "native"
    assert pick(16, (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3), "gpu") == "native"
    assert pick(None, (7, 7, 1, 64), (2, 2), (3, 3), "gpu") == "native"


def test_auto_sends_large_float32_cpu_convolutions_to_onednn_where_preferred():
    def auto(x_shape, kernel, stride, pad, preferred=True, backend="cpu", dtype=jnp.float32):
        return resolve_lowering("auto", x_shape, kernel, stride, pad, backend, dtype,
                                onednn_preferred=preferred)
    stem = ((2, 16, 112, 112, 3), (7, 7, 7, 3, 64), (1, 2, 2), (3, 3, 3))
    assert forward_flops(*stem) == 2 * 2 * 16 * 56 * 56 * 7 * 7 * 7 * 3 * 64
    assert auto(*stem) == "onednn"
    assert auto(*stem, preferred=False) == "stacked"
    assert auto(*stem, dtype=jnp.bfloat16) == "onednn_stacked"  # bf16 instructions
    assert auto(*stem, dtype=jnp.bfloat16, preferred=False) == "stacked"
    assert auto(*stem, backend="gpu") == "native"
    assert auto(*stem, backend="gpu", dtype=jnp.bfloat16) == "native"
    # the paper's last stage: oneDNN's own rule keeps taps at 2 frames
    assert auto((2, 2, 7, 7, 512), (3, 3, 3, 512, 512), (1, 1, 1), (1, 1, 1)) == "taps"
    # the aural net's 2D convolutions at 224x224
    assert auto((2, 224, 224, 1), (7, 7, 1, 64), (2, 2), (3, 3)) == "onednn"
    # below ONEDNN_AUTO_MIN_FLOPS (the test models' sizes) a call costs more than it saves
    small = ((1, 8, 32, 32, 4), (3, 3, 3, 4, 4), (1, 1, 1), (1, 1, 1))
    assert forward_flops(*small) < ONEDNN_AUTO_MIN_FLOPS and auto(*small) == "stacked"
    assert auto((2, 32, 32, 1), (7, 7, 1, 4), (2, 2), (3, 3)) == "native"
    # ... but in bf16 every size goes there (XLA's bf16 convolutions are slower still)
    small_wide = ((1, 2, 8, 8, 32), (3, 3, 3, 32, 32), (1, 1, 1), (1, 1, 1))
    assert forward_flops(*small_wide) < ONEDNN_AUTO_MIN_FLOPS
    assert auto(*small_wide, dtype=jnp.bfloat16) == "onednn"
    assert auto(*small, dtype=jnp.bfloat16) == "onednn_stacked"  # 12 stacked channels
    assert auto((2, 32, 32, 1), (7, 7, 1, 4), (2, 2), (3, 3), dtype=jnp.bfloat16) == "onednn"


def test_rejects_unknown_lowering():
    with pytest.raises(ValueError, match="conv lowering"):
        ResNet3D(18, conv_lowering="fft")
    with pytest.raises(ValueError, match="conv lowering"):
        torch_conv(4, (3, 3, 3), (1, 1, 1), (1, 1, 1), dtype=jnp.float32, name="c", lowering="")
