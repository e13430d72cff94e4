"""Batches for pmap: shuffled and flipped training batches, padded evaluation batches,
prefetching to the devices, and on-device normalisation.

Every batch is a dict of numpy arrays with a leading [local devices, per-device batch] pair:
    video uint8 [D, b, clips, T, H, W, 3], spectrogram (stored dtype) [D, b, H, W] or
    [D, b, clips, H, W], label int32 [D, b], video_id int32 [D, b] (the recording a sample is
    cut from, -1 for samples that carry none), mask bool [D, b].
The global batch is split across hosts: host p takes rows [p * G/P, (p+1) * G/P) of it.

    ds = open_dataset("synthetic_demo")
    for epoch in range(epochs):
        batches = train_batches(ds.train, global_batch_size=8, seed=0, epoch=epoch,
                                num_local_devices=jax.local_device_count())
        for batch in prefetch_to_device(batches):
            state = p_train_step(state, batch)  # prepare_inputs(batch, *NORMALIZATION["hara"])
"""
from __future__ import annotations

import concurrent.futures as futures
import functools
import math
import os
import queue
import threading
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from pisa_jax.data.dataset import SampleSource
from pisa_jax.models import c3d

# The device axis of every batch: the pmap axis of the steps, and the mesh axis that batches
# and replicated states are placed on (one name, so that pmap sees the sharding it produces).
BATCH_AXIS = "batch"

# Mean / std (RGB, for pixels scaled to [0, 1]) of the data the pretrained checkpoints were
# trained on: Hara's Kinetics + Moments-in-Time models, and torchvision's Kinetics models; C3D's
# are those of Parmar's C3D baseline (ImageNet's), whose figure we compare with.
NORMALIZATION = {
    "hara": ((0.4345, 0.4051, 0.3775), (0.2768, 0.2713, 0.2737)),
    "torchvision": ((0.43216, 0.394666, 0.37645), (0.22803, 0.22145, 0.216989)),
    "c3d": (c3d.INPUT_MEAN, c3d.INPUT_STD),
}


def steps_per_epoch(num_samples: int, global_batch_size: int) -> int:
    """Training steps per epoch (the last incomplete batch is dropped)."""
    return num_samples // global_batch_size


def eval_steps(num_samples: int, global_batch_size: int) -> int:
    """Evaluation steps (the last batch is padded)."""
    return math.ceil(num_samples / global_batch_size)


def _hosts(process_index, process_count) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax
        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return process_index, process_count


def _rows_per_host(global_batch_size: int, process_count: int, num_local_devices: int) -> int:
    if global_batch_size % (process_count * num_local_devices):
        raise ValueError(f"global batch {global_batch_size} does not split evenly over "
                         f"{process_count} host(s) x {num_local_devices} device(s)")
    return global_batch_size // process_count


@functools.lru_cache(maxsize=1)
def _readers() -> futures.ThreadPoolExecutor:
    # Reading decompresses zlib (releases the GIL): threads read a batch in parallel.
    return futures.ThreadPoolExecutor(min(8, os.cpu_count() or 1), "pisa-read")


def _mirror_into(out: np.ndarray, video: np.ndarray) -> None:
    """out[..., w, c] = video[..., W-1-w, c]; per channel, ~4x faster than one 3-byte copy."""
    for channel in range(video.shape[-1]):
        out[..., channel] = video[..., ::-1, channel]


def _assemble(source: SampleSource, rows: np.ndarray, flips: np.ndarray | None,
              mask: np.ndarray, num_devices: int) -> dict:
    first = source[rows[0]]
    video = np.empty((len(rows), *first["video"].shape), np.uint8)
    spectrogram = np.empty((len(rows), *first["spectrogram"].shape), first["spectrogram"].dtype)
    label = np.empty(len(rows), np.int32)
    video_id = np.empty(len(rows), np.int32)

    def fill(i: int) -> None:  # in reader threads: numpy copies release the GIL
        sample = first if i == 0 else source[rows[i]]  # row 0 was read to size the arrays
        if flips is not None and flips[i]:  # the same mirror for every frame of the sample
            _mirror_into(video[i], sample["video"])
        else:
            video[i] = sample["video"]
        spectrogram[i] = sample["spectrogram"]
        label[i] = sample["label"]
        video_id[i] = sample.get("video_id", -1)

    list(_readers().map(fill, range(len(rows))))
    batch = {"video": video, "spectrogram": spectrogram, "label": label, "video_id": video_id,
             "mask": mask}
    per_device = len(rows) // num_devices
    return {k: v.reshape(num_devices, per_device, *v.shape[1:]) for k, v in batch.items()}


