"""A whole split of decoded samples in device memory, and the per-step plans that index it.

On a GPU the model step of a small net takes milliseconds, less than assembling and copying a
batch of uint8 frames from the host. When both splits fit in a share of the device's memory
they are uploaded once (every local device holds a copy), and the steps gather their own rows:
    data = DeviceSplit.upload(dataset.train, mesh)   # video uint8 [n, clips, T, H, W, 3] ...
    plan = data.train_plan(global_batch_size=32, seed=0, epoch=e, flip=True)
    state, metrics = train_step(state, data.arrays, plan)   # the step reads its step number
The plan holds the same order and flips as the host path's `train_batches` (both come from
`pipeline.epoch_order`), so the steps see bitwise the same batches in either mode, and a run
resumes exactly in either. Per epoch the host sends one plan (n int32 + n bools); per step
nothing. Flipping and normalisation happen inside the step (`gather_batch`, then the step's
`prepare_inputs`), as for host batches.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from pisa_jax.data.pipeline import (BATCH_AXIS, _assemble, epoch_order, eval_steps,
                                    steps_per_epoch)

# "auto" places the splits on the devices when together they take at most this share of one
# device's memory (the rest is the model's: activations, gradients, optimiser state).
DEVICE_MEMORY_SHARE = 0.5
BACKENDS_WITH_DEVICE_DATA = ("gpu", "cuda", "rocm", "tpu")  # "auto": never on CPU (no gain)


def split_nbytes(source) -> int:
    """Bytes of a split's decoded arrays (what one device would hold), from its first sample."""
    if len(source) == 0:
        return 0
    sample = source[0]
    return len(source) * sum(int(np.asarray(sample[k]).nbytes)
                             for k in ("video", "spectrogram", "label") if k in sample)


def device_memory_bytes(device) -> int | None:
    """The memory one device offers to arrays, if its backend reports it (CPU: None)."""
    stats = device.memory_stats() or {}
    limit = stats.get("bytes_limit")
    return int(limit) if limit else None


def wanted(mode: str, nbytes: int, device, process_count: int = 1) -> tuple[bool, str]:
    """Whether to keep the splits (`nbytes` together) on the devices, and why, for a mode of
    "auto", "on" or "off". "on" only fails where it cannot work (several processes)."""
    if mode == "off":
        return False, "data_on_device=off"
    if process_count > 1:
        if mode == "on":
            raise ValueError("data_on_device=on works in single-process runs only; use auto or "
                             "off on several hosts")
        return False, "several processes: batches come from each host"
    limit = device_memory_bytes(device)
    fits = limit is not None and nbytes <= DEVICE_MEMORY_SHARE * limit
    size = f"{nbytes / 2**30:.2f} GiB"
    room = "unknown" if limit is None else f"{limit / 2**30:.1f} GiB"
    if mode == "on":
        return True, f"data_on_device=on: {size} per device (device memory {room})"
    if device.platform not in BACKENDS_WITH_DEVICE_DATA:
        return False, f"{device.platform}: batches come from the host"
    if not fits:
        return False, (f"the splits ({size}) exceed {DEVICE_MEMORY_SHARE:.0%} of device memory "
                       f"({room}): batches come from the host")
    return True, f"{size} per device, of {room}"


def place_splits(train, test, mode: str, log=print) -> tuple:
    """(train, test) as DeviceSplits on the local devices when `mode` ("auto", "on", "off")
    wants them there, else unchanged; logs the choice and why."""
    import jax
    use, why = wanted(mode, split_nbytes(train) + split_nbytes(test), jax.local_devices()[0],
                      jax.process_count())
    if not use:
        log(f"data: batches assembled on the host ({why})")
        return train, test
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()), (BATCH_AXIS,))
    placed = DeviceSplit.upload(train, mesh), DeviceSplit.upload(test, mesh)
    log(f"data: both splits kept in device memory ({why}); batches are gathered there")
    return placed


