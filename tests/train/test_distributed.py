"""Replication for pmap: every device's copy, and buffers a donating step can reuse."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.train.distributed import replicate


def a_state():
    # jax arrays, as an initialised state is: their host views are aligned, which is what lets
    # device_put wrap them in place on a CPU
    return {"kernel": jnp.arange(1 << 16, dtype=jnp.float32).reshape(256, 256),
            "step": jnp.asarray(3, jnp.int32)}


@pytest.mark.parametrize("devices", [1, 4])
def test_every_device_holds_the_same_copy(devices):
    state = a_state()
    replicated = replicate(state, jax.local_devices()[:devices], donated=True)
    assert replicated["kernel"].shape == (devices, 256, 256)
    for replica in np.asarray(replicated["kernel"]):
        np.testing.assert_array_equal(replica, np.asarray(state["kernel"]))
    assert np.asarray(replicated["step"]).tolist() == [3] * devices


@pytest.mark.parametrize("devices", [1, 4])
def test_a_donating_step_writes_its_outputs_into_the_replicated_buffers(devices):
    step = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x + 1, tree), donate_argnums=0)
    replicated = replicate(a_state(), jax.local_devices()[:devices], donated=True)
    before = [shard.data.unsafe_buffer_pointer() for shard in replicated["kernel"].addressable_shards]
    after = step(replicated)
    assert [shard.data.unsafe_buffer_pointer()
            for shard in after["kernel"].addressable_shards] == before
    np.testing.assert_array_equal(np.asarray(after["kernel"])[0],
                                  np.arange(1 << 16, dtype=np.float32).reshape(256, 256) + 1)


def test_the_copies_keep_the_sharding_the_step_compiles_for():
    devices = jax.local_devices()[:1]
    donated = replicate(a_state(), devices, donated=True)
    plain = replicate(a_state(), devices)
    for a, b in zip(jax.tree_util.tree_leaves(donated), jax.tree_util.tree_leaves(plain)):
        assert a.sharding == b.sharding