def epoch_order(num_samples: int, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """The training order of an epoch (a permutation of the sample indices, int64 [n]) and each
    sample's horizontal flip (bool [n], indexed by sample): functions of (seed, epoch) only.
    Both input paths (batches from the host, or gathered on the device) use these."""
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    flips = np.random.default_rng([seed, epoch, 1]).integers(0, 2, num_samples).astype(bool)
    return order, flips


def train_batches(source: SampleSource, *, global_batch_size: int, num_local_devices: int,
                  seed: int, epoch: int, start_step: int = 0, process_index: int | None = None,
                  process_count: int | None = None, flip: bool = True) -> Iterator[dict]:
    """One epoch of training batches, from step `start_step` on (to resume mid-epoch).

    Order = permutation drawn from (seed, epoch); flip of sample i drawn from (seed, epoch)
    and indexed by i, so neither depends on the number of hosts or on where a run resumed.
    """
    process_index, process_count = _hosts(process_index, process_count)
    per_host = _rows_per_host(global_batch_size, process_count, num_local_devices)
    n = len(source)
    order, flips = epoch_order(n, seed, epoch)
    for step in range(start_step, steps_per_epoch(n, global_batch_size)):
        rows = order[step * global_batch_size:(step + 1) * global_batch_size]
        rows = rows[process_index * per_host:(process_index + 1) * per_host]
        yield _assemble(source, rows, flips[rows] if flip else None,
                        np.ones(per_host, bool), num_local_devices)


def eval_batches(source: SampleSource, *, global_batch_size: int, num_local_devices: int,
                 process_index: int | None = None,
                 process_count: int | None = None) -> Iterator[dict]:
    """Every sample once, in order; the last batch is padded (with sample 0) and masked."""
    process_index, process_count = _hosts(process_index, process_count)
    per_host = _rows_per_host(global_batch_size, process_count, num_local_devices)
    n = len(source)
    for step in range(eval_steps(n, global_batch_size)):
        rows = np.arange(step * global_batch_size, (step + 1) * global_batch_size)
        rows = rows[process_index * per_host:(process_index + 1) * per_host]
        mask = rows < n
        yield _assemble(source, np.where(mask, rows, 0), None, mask, num_local_devices)


JOIN_TIMEOUT_S = 60.0  # how long a closed prefetch waits for its producer's last batch


def prefetch_to_device(iterator: Iterable[dict], size: int = 2,
                       devices: Sequence | None = None) -> Iterator[dict]:
    """Puts batches on the local devices (leading axis split across them, as pmap expects)
    from a background thread, `size` batches ahead of the consumer."""
    import jax
    devices = list(devices or jax.local_devices())
    mesh = jax.sharding.Mesh(np.array(devices), (BATCH_AXIS,))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(BATCH_AXIS))
    buffer: queue.Queue = queue.Queue(maxsize=size)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:  # False once the consumer has gone
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for batch in iterator:
                if not put(jax.tree_util.tree_map(lambda x: jax.device_put(x, sharding), batch)):
                    return
            put(done)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)

    thread = threading.Thread(target=produce, daemon=True, name="prefetch_to_device")
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        # Wait for the producer to finish the batch it holds: a daemon thread still inside
        # jax.device_put when the interpreter exits is torn down in C++ code and aborts the
        # process (SIGABRT, "exception not rethrown") after a clean stop.
        thread.join(timeout=JOIN_TIMEOUT_S)


def prepare_inputs(batch: dict, mean: Sequence[float], std: Sequence[float], dtype=None) -> dict:
    """On device, inside the step: video uint8 -> (x / 255 - mean) / std; spectrogram -> [0, 1].

    Returns a new dict (the input is not modified); both in `dtype` (default float32).
    """
    import jax.numpy as jnp
    dtype = dtype or jnp.float32
    out = dict(batch)
    if "video" in batch:
        video = batch["video"].astype(jnp.float32) / 255.0
        out["video"] = ((video - jnp.asarray(mean, jnp.float32))
                        / jnp.asarray(std, jnp.float32)).astype(dtype)
    if "spectrogram" in batch:
        spec = batch["spectrogram"]
        scale = 255.0 if spec.dtype == jnp.uint8 else 1.0
        out["spectrogram"] = (spec.astype(jnp.float32) / scale).astype(dtype)
    return out
