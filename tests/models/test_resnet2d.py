"""ResNet2D: parity with torchvision's resnet18/34/50, the 3 -> 1 channel conv1, parameter counts,
BatchNorm synchronised over devices under pmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from parity_helpers import assert_parity, flax_param_count

from pisa_jax.models import ResNet2D




@pytest.mark.parametrize("depth", [18, 34, 50])
def test_parity_torchvision(torch_reference, depth):
    torch_model = torch_reference.torchvision_resnet2d(depth, num_classes=10)
    diff, scale, report = torch_reference.parity(
        torch_model, ResNet2D(depth, 10, in_channels=3),
        torch_reference.random_input((2, 3, 64, 64)))
    assert not report.skipped and not report.left_initialised and not report.adapted
    assert_parity(f"r2d{depth} 64x64", diff, scale)


@pytest.mark.slow
def test_parity_r2d18_paper_shape(torch_reference):
    """The paper's spectrogram size, 224 x 224, with ImageNet's 1000-class head."""
    diff, scale, _ = torch_reference.parity(
        torch_reference.torchvision_resnet2d(18, 1000), ResNet2D(18, 1000, in_channels=3),
        torch_reference.random_input((2, 3, 224, 224)))
    assert_parity("r2d18 224x224", diff, scale)


def test_rgb_conv1_summed_to_one_channel(torch_reference):
    """A grey image through the 1-channel model == the same grey as RGB through the original."""
    import torch
    torch_model = torch_reference.randomize_batchnorm(torch_reference.torchvision_resnet2d(18, 10))
    grey = torch_reference.random_input((2, 1, 64, 64))
    with torch.no_grad():
        want = torch_model(torch.from_numpy(grey).repeat(1, 3, 1, 1)).numpy()
    from pisa_jax.convert import convert_state_dict
    model = ResNet2D(18, 10, in_channels=1)
    variables, report = convert_state_dict(torch_model.state_dict(), model)
    assert report.adapted == ["conv1.weight: 3 input channels summed to 1"]
    assert variables["params"]["conv1"]["kernel"].shape == (7, 7, 1, 64)
    got = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(
        variables, np.moveaxis(grey, 1, -1)))
    assert_parity("r2d18 1-channel (grey) 64x64", float(np.abs(got - want).max()),
           float(np.abs(want).max()))



@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_param_count(torch_reference, depth):
    import torch
    with torch.device("meta"):
        expected = torch_reference.count_parameters(torch_reference.torchvision_resnet2d(depth))
    assert flax_param_count(ResNet2D(depth, 1000, in_channels=3)) == expected
    # the aural backbone: one input channel, no classifier
    without_fc = expected - ((2048 if depth >= 50 else 512) + 1) * 1000
    assert flax_param_count(ResNet2D(depth, None, in_channels=1)) == without_fc - 2 * 64 * 49


def test_batchnorm_synchronised_under_pmap(quick_init):
    """bn_axis_name="batch": per-device statistics equal those of the whole batch on one device."""
    if jax.local_device_count() < 4:
        pytest.skip("needs 4 (simulated) devices: XLA_FLAGS set before jax was imported")
    x = jax.random.normal(jax.random.PRNGKey(1), (8, 32, 32, 1))
    single = ResNet2D(18, base_width=4)
    variables = quick_init(single, x, train=False)
    _, whole = jax.jit(lambda v, x: single.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)

    synced = ResNet2D(18, base_width=4, bn_axis_name="batch")
    step = jax.pmap(lambda v, x: synced.apply(v, x, train=True, mutable=["batch_stats"])[1],
                    axis_name="batch", in_axes=(None, 0))
    per_device = step(variables, x.reshape(4, 2, 32, 32, 1))
    for want, got in zip(jax.tree_util.tree_leaves(whole), jax.tree_util.tree_leaves(per_device)):
        np.testing.assert_allclose(np.asarray(got), np.broadcast_to(want, got.shape),
                                   rtol=1e-4, atol=1e-5)


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="depth 10"):
        ResNet2D(10)
    with pytest.raises(ValueError, match=r"\[N, H, W, 1\]"):
        ResNet2D(18, base_width=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), False)
