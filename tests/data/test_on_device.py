"""Splits in device memory: the batches gathered on 4 CPU devices are bitwise those the host
path assembles (same order, flips, padding and mask), and when `auto` keeps the data there."""
import jax
import numpy as np
import pytest

from pisa_jax.data import on_device
from pisa_jax.data.on_device import DeviceSplit, gather_batch, wanted
from pisa_jax.data.pipeline import BATCH_AXIS, eval_batches, train_batches
from pisa_jax.train.data_parallel import data_parallel

DEVICES = 4


class FakeSource:
    """Sample i: pixels hold i plus a random left/right asymmetry (flips show); float16
    spectrogram; video_id i // 3."""

    def __init__(self, n):
        rng = np.random.default_rng(n)
        self.videos = rng.integers(0, 256, (n, 2, 3, 4, 5, 3), dtype=np.uint8)
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"video": self.videos[i], "spectrogram": np.full((5, 6), i, np.float16),
                "label": np.int32(i % 10), "video_id": np.int32(i // 3)}


def _mesh():
    assert jax.local_device_count() >= DEVICES
    return jax.sharding.Mesh(np.array(jax.local_devices()[:DEVICES]), (BATCH_AXIS,))


@pytest.fixture(scope="module")
def split():
    source = FakeSource(27)
    return source, DeviceSplit.upload(source, _mesh())


def _assert_same_batch(got, want):
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(np.asarray(got[key]), want[key], err_msg=key)


@pytest.mark.parametrize("flip", [True, False])
def test_train_batches_gathered_on_the_devices_equal_the_host_batches(split, flip):
    source, data = split

    def gathered(step_index, arrays, plan):  # what make_train_step(data_on_device=True) reads
        index = (step_index, jax.lax.axis_index(BATCH_AXIS))
        return gather_batch(arrays, plan["rows"][index], plan["flip"][index])

    gather = data_parallel(gathered, replicated_argnums=(1, 2))
    for epoch in (0, 1):
        plan = data.train_plan(global_batch_size=8, seed=5, epoch=epoch, flip=flip)
        host = list(train_batches(source, global_batch_size=8, num_local_devices=DEVICES, seed=5,
                                  epoch=epoch, process_index=0, process_count=1, flip=flip))
        assert plan["rows"].shape == (len(host), DEVICES, 2) == (3, 4, 2)
        for step, want in enumerate(host):
            index = np.full((DEVICES,), step, np.int32)
            _assert_same_batch(gather(index, data.arrays, plan), want)


def test_eval_batches_gathered_on_the_devices_equal_the_host_batches(split):
    source, data = split
    gather = data_parallel(lambda arrays, rows, mask: gather_batch(arrays, rows, mask=mask),
                           replicated_argnums=(0,))
    host = list(eval_batches(source, global_batch_size=8, num_local_devices=DEVICES,
                             process_index=0, process_count=1))
    inputs = data.eval_inputs(8)
    assert len(inputs) == len(host) == 4 and inputs is data.eval_inputs(8)  # made once
    assert not host[-1]["mask"].all()                                       # 27 = 3 * 8 + 3
    for (rows, mask), want in zip(inputs, host):
        _assert_same_batch(gather(data.arrays, rows, mask), want)


class FakeDevice:
    def __init__(self, platform, limit):
        self.platform, self.limit = platform, limit

    def memory_stats(self):
        return None if self.limit is None else {"bytes_limit": self.limit}


def test_auto_keeps_data_on_a_gpu_only_where_it_fits():
    gib = 2**30
    gpu = FakeDevice("gpu", 80 * gib)
    assert wanted("auto", 3 * gib, gpu)[0]
    assert not wanted("auto", 41 * gib, gpu)[0]                   # more than half its memory
    assert not wanted("auto", 1, FakeDevice("cpu", None))[0]       # no gain on a CPU
    assert not wanted("off", 1, gpu)[0]
    assert wanted("on", 1, FakeDevice("cpu", None))[0]             # asked for: done
    assert not wanted("auto", 1, gpu, process_count=2)[0]
    with pytest.raises(ValueError, match="single-process"):
        wanted("on", 1, gpu, process_count=2)


def test_place_splits_follows_the_mode(split):
    source, _ = split
    lines = []
    assert on_device.place_splits(source, source, "off", log=lines.append) == (source, source)
    train, test = on_device.place_splits(source, FakeSource(9), "on", log=lines.append)
    assert isinstance(train, DeviceSplit) and len(train) == 27 and len(test) == 9
    assert train.arrays["video"].sharding.is_fully_replicated
    assert "host" in lines[0] and "device memory" in lines[1]
