"""Batches: shapes, deterministic shuffling and flips, host split, padded evaluation,
prefetch to 4 CPU devices, on-device normalisation; the real synthetic dataset."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.data.dataset import open_path
from pisa_jax.data.pipeline import (NORMALIZATION, eval_batches, eval_steps, prefetch_to_device,
                                    prepare_inputs, steps_per_epoch, train_batches)


class FakeSource:
    """Sample i: video whose pixels hold i, with a left/right asymmetry to see flips."""

    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        video = np.full((2, 3, 4, 4, 3), i, np.uint8)
        video[..., 0, :] = 200                       # column 0 marks "left"
        return {"video": video, "spectrogram": np.full((5, 6), i, np.float16),
                "label": np.int32(i % 10), "video_id": np.int32(i // 4)}


def ids(batch):
    return batch["spectrogram"][..., 0, 0].astype(int).ravel()


def epoch(source, **kw):
    args = dict(global_batch_size=8, num_local_devices=4, seed=3, epoch=0, process_index=0,
                process_count=1)
    return list(train_batches(source, **{**args, **kw}))


def test_train_shapes_and_epoch_coverage():
    source = FakeSource(21)
    batches = epoch(source)
    assert len(batches) == steps_per_epoch(21, 8) == 2            # last partial batch dropped
    b = batches[0]
    assert b["video"].shape == (4, 2, 2, 3, 4, 4, 3) and b["video"].dtype == np.uint8
    assert b["spectrogram"].shape == (4, 2, 5, 6) and b["label"].dtype == np.int32
    assert b["mask"].all()
    seen = np.concatenate([ids(b) for b in batches])
    assert len(set(seen)) == 16
    np.testing.assert_array_equal(np.concatenate([b["label"].ravel() for b in batches]),
                                  seen.astype(int) % 10)


def test_shuffle_and_flip_are_determined_by_seed_and_epoch():
    source = FakeSource(40)
    first, again = epoch(source), epoch(source)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a["video"], b["video"])
    other = epoch(source, epoch=1)
    assert not np.array_equal(ids(first[0]), ids(other[0]))
    flips = [b["video"][..., 0, :].max(axis=(2, 3, 4, 5)) != 200 for b in first]
    flipped = np.concatenate([f.ravel() for f in flips])
    assert 0 < flipped.sum() < flipped.size                     # some flipped, some not
    video = first[0]["video"].reshape(8, 2, 3, 4, 4, 3)
    for sample, flip in zip(video, flips[0].ravel()):           # whole sample mirrored
        assert (sample[..., 3 if flip else 0, :] == 200).all()
    unflipped = epoch(source, flip=False)
    assert all((b["video"][..., 0, :] == 200).all() for b in unflipped)


def test_hosts_take_their_slice_and_resume_mid_epoch():
    source = FakeSource(40)
    single = epoch(source)
    hosts = [epoch(source, num_local_devices=2, process_index=p, process_count=2)
             for p in range(2)]
    for step, whole in enumerate(single):
        joined = np.concatenate([ids(hosts[p][step]) for p in range(2)])
        np.testing.assert_array_equal(joined, ids(whole))
        flips = np.concatenate([hosts[p][step]["video"].reshape(4, -1, 4, 3)[:, :, 0].max((1, 2))
                                for p in range(2)])
        np.testing.assert_array_equal(flips, whole["video"].reshape(8, -1, 4, 3)[:, :, 0]
                                      .max((1, 2)))
    resumed = epoch(source, start_step=3)
    assert len(resumed) == len(single) - 3
    np.testing.assert_array_equal(resumed[0]["video"], single[3]["video"])


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_covers_every_sample_once(process_count):
    source = FakeSource(21)
    got = []
    for p in range(process_count):
        batches = list(eval_batches(source, global_batch_size=8, process_index=p,
                                    num_local_devices=4 // process_count,
                                    process_count=process_count))
        assert len(batches) == eval_steps(21, 8) == 3
        for b in batches:
            got += list(ids(b)[b["mask"].ravel()])
            # every sample carries its recording, for video-level scores
            np.testing.assert_array_equal(b["video_id"], ids(b).reshape(b["mask"].shape) // 4)
    assert sorted(got) == list(range(21))


def test_prefetch_to_device_shards_over_local_devices():
    assert jax.local_device_count() == 4
    batches = epoch(FakeSource(24))
    on_device = list(prefetch_to_device(iter(batches), size=2))
    assert len(on_device) == 3
    for host, dev in zip(batches, on_device):
        assert len(dev["video"].sharding.device_set) == 4
        np.testing.assert_array_equal(np.asarray(dev["video"]), host["video"])
    summed = jax.pmap(lambda b: jax.lax.psum(b["label"].sum(), "d"), axis_name="d")(on_device[0])
    assert int(summed[0]) == batches[0]["label"].sum()

    def broken():
        yield batches[0]
        raise RuntimeError("reader failed")
    with pytest.raises(RuntimeError, match="reader failed"):
        list(prefetch_to_device(broken()))


def test_a_prefetch_closed_early_waits_for_its_producer():
    """A consumer that stops early (a signal, an error) closes the prefetch; its producer must
    be gone by then, not left inside jax.device_put for the interpreter's exit to tear down."""
    import threading
    import time
    batches = epoch(FakeSource(24))

    def slow():  # the producer is busy with the next batch when the consumer stops
        for batch in batches:
            yield batch
            time.sleep(0.5)

    def producers():
        return [t for t in threading.enumerate() if t.name == "prefetch_to_device"]

    assert not producers()
    stream = prefetch_to_device(slow(), size=1)
    next(stream)
    assert len(producers()) == 1
    stream.close()
    assert not producers()


def test_prepare_inputs_normalises_on_device():
    mean, std = NORMALIZATION["hara"]
    batch = {"video": np.full((2, 1, 1, 1, 2, 2, 3), 255, np.uint8),
             "spectrogram": np.full((2, 4, 4), 0.5, np.float16), "label": np.zeros(2, np.int32)}
    out = jax.jit(lambda b: prepare_inputs(b, mean, std, jnp.bfloat16))(batch)
    assert out["video"].dtype == jnp.bfloat16 and out["spectrogram"].dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out["video"], np.float32)[0, 0, 0, 0, 0, 0],
                               (1 - np.array(mean)) / np.array(std), rtol=1e-2)
    assert batch["video"].dtype == np.uint8                       # input untouched
    as_bytes = prepare_inputs({"spectrogram": jnp.full((2, 2), 51, jnp.uint8)}, mean, std)
    np.testing.assert_allclose(as_bytes["spectrogram"], 0.2)


def test_synthetic_dataset_through_the_pipeline(synthetic_tiny):
    ds = open_path(synthetic_tiny.path)
    assert (len(ds.train), len(ds.test)) == (20, 10)
    assert (ds.clips_per_sample, ds.clip_length, ds.image_size) == (2, 8, 32)
    assert ds.spectrogram_shape == (32, 32) and ds.num_classes == 10
    batch = next(train_batches(ds.train, global_batch_size=8, num_local_devices=4, seed=0,
                               epoch=0))
    assert batch["video"].shape == (4, 2, 2, 8, 32, 32, 3)
    assert batch["spectrogram"].shape == (4, 2, 32, 32)
    assert ds.train[3] is ds.train[3]                              # kept in memory
    labels = sorted(int(ds.test[i]["label"]) for i in range(len(ds.test)))
    assert labels == list(range(10))
