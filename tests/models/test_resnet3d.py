"""ResNet3D: parity with PyTorch (Hara's layout and torchvision's video ResNet), parameter counts,
the PyTorch max-pool semantics, bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity_helpers import assert_parity, flax_param_count

from pisa_jax.models import ResNet3D, feature_dim
from pisa_jax.models.layers import torch_max_pool
from pisa_jax.native import onednn

SMALL_CLIP = (2, 3, 8, 64, 64)  # [N, C, T, H, W], PyTorch layout



@pytest.mark.parametrize("depth", [10, 18, 34, 50])
def test_parity_hara(torch_reference, depth):
    torch_model = torch_reference.hara_resnet3d(depth, num_classes=10)
    diff, scale, report = torch_reference.parity(
        torch_model, ResNet3D(depth, 10, stem="hara"), torch_reference.random_input(SMALL_CLIP))
    assert not report.skipped and not report.left_initialised
    assert_parity(f"r3d{depth}-hara 8x64x64", diff, scale)


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parity_torchvision_stem(torch_reference, depth):
    torch_model = torch_reference.torchvision_video_resnet(depth, num_classes=10)
    diff, scale, report = torch_reference.parity(
        torch_model, ResNet3D(depth, 10, stem="torchvision"),
        torch_reference.random_input(SMALL_CLIP))
    assert not report.skipped and not report.left_initialised
    assert_parity(f"r3d{depth}-torchvision 8x64x64", diff, scale)


def test_parity_hara_time_stride_2(torch_reference):
    torch_model = torch_reference.hara_resnet3d(18, num_classes=10, conv1_t_stride=2)
    diff, scale, _ = torch_reference.parity(torch_model, ResNet3D(18, 10, conv1_t_stride=2),
                                            torch_reference.random_input(SMALL_CLIP))
    assert_parity("r3d18-hara conv1_t_stride=2 8x64x64", diff, scale)


def test_parity_per_block(torch_reference):
    """Every block's output, not only the logits (forward hooks vs Flax intermediates)."""
    import torch
    torch_model = torch_reference.randomize_batchnorm(torch_reference.hara_resnet3d(18, 10))
    x = torch_reference.random_input((1, 3, 8, 32, 32))
    blocks = {f"layer{s}_{i}": getattr(torch_model, f"layer{s}")[i]
              for s in range(1, 5) for i in range(2)}
    want = {}
    for name, block in blocks.items():
        block.register_forward_hook(lambda m, i, out, name=name: want.__setitem__(name, out))
    with torch.no_grad():
        torch_model(torch.from_numpy(x))
    from pisa_jax.convert import convert_state_dict
    model = ResNet3D(18, 10)
    variables, _ = convert_state_dict(torch_model.state_dict(), model)
    _, state = jax.jit(lambda v, x: model.apply(v, x, train=False, capture_intermediates=True,
                                                mutable=["intermediates"]))(
        variables, np.moveaxis(x, 1, -1))
    for name in blocks:
        got = np.asarray(state["intermediates"][name]["__call__"][0])
        expected = np.moveaxis(want[name].numpy(), 1, -1)
        assert got.shape == expected.shape, name
        np.testing.assert_allclose(got, expected, atol=1e-4 * max(1, np.abs(expected).max()),
                                   err_msg=name)


@pytest.mark.slow
def test_parity_hara_r3d18_paper_shape(torch_reference):
    """The paper's clip: 16 x 112 x 112, Hara's R3D-18 with his 1039-class Kinetics+MiT head."""
    torch_model = torch_reference.hara_resnet3d(18, num_classes=1039)
    diff, scale, _ = torch_reference.parity(torch_model, ResNet3D(18, 1039),
                                            torch_reference.random_input((1, 3, 16, 112, 112)))
    assert_parity("r3d18-hara 16x112x112", diff, scale)



@pytest.mark.parametrize("depth", [10, 18, 34, 50, 101, 152, 200])
def test_param_count_hara(torch_reference, depth):
    import torch
    with torch.device("meta"):  # shapes only, no memory
        expected = torch_reference.count_parameters(torch_reference.hara_resnet3d(depth, 1039))
    assert flax_param_count(ResNet3D(depth, 1039)) == expected


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_param_count_torchvision_stem(torch_reference, depth):
    import torch
    with torch.device("meta"):
        expected = torch_reference.count_parameters(
            torch_reference.torchvision_video_resnet(depth, 400))
    assert flax_param_count(ResNet3D(depth, 400, stem="torchvision")) == expected


