"""Replication for pmap: every device's copy, and buffers a donating step can reuse."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.train.distributed import replicate, unreplicate_to_host

KERNEL = np.arange(1 << 16, dtype=np.float32).reshape(256, 256)


def a_state():
    # jax arrays, as an initialised state is: their host views are aligned, which is what lets
    # device_put wrap them in place on a CPU
    return {"kernel": jnp.asarray(KERNEL), "step": jnp.asarray(3, jnp.int32)}


@pytest.mark.parametrize("donated", [False, True])
@pytest.mark.parametrize("devices", [1, 4])
def test_every_device_holds_the_same_copy(devices, donated):
    replicated = replicate(a_state(), jax.local_devices()[:devices], donated=donated)
    assert replicated["kernel"].shape == (devices, 256, 256)
    for replica in np.asarray(replicated["kernel"]):
        np.testing.assert_array_equal(replica, KERNEL)
    assert np.asarray(replicated["step"]).tolist() == [3] * devices


@pytest.mark.parametrize("devices", [1, 4])
def test_a_donating_step_writes_its_outputs_into_the_replicated_buffers(devices):
    step = jax.jit(lambda tree: jax.tree_util.tree_map(lambda x: x + 1, tree), donate_argnums=0)
    replicated = replicate(a_state(), jax.local_devices()[:devices], donated=True)
    before = [shard.data.unsafe_buffer_pointer() for shard in replicated["kernel"].addressable_shards]
    after = step(replicated)
    assert [shard.data.unsafe_buffer_pointer()
            for shard in after["kernel"].addressable_shards] == before
    np.testing.assert_array_equal(np.asarray(after["kernel"])[0], KERNEL + 1)


def test_a_donated_state_becomes_its_first_copy_in_place():
    state = a_state()
    where = state["kernel"].unsafe_buffer_pointer()
    replicated = replicate(state, jax.local_devices()[:1], donated=True)
    assert state["kernel"].is_deleted()  # consumed: no second state alive beside the copies
    assert replicated["kernel"].addressable_shards[0].data.unsafe_buffer_pointer() == where


@pytest.mark.parametrize("devices", [1, 2])
def test_host_arrays_an_array_twice_and_one_on_another_device_are_replicated_too(devices):
    shared = jnp.ones((4, 4))
    elsewhere = jax.device_put(jnp.full((5,), 3.0), jax.local_devices()[3])  # committed there
    tree = {"a": shared, "b": shared, "host": np.full((3,), 2.0, np.float32),
            "elsewhere": elsewhere}
    replicated = replicate(tree, jax.local_devices()[:devices], donated=True)
    assert replicated["a"] is not replicated["b"]
    for name, value in (("a", 1.0), ("b", 1.0), ("host", 2.0), ("elsewhere", 3.0)):
        assert np.all(np.asarray(replicated[name]) == value)
        assert replicated[name].shape[0] == devices


def test_the_copies_keep_the_sharding_the_step_compiles_for():
    devices = jax.local_devices()[:1]
    donated = replicate(a_state(), devices, donated=True)
    plain = replicate(a_state(), devices)
    for a, b in zip(jax.tree_util.tree_leaves(donated), jax.tree_util.tree_leaves(plain)):
        assert a.sharding == b.sharding


@pytest.mark.parametrize("copy", [True, False])
def test_the_first_replica_on_the_host(copy):
    replicated = replicate(a_state(), jax.local_devices()[:2], donated=True)
    host = unreplicate_to_host(replicated, copy=copy)
    np.testing.assert_array_equal(host["kernel"], KERNEL)
    assert host["step"] == 3
    if copy:  # memory of its own (a view of a device buffer is read-only)
        assert host["kernel"].flags.writeable and host["kernel"].flags.owndata
