"""`data_parallel(fn)`: what `jax.pmap(fn, axis_name=BATCH_AXIS)` computes, compiled with the
project's XLA options.

`jax.pmap` takes no compiler options, and since jax 0.8 it is itself `jax.jit` over a
`shard_map`; this builds the same thing directly, so the compile can be given
`pisa_jax.xla_options.cpu_compiler_options()` (on CPU: YNNPACK off, which measured 2-3x on the
whole training step). What a caller sees is pmap's contract:
- a mapped argument has a leading axis of one entry per local device ([D, ...]); inside `fn`
  that axis is gone, and `lax.psum`/`pmean`/`all_gather`/`axis_index` over BATCH_AXIS work as
  under pmap; outputs get the axis back ([D, ...] per host);
- a replicated argument (`replicated_argnums`) is the same whole array on every device, passed
  as is (place it once with `replicated_sharding` so no call copies it);
- `donate_argnums` donates like pmap's;
- a mapped argument in `block_argnums` reaches `fn` as this device's block instead, its leading
  axis kept ([1, ...]), and the outputs at `block_outputs` (positions in fn's output tuple) are
  returned as blocks and get no axis added. A train step updates its donated state this way:
  XLA updates a donated buffer in place only when the last operation writing it has the
  buffer's own shape; computed on the squeezed view and then expanded, every parameter and
  optimizer moment was copied on each step instead.
The mesh is the first D devices (one process), or every process's local devices process by
process (several: host-local arrays are converted to global ones and back, as pmap does). One
compilation per input shape, cached by jit, and by JAX's persistent cache where it is on.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from pisa_jax.data.pipeline import BATCH_AXIS
from pisa_jax.xla_options import cpu_compiler_options


def mesh_of(local_axis_size: int) -> Mesh:
    """The devices a mapped axis of `local_axis_size` entries per process runs on."""
    if jax.process_count() == 1:
        return Mesh(np.array(jax.devices()[:local_axis_size]), (BATCH_AXIS,))
    if local_axis_size != jax.local_device_count():
        raise ValueError(f"a multi-process step maps all {jax.local_device_count()} local "
                         f"devices, got an axis of {local_axis_size}")
    devices = [d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)]
    return Mesh(np.array(devices), (BATCH_AXIS,))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def unblock(tree):
    """A device's block [1, ...] -> its value [...] (every leaf)."""
    return jax.tree_util.tree_map(lambda x: lax.squeeze(x, [0]), tree)


def as_block(tree):
    """A value [...] -> a device's block [1, ...] (every leaf)."""
    return jax.tree_util.tree_map(lambda x: lax.expand_dims(x, [0]), tree)


def data_parallel(fn: Callable, *, replicated_argnums: Sequence[int] = (),
                  donate_argnums: Sequence[int] = (), block_argnums: Sequence[int] = (),
                  block_outputs: Sequence[int] = (),
                  compiler_options: dict | None = None) -> Callable:
    """`fn(*args)` per device, as pmap(fn, axis_name=BATCH_AXIS) runs it (see the module doc).

    compiler_options: for every compile (default: `cpu_compiler_options()`, empty off CPU).
    The result has `.lower(*args)` too (a jit `Lowered`: `.compile().as_text()`,
    `.cost_analysis()`)."""
    replicated = frozenset(replicated_argnums)
    blocks, block_outputs = frozenset(block_argnums), frozenset(block_outputs)
    donate = tuple(donate_argnums)
    jitted: dict[int, tuple[Mesh, Callable]] = {}

    def specs(count: int) -> tuple:
        return tuple(PartitionSpec() if i in replicated else PartitionSpec(BATCH_AXIS)
                     for i in range(count))

    def per_device(*args):
        args = [a if i in replicated or i in blocks else unblock(a) for i, a in enumerate(args)]
        out = fn(*args)
        if not block_outputs:
            return as_block(out)
        return tuple(o if i in block_outputs else as_block(o) for i, o in enumerate(out))

    def compiled_for(args) -> tuple[Mesh, Callable]:
        mapped = [a for i, a in enumerate(args) if i not in replicated]
        size = int(np.shape(jax.tree_util.tree_leaves(mapped)[0])[0])
        if size not in jitted:
            mesh = mesh_of(size)
            in_specs = specs(len(args))
            body = jax.shard_map(per_device, mesh=mesh, in_specs=in_specs,
                                 out_specs=PartitionSpec(BATCH_AXIS), check_vma=False)
            options = cpu_compiler_options() if compiler_options is None else compiler_options
            jitted[size] = (mesh, jax.jit(
                body, donate_argnums=donate, compiler_options=options or None,
                in_shardings=tuple(NamedSharding(mesh, s) for s in in_specs)))
        return jitted[size]

    def to_global(mesh, args):
        if jax.process_count() == 1:
            return args
        from jax.experimental import multihost_utils
        return multihost_utils.host_local_array_to_global_array(tuple(args), mesh,
                                                                specs(len(args)))

    def call(*args):
        mesh, step = compiled_for(args)
        out = step(*to_global(mesh, args))
        if jax.process_count() == 1:
            return out
        from jax.experimental import multihost_utils
        return multihost_utils.global_array_to_host_local_array(out, mesh,
                                                                PartitionSpec(BATCH_AXIS))

    def lower(*args):
        mesh, step = compiled_for(args)
        return step.lower(*to_global(mesh, args))

    call.lower = lower
    return call