def test_features_without_classifier():
    x = jnp.zeros((2, 4, 32, 32, 3))
    for depth, width in [(18, 8), (50, 4)]:
        model = ResNet3D(depth, base_width=width)
        features, variables = jax.eval_shape(  # shapes only: a random init compiles slowly
            lambda: model.init_with_output(jax.random.PRNGKey(0), x, train=False))
        assert "fc" not in variables["params"]
        assert features.shape == (2, feature_dim(depth, width))
        assert features.dtype == jnp.float32
    assert feature_dim(18) == 512 and feature_dim(50) == 2048


MAX_POOL_LOWERINGS = ["native", pytest.param("onednn", marks=pytest.mark.skipif(
    not onednn.available(), reason=f"onednn: {onednn.unavailable_reason()}"))]


@pytest.mark.parametrize("lowering", MAX_POOL_LOWERINGS)
def test_max_pool_pads_with_minus_infinity(lowering):
    """All-negative input: zero padding would leak 0 into the border windows; PyTorch's doesn't."""
    x = -1.0 - jnp.arange(2 * 5 * 5 * 5, dtype=jnp.float32).reshape(2, 5, 5, 5, 1)
    y = torch_max_pool(x, window=3, stride=2, padding=1, lowering=lowering)
    assert y.shape == (2, 3, 3, 3, 1)
    assert float(y.max()) < 0
    assert float(y[0, 0, 0, 0, 0]) == float(x[0, :2, :2, :2, 0].max())


@pytest.mark.parametrize("lowering", MAX_POOL_LOWERINGS)
@pytest.mark.parametrize("spatial", [2, 3])
def test_max_pool_matches_pytorch_with_ties(torch_reference, spatial, lowering):
    """Values and gradients equal torch.nn.functional.max_poolNd's on input full of ties (small
    integers): the gradient goes to the first maximum of each window, as in PyTorch (XLA's form
    and oneDNN's)."""
    import torch
    shape = (2, 3) + (5, 9, 9)[-spatial:]  # [N, C, *spatial], PyTorch layout
    x = np.random.default_rng(0).integers(0, 3, shape).astype(np.float32)
    cotangent = np.random.default_rng(1).standard_normal(
        (2, 3) + (3, 5, 5)[-spatial:]).astype(np.float32)
    xt = torch.from_numpy(x).requires_grad_(True)
    pool = torch.nn.functional.max_pool3d if spatial == 3 else torch.nn.functional.max_pool2d
    want = pool(xt, 3, 2, 1)
    want.backward(torch.from_numpy(cotangent))

    def ours(x):  # channels-first in and out, like the reference
        return jnp.moveaxis(torch_max_pool(jnp.moveaxis(x, 1, -1), 3, 2, 1, lowering), -1, 1)
    got, vjp = jax.vjp(ours, x)
    np.testing.assert_array_equal(np.asarray(got), want.detach().numpy())
    np.testing.assert_allclose(np.asarray(vjp(cotangent)[0]), xt.grad.numpy(), atol=1e-6)


def test_bf16_forward_close_to_float32(quick_init):
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 32, 32, 3))
    model32 = ResNet3D(10, 10, base_width=8)
    variables = quick_init(model32, x, train=False)
    model16 = ResNet3D(10, 10, base_width=8, dtype=jnp.bfloat16)
    init16 = jax.eval_shape(lambda: model16.init(jax.random.PRNGKey(0), x, train=False))
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(init16)} == {jnp.dtype("float32")}
    want = jax.jit(lambda v: model32.apply(v, x, train=False))(variables)
    got = jax.jit(lambda v: model16.apply(v, x, train=False))(variables)
    assert got.dtype == jnp.float32
    diff = float(jnp.abs(got - want).max())
    print(f"bf16 vs f32 r3d10 (width 8): max abs diff {diff:.3g}, "
          f"max |logit| {float(jnp.abs(want).max()):.3g}")
    assert diff <= 5e-2 * max(1.0, float(jnp.abs(want).max()))
    _, state = jax.jit(lambda v: model16.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(state)} == {jnp.dtype("float32")}


def test_rejects_bad_configuration():
    with pytest.raises(ValueError, match="depth 19"):
        ResNet3D(19)
    with pytest.raises(ValueError, match="stem"):
        ResNet3D(18, stem="c3d")
    with pytest.raises(ValueError, match=r"\[N, T, H, W, C\]"):
        ResNet3D(18, base_width=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 3)), False)
