"""TorchConv's zero padding of thin inputs (the bf16 stems): the same function, the same
parameters."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.models import C3D, ResNet3D
from pisa_jax.models.layers import BF16_STEM_CHANNELS, TorchConv, stem_input_channels


@pytest.mark.parametrize("lowering", ["native", "taps", "stacked"])
def test_padded_input_channels_give_the_unpadded_result_in_float32(lowering):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 12, 12, 3))
    plain = TorchConv(5, (3, 7, 7), (1, 2, 2), (1, 3, 3), use_bias=True, lowering=lowering)
    padded = plain.clone(min_input_channels=BF16_STEM_CHANNELS)
    variables = plain.init(jax.random.PRNGKey(1), x)
    variables = jax.tree_util.tree_map(lambda v: v + 0.1, variables)  # a non-zero bias too
    assert jax.tree_util.tree_map(jnp.shape, padded.init(jax.random.PRNGKey(1), x)) == \
        jax.tree_util.tree_map(jnp.shape, variables)                  # kernel [3, 7, 7, 3, 5]
    want = plain.apply(variables, x)
    got = padded.apply(variables, x)
    # the same terms summed in another order: float32 rounding only (values are ~1)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    assert "f32[2,6,12,12,8]" in str(jax.make_jaxpr(padded.apply)(variables, x))  # it pads


@pytest.mark.parametrize("model", [ResNet3D(10, None, base_width=4),
                                   C3D(None, base_width=4, clip_shape=(16, 16, 16))])
def test_bf16_stems_keep_the_float32_parameter_shapes(model):
    x = jnp.zeros((1, 16, 16, 16, 3))
    shapes = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), x, train=False))
    bf16 = model.clone(dtype=jnp.bfloat16)
    bf16_shapes = jax.eval_shape(lambda: bf16.init(jax.random.PRNGKey(0), x, train=False))
    assert bf16_shapes == shapes
    assert shapes["params"]["conv1"]["kernel"].shape[-2] == 3


def test_bf16_stems_are_padded_for_gpus_only(monkeypatch):
    """On a CPU oneDNN stacks a bf16 stem's taps on its 3 channels, where 8 were slower."""
    assert stem_input_channels(jnp.float32) == 0
    assert stem_input_channels(jnp.bfloat16) == (0 if jax.default_backend() == "cpu"
                                                 else BF16_STEM_CHANNELS)
    for backend, channels in (("cpu", 0), ("gpu", BF16_STEM_CHANNELS)):
        monkeypatch.setattr(jax, "default_backend", lambda backend=backend: backend)
        assert stem_input_channels(jnp.bfloat16) == channels
        assert stem_input_channels(jnp.float32) == 0
