"""pisa_jax.models.batch_norm against flax.linen.BatchNorm (the layer it replaces): same
variables, outputs, gradients and running averages, alone and synchronised over devices, with
its sums from the native one-pass handlers (CPU) and from XLA's reductions."""
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, PartitionSpec

from pisa_jax.models import batch_norm
from pisa_jax.native import batch_norm_sums

SHAPE = (4, 3, 5, 6, 8)  # [N, T, H, W, C]


@pytest.fixture(params=["native", "xla"])
def sums(request, monkeypatch):
    """Who computes the layer's column sums: the native handlers (where they apply) or XLA."""
    if request.param == "native" and not batch_norm_sums.applies(jnp.float32):
        pytest.skip(f"native sums: {batch_norm_sums.unavailable_reason() or 'not on a CPU'}")
    if request.param == "xla":
        monkeypatch.setattr(batch_norm.batch_norm_sums, "applies", lambda dtype: False)
    return request.param


def flax_batch_norm(train, axis_name=None, dtype=jnp.float32):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                        param_dtype=jnp.float32, axis_name=axis_name)


def project_batch_norm(train, axis_name=None, dtype=jnp.float32, relu=False):
    return batch_norm.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5,
                                dtype=dtype, axis_name=axis_name, relu=relu)


class ReluAfter(nn.Module):
    """nn.relu after the layer: what BatchNorm(relu=True) computes in one."""
    layer: nn.Module

    def __call__(self, x):
        return nn.relu(self.layer(x))


def inputs(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    # an offset mean, as after a convolution: E[x^2] - E[x]^2 must still be accurate
    x = jnp.asarray(rng.standard_normal(shape).astype(np.float32) * 2.0 + 0.5)
    weight = jnp.asarray(rng.standard_normal(shape).astype(np.float32))
    c = shape[-1]
    variables = {"params": {"scale": jnp.asarray(rng.uniform(0.5, 1.5, c), jnp.float32),
                            "bias": jnp.asarray(rng.standard_normal(c), jnp.float32)},
                 "batch_stats": {"mean": jnp.asarray(rng.standard_normal(c), jnp.float32),
                                 "var": jnp.asarray(rng.uniform(0.5, 2.0, c), jnp.float32)}}
    return x, weight, variables


def loss_and_grads(layer, x, weight, variables):
    """A loss that is not linear in the output (so the gradient depends on every term)."""
    def loss(params, x):
        y, updated = layer.apply({"params": params, "batch_stats": variables["batch_stats"]}, x,
                                 mutable=["batch_stats"])
        return jnp.sum(jnp.tanh(y) * weight), (y, updated["batch_stats"])
    (value, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
        variables["params"], x)
    return y, stats, grads


def assert_trees_close(a, b, rtol, atol):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


def test_same_variables_as_flax():
    x, _, _ = inputs()
    ours = project_batch_norm(True).init(jax.random.PRNGKey(0), x)
    theirs = flax_batch_norm(True).init(jax.random.PRNGKey(0), x)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    assert_trees_close(ours, theirs, 0, 0)


def test_training_matches_flax(sums):
    x, weight, variables = inputs()
    ours = loss_and_grads(project_batch_norm(True), x, weight, variables)
    theirs = loss_and_grads(flax_batch_norm(True), x, weight, variables)
    # output, running mean/var, d/dscale, d/dbias and d/dx
    assert_trees_close(ours, theirs, rtol=2e-5, atol=2e-5)
    assert float(jnp.abs(ours[2][1]).max()) > 0.1  # the input gradient is not trivially zero


def test_eval_matches_flax_exactly():
    x, _, variables = inputs()
    ours = project_batch_norm(False).apply(variables, x)
    theirs = flax_batch_norm(False).apply(variables, x)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_running_averages_not_updated_while_initialising():
    x, _, _ = inputs()
    variables = project_batch_norm(True).init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], np.zeros(SHAPE[-1]))
    np.testing.assert_array_equal(variables["batch_stats"]["var"], np.ones(SHAPE[-1]))


def test_bfloat16_output_dtype_and_float32_statistics(sums):
    x, weight, variables = inputs()
    y, stats, grads = loss_and_grads(project_batch_norm(True, dtype=jnp.bfloat16),
                                     x.astype(jnp.bfloat16), weight, variables)
    assert y.dtype == jnp.bfloat16 and grads[1].dtype == jnp.bfloat16
    assert stats["mean"].dtype == jnp.float32 and grads[0]["scale"].dtype == jnp.float32
    reference = loss_and_grads(flax_batch_norm(True), x, weight, variables)
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(reference[0]), atol=0.1)


