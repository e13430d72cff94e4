"""Devices and hosts: multi-host start-up, batch splitting, replication for pmap.

The pmap step keeps one copy of the state per local device (leading axis = local devices).
Replication uses `jax.device_put` with a sharding (jax 0.10 removed device_put_replicated),
or, for the train state that each step donates, one XLA program that consumes it.
"""
from __future__ import annotations

import collections
import functools
import os
import threading
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from pisa_jax.data.pipeline import BATCH_AXIS
from pisa_jax.train.config import TrainConfigError

# Environment variables by which jax.distributed.initialize() finds a cluster by itself.
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE",
                "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


# jax.distributed's heartbeat timeout, in multiples of --peer_timeout_s: the earliest it aborts
# after a death (half of its timeout) must come after the latest the watch stops (0.6 of it).
JAX_HEARTBEAT_FACTOR = 2


def _in_multi_process_cluster() -> bool:
    sizes = [os.environ.get(k) for k in ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")]
    if any(s is not None and s.isdigit() and int(s) > 1 for s in sizes):
        return True
    return bool(os.environ.get("JAX_COORDINATOR_ADDRESS"))


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, timeout_s: int = 60) -> bool:
    """Join a multi-host run: from explicit flags, or from the cluster environment.

    Must run before any other JAX call. Returns whether jax.distributed was initialised.
    On CPU the cross-process collectives need gloo (jax's default CPU collectives are none).

    timeout_s bounds how long the others wait for a process that died: a collective with a dead
    peer fails at once (its connection closes), or `watch_peers` stops them after timeout_s / 2.
    jax's own heartbeat is only the backstop, at twice timeout_s: it aborts every process (with
    a page of logs) when a peer's last beat is a whole heartbeat timeout old, and its beats are
    far apart (a death on a 2-core CI machine was aborted after 36.7 s of a 60 s timeout), so at
    timeout_s itself it raced the watch and could win.
    At exit, the shutdown barrier waits at most timeout_s for the others.
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
    timeouts = dict(heartbeat_timeout_seconds=JAX_HEARTBEAT_FACTOR * timeout_s,
                    shutdown_timeout_seconds=timeout_s)
    if coordinator_address is not None:
        jax.distributed.initialize(coordinator_address=coordinator_address,
                                   num_processes=num_processes, process_id=process_id, **timeouts)
    else:  # jax reads SLURM / MPI / JAX_COORDINATOR_ADDRESS itself
        jax.distributed.initialize(**timeouts)
    return True


def watch_peers(timeout_s: float, on_lost: Callable[[str], None]) -> Callable[[], None]:
    """Multi-host: stop this process cleanly when another one dies or hangs.

    A daemon thread beats a counter into the coordination service's key-value store every
    timeout_s / 20 s and watches the others' counters: one that has not advanced for
    timeout_s / 2 (or a service that stays unreachable that long) calls on_lost(message), at
    most timeout_s / 2 + 2 periods (0.6 x timeout_s) after the death. A collective with a dead
    peer usually fails at once, but one can also wait for it. Returns the function that stops
    the watch (call it when the run is over)."""
    from jax._src import distributed as jax_distributed  # the client orbax's barriers use too
    client = getattr(jax_distributed.global_state, "client", None)
    if jax.process_count() < 2 or client is None:
        return lambda: None
    me, count = jax.process_index(), jax.process_count()
    period, grace = max(timeout_s / 20, 0.5), timeout_s / 2
    stop = threading.Event()

    def watch():
        beat, seen, unreachable = 0, {}, None  # seen: peer -> (its counter, when it changed)
        while not stop.wait(period):
            now = time.monotonic()
            try:
                beat += 1
                client.key_value_set(f"pisa_jax/alive/{me}", str(beat), allow_overwrite=True)
                values = {}
                for peer in set(range(count)) - {me}:
                    try:
                        values[peer] = client.key_value_try_get(f"pisa_jax/alive/{peer}")
                    except Exception:  # noqa: BLE001 - not beating yet
                        values[peer] = None
                unreachable = None
            except Exception:  # noqa: BLE001 - the coordination service itself is gone
                unreachable = unreachable or now
                if now - unreachable > grace and not stop.is_set():
                    on_lost(f"process {me}: the coordination service (process 0) has not "
                            f"answered for {grace:.0f} s: it died or hangs")
                    return
                continue
            for peer, value in values.items():
                if value is None:
                    continue  # only a peer that has beaten once can fall silent
                if seen.get(peer, (None,))[0] != value:
                    seen[peer] = (value, now)
                elif now - seen[peer][1] > grace and not stop.is_set():
                    on_lost(f"process {me}: process {peer} of this multi-host run has shown no "
                            f"sign of life for {grace:.0f} s: it died or hangs")
                    return

    threading.Thread(target=watch, name="pisa_jax_watch_peers", daemon=True).start()
    return stop.set


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


def barrier(name: str) -> None:
    """Every process waits here for the others (a no-op on one process); `name` is unique per
    barrier. Through the coordination service: nothing to compile."""
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost
        multihost.sync_global_processes(name)


def replicate(tree, devices=None, *, donated: bool = False):
    """One copy of every leaf on each local device: arrays [local_devices, ...] for pmap.

    The sharding is the one pmap gives its outputs (a mesh axis named like the pmap axis), so
    the step compiles once: a state with any other sharding would be recompiled for at step 2.

    `donated`: for a state that a step will donate (the train state); `tree`'s JAX arrays are
    consumed. The copies are then written by one XLA program, into buffers XLA owns, each
    array's first copy in place of the array itself where XLA can. Through `jax.device_put`, a
    CPU wraps an aligned host array in place instead of copying it (with one device or four;
    jax 0.10-0.12 do so even with `may_alias=False`), and XLA cannot reuse a buffer it does not
    own: the first step wrote a whole second state beside the first, and a copy made here
    instead would hold two states at once (R34 + R34 at the second benchmark shapes, a 0.95 GiB
    state: the process's peak 3.04 GiB, 2.50 with such a copy, 2.21 this way; tcmalloc).
    """
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (BATCH_AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))
    if donated:
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        # consumed: the JAX arrays that appear once (one in two places cannot be donated: XLA
        # would write over what it still reads) and that the program may take as they are
        # (uncommitted, or on exactly these devices); the rest is read, and an array committed
        # elsewhere copied here first (device_put's own donate=True crashed jax 0.10.2 then)
        uses = collections.Counter(id(x) for x in leaves)
        consumed = [i for i, x in enumerate(leaves) if isinstance(x, jax.Array)
                    and uses[id(x)] == 1
                    and (not x.committed or x.sharding.device_set == set(devices))]
        kept = sorted(set(range(len(leaves))) - set(consumed))
        everywhere = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        read = [jax.device_put(leaves[i], everywhere) if isinstance(leaves[i], jax.Array)
                else leaves[i] for i in kept]
        stack = jax.jit(functools.partial(_stacked_copies, copies=len(devices)),
                        out_shardings=sharding, donate_argnums=0)
        outputs = stack([leaves[i] for i in consumed], read)
        ordered = dict(zip(consumed + kept, outputs[0] + outputs[1]))
        return jax.tree_util.tree_unflatten(treedef, [ordered[i] for i in range(len(leaves))])

    def put(x):
        x = np.asarray(jax.device_get(x))
        return jax.device_put(np.broadcast_to(x, (len(devices),) + x.shape), sharding)

    return jax.tree_util.tree_map(put, tree)


def _stacked_copies(consumed, kept, copies: int):
    """Every leaf x -> [copies, *x.shape], each copy equal to x."""
    return jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x[None], (copies,) + x.shape), (consumed, kept))


def unreplicate_to_host(tree, *, copy: bool = True):
    """numpy copy of the first local replica: what checkpoints and reports store.

    Reads the first addressable shard directly (no indexing program to compile per leaf
    shape, and valid on every host of a multi-host run). On a CPU np.asarray views the device
    buffer that the next step donates, so by default each leaf is copied, for a caller that
    keeps it. `copy=False` leaves those views to a reader that copies them before it returns:
    a checkpoint save (orbax deep-copies host arrays before `save` returns and writes them in
    the background; `tests/train/test_checkpoints.py` holds it to that), which then holds one
    copy of the state, not two (R34 + R34: the training process's peak 4.65 -> 3.56 GB).
    """
    def first(x):
        replica = np.asarray(x.addressable_shards[0].data if isinstance(x, jax.Array) else x)[0]
        return np.array(replica, copy=True) if copy else replica
    return jax.tree_util.tree_map(first, tree)
