"""Devices and hosts: multi-host start-up, batch splitting, replication for pmap.

The pmap step keeps one copy of the state per local device (leading axis = local devices).
Replication uses `jax.device_put` with a sharding (jax 0.10 removed device_put_replicated).
"""
from __future__ import annotations

import os

import jax
import numpy as np

from pisa_jax.data.pipeline import BATCH_AXIS
from pisa_jax.train.config import TrainConfigError

# Environment variables by which jax.distributed.initialize() finds a cluster by itself.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def _in_multi_process_cluster() -> bool:
    sizes = [os.environ.get(k) for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")]
    if any(s is not None and s.isdigit() and int(s) > 1 for s in sizes):
        return True
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> bool:
    """Join a multi-host run: from explicit flags, or from the cluster environment.

    Must run before any other JAX call. Returns whether jax.distributed was initialised.
    On CPU the cross-process collectives need gloo (jax's default CPU collectives are none).
    """
    explicit = [coordinator_address, num_processes, process_id]
    if any(v is not None for v in explicit) and not all(v is not None for v in explicit):
        raise TrainConfigError("multi-host: give all of --coordinator_address, --num_processes "
                               "and --process_id, or none of them")
    if coordinator_address is None and not _in_multi_process_cluster():
        return False
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except (AttributeError, ValueError):  # a jax whose CPU collectives need no choosing
        pass
    if coordinator_address is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id)
    else:
        jax.distributed.initialize()  # jax reads SLURM / MPI / JAX_COORDINATOR_ADDRESS itself
    return True


def check_batch_split(global_batch_size: int, *, what: str = "batch_size") -> int:
    """Samples per device; a clear error (before any compile) if the batch does not split."""
    devices = jax.device_count()
    if global_batch_size % devices:
        raise TrainConfigError(
            f"{what}={global_batch_size} does not split evenly over {devices} devices "
            f"({jax.local_device_count()} per host x {jax.process_count()} hosts): use a "
            f"multiple of {devices}")
    return global_batch_size // devices


def is_lead_host() -> bool:
    return jax.process_index() == 0


def replicate(tree, devices=None):
    """One copy of every leaf on each local device: arrays [local_devices, ...] for pmap.

    The sharding is the one pmap gives its outputs (a mesh axis named like the pmap axis), so
    the step compiles once: a state with any other sharding would be recompiled for at step 2.
    """
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (BATCH_AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))

    def put(x):
        x = np.asarray(jax.device_get(x))
        return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree_util.tree_map(put, tree)


def unreplicate_to_host(tree):
    """numpy copy of the first local replica: what checkpoints and reports store.

    Reads the first addressable shard directly (no indexing program to compile per leaf
    shape, and valid on every host of a multi-host run)."""
    def first(x):
        if isinstance(x, jax.Array):
            # A copy: on CPU np.asarray may view the device buffer, which the next step donates
            # while an asynchronous checkpoint save may still be reading it.
            return np.array(np.asarray(x.addressable_shards[0].data)[0], copy=True)
        return np.array(x[0], copy=True)
    return jax.tree_util.tree_map(first, tree)