@dataclasses.dataclass
class DeviceSplit:
    """One split in device memory: `arrays` {video, spectrogram, label, video_id} with the
    sample axis first, the same whole arrays on every device of `mesh`."""
    arrays: dict
    size: int
    mesh: object                      # jax.sharding.Mesh over the local devices
    _eval_inputs: dict = dataclasses.field(default_factory=dict)

    def __len__(self) -> int:
        return self.size

    @classmethod
    def upload(cls, source, mesh) -> "DeviceSplit":
        import jax
        n = len(source)
        if n == 0:
            raise ValueError("cannot place an empty split on the devices")
        host = _assemble(source, np.arange(n), None, np.ones(n, bool), 1)
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        arrays = {k: jax.device_put(host[k][0], replicated)
                  for k in ("video", "spectrogram", "label", "video_id")}
        return cls(arrays, n, mesh)

    def train_plan(self, *, global_batch_size: int, seed: int, epoch: int, flip: bool) -> dict:
        """The epoch's rows and flips per step and device, on every device:
        {"rows": int32 [steps, devices, b], "flip": bool [steps, devices, b]}."""
        import jax
        devices = self.mesh.devices.size
        plan = train_plan(self.size, global_batch_size, devices, seed=seed, epoch=epoch, flip=flip)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        return {k: jax.device_put(v, replicated) for k, v in plan.items()}

    def eval_inputs(self, global_batch_size: int) -> list[tuple]:
        """(rows int32 [devices, b], mask bool [devices, b]) per evaluation step, on the
        devices; made once per batch size, so evaluating sends nothing per step."""
        if global_batch_size not in self._eval_inputs:
            import jax
            sharding = jax.sharding.NamedSharding(self.mesh,
                                                  jax.sharding.PartitionSpec(BATCH_AXIS))
            rows, mask = eval_plan(self.size, global_batch_size, self.mesh.devices.size)
            self._eval_inputs[global_batch_size] = [
                (jax.device_put(r, sharding), jax.device_put(m, sharding))
                for r, m in zip(rows, mask)]
        return self._eval_inputs[global_batch_size]


def train_plan(num_samples: int, global_batch_size: int, num_devices: int, *, seed: int,
               epoch: int, flip: bool) -> dict[str, np.ndarray]:
    """What `train_batches` gives device d at step s, as indices: rows[s, d] are the samples
    of its slice of the global batch, flip[s, d] their flips (numpy)."""
    if global_batch_size % num_devices:
        raise ValueError(f"global batch {global_batch_size} does not split over "
                         f"{num_devices} devices")
    steps = steps_per_epoch(num_samples, global_batch_size)
    order, flips = epoch_order(num_samples, seed, epoch)
    rows = order[:steps * global_batch_size].reshape(steps, num_devices, -1)
    flip_rows = flips[rows] if flip else np.zeros(rows.shape, bool)
    return {"rows": rows.astype(np.int32), "flip": flip_rows}


def eval_plan(num_samples: int, global_batch_size: int,
              num_devices: int) -> tuple[np.ndarray, np.ndarray]:
    """`eval_batches`' rows as indices: rows, mask [steps, devices, b]; the last batch is
    padded with sample 0 and masked."""
    steps = eval_steps(num_samples, global_batch_size)
    rows = np.arange(steps * global_batch_size).reshape(steps, num_devices, -1)
    mask = rows < num_samples
    return np.where(mask, rows, 0).astype(np.int32), mask


def gather_batch(arrays: dict, rows, flip=None, mask=None) -> dict:
    """Inside a step, on one device: the batch `_assemble` would have built from these rows.
    rows int32 [b]; flip bool [b] mirrors a sample's frames left-right; mask bool [b]."""
    import jax.numpy as jnp
    video = jnp.take(arrays["video"], rows, axis=0)          # uint8 [b, clips, T, H, W, 3]
    if flip is not None:
        mirrored = jnp.flip(video, axis=-2)
        video = jnp.where(flip.reshape((-1,) + (1,) * (video.ndim - 1)), mirrored, video)
    return {"video": video,
            "spectrogram": jnp.take(arrays["spectrogram"], rows, axis=0),
            "label": jnp.take(arrays["label"], rows, axis=0),
            "video_id": jnp.take(arrays["video_id"], rows, axis=0),
            "mask": jnp.ones(rows.shape, bool) if mask is None else mask}