def sharded_grads(layer, devices, x, weight, variables):
    """(running stats, parameter gradients [devices, C] of each device's loss, input gradient)
    with the batch split over `devices` under shard_map."""
    mesh = Mesh(np.array(jax.devices()[:devices]), ("batch",))

    def per_device(x, weight):
        def loss(params, x):
            y, updated = layer.apply({"params": params, "batch_stats": variables["batch_stats"]},
                                     x, mutable=["batch_stats"])
            return jnp.sum(jnp.tanh(y) * weight), updated["batch_stats"]
        (_, stats), (d_params, d_x) = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(
            variables["params"], x)
        return stats, jax.tree_util.tree_map(lambda g: g[None], d_params), d_x

    return jax.jit(jax.shard_map(
        per_device, mesh=mesh, in_specs=(PartitionSpec("batch"), PartitionSpec("batch")),
        out_specs=(PartitionSpec(), PartitionSpec("batch"), PartitionSpec("batch")),
        check_vma=False))(x, weight)


@pytest.mark.parametrize("devices", [1, 4])
def test_synchronised_over_devices(devices, sums):
    """With the batch split over devices the layer equals Flax's under the same split (per-device
    parameter gradients included: the train step averages them), and both equal the layer on
    the whole batch on one device."""
    x, weight, variables = inputs()
    ours = sharded_grads(project_batch_norm(True, "batch"), devices, x, weight, variables)
    theirs = sharded_grads(flax_batch_norm(True, "batch"), devices, x, weight, variables)
    assert_trees_close(ours, theirs, 2e-5, 2e-5)
    _, whole_stats, (whole_params, whole_x) = loss_and_grads(flax_batch_norm(True), x, weight,
                                                             variables)
    stats, d_params, d_x = ours
    d_params = jax.tree_util.tree_map(lambda g: g.sum(0), d_params)
    assert_trees_close((stats, d_params, d_x), (whole_stats, whole_params, whole_x), 2e-5, 2e-5)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_the_native_sums_run_in_both_passes(sums, dtype):
    x, weight, variables = inputs()
    layer = project_batch_norm(True, dtype=dtype)
    program = jax.jit(lambda p, x: jax.grad(
        lambda p: jnp.sum(layer.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                      x, mutable=["batch_stats"])[0] * weight))(p)).lower(
        variables["params"], x.astype(dtype)).as_text()
    native = sums == "native"
    assert (batch_norm_sums.MOMENTS in program) == native
    assert (batch_norm_sums.GRADIENT_SUMS in program) == native


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("train", [True, False])
def test_relu_inside_equals_relu_after(sums, dtype, train):
    """BatchNorm(relu=True), whose gradient takes the ReLU's mask from its output, gives the
    same bits as nn.relu after the layer: output, running averages and every gradient."""
    x, weight, variables = inputs()
    x = x.astype(dtype)
    ours = loss_and_grads(project_batch_norm(train, dtype=dtype, relu=True), x, weight,
                          variables)
    theirs = loss_and_grads(ReluAfter(project_batch_norm(train, dtype=dtype)), x, weight,
                            {"params": {"layer": variables["params"]},
                             "batch_stats": {"layer": variables["batch_stats"]}})
    (y, stats, (d_params, d_x)), (y2, stats2, (d_params2, d_x2)) = ours, theirs
    assert_trees_close((y, stats, d_params, d_x),
                       (y2, stats2["layer"], d_params2["layer"], d_x2), 0, 0)
    assert float(jnp.mean(y == 0)) > 0.2  # the ReLU cut part of the output
    assert float(jnp.abs(d_x.astype(jnp.float32)).max()) > 0.01


def test_native_relu_gradient_sums_run_where_the_relu_is_inside(sums):
    x, weight, variables = inputs()
    layer = project_batch_norm(True, relu=True)
    program = jax.jit(lambda p, x: jax.grad(
        lambda p: jnp.sum(layer.apply({"params": p, "batch_stats": variables["batch_stats"]},
                                      x, mutable=["batch_stats"])[0] * weight))(p)).lower(
        variables["params"], x).as_text()
    assert (batch_norm_sums.RELU_GRADIENT_SUMS in program) == (sums == "native")
    # the native sums take the activations as they are: in bf16 a reshape before a custom call
    # is a copy on XLA's CPU backend
    activation = "x".join(map(str, SHAPE))
    reshaped = re.search(rf"stablehlo.reshape [^\n]*\(tensor<{activation}x", program)
    assert (reshaped is None) == (sums == "native")


def test_column_sum():
    x = jnp.asarray(np.random.default_rng(1).standard_normal((37, 5)).astype(np.float32))
    np.testing.assert_allclose(batch_norm.column_sum(x), np.asarray(x).sum(0), rtol=1e-5,
                               atol=1e-5)
    assert batch_norm.column_sum(x.astype(jnp.bfloat16)).dtype == jnp.float32
