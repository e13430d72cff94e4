"""The pmap train step: data parallelism is exact, the multimodal head is isolated, and the
step a GPU traces calls no CPU handler and computes the same."""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pisa_jax.data.on_device import DeviceSplit
from pisa_jax.data.pipeline import NORMALIZATION
from pisa_jax.data.pipeline import prepare_inputs as prepare
from pisa_jax.models import SkillModel, c3d
from pisa_jax.native import adam as native_adam
from pisa_jax.native import onednn
from pisa_jax.train.distributed import replicate
from pisa_jax.train.config import TrainConfigError, preset
from pisa_jax.train.state import (InputSpec, create_run, create_train_state, init_model_variables,
                                  make_optimizer)
from pisa_jax.train.steps import (input_normalization, make_eval_step, make_train_step,
                                  predict_split, train_step_inputs)
from pisa_jax.xla_options import cpu_compiler_options

MEAN, STD = NORMALIZATION["hara"]
GLOBAL_BATCH = 8
CONFIG = preset("smoke")  # float32, Hara normalisation, both modalities: what the steps read


def adam(learning_rate, weight_decay):
    return make_optimizer(CONFIG.replace(learning_rate=learning_rate, weight_decay=weight_decay))


def tiny_model(dropout=0.0, bn_axis_name=None):
    return SkillModel(visual_depth=10, aural_depth=18, num_classes=10, dropout=dropout, hidden=8,
                      base_width=2, bn_axis_name=bn_axis_name)


def global_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {"video": rng.integers(0, 256, (GLOBAL_BATCH, 2, 4, 16, 16, 3), dtype=np.uint8),
            "spectrogram": rng.random((GLOBAL_BATCH, 16, 16), dtype=np.float32),
            "label": rng.integers(0, 10, GLOBAL_BATCH).astype(np.int32),
            "video_id": np.arange(GLOBAL_BATCH, dtype=np.int32) // 3,
            "mask": np.ones(GLOBAL_BATCH, bool)}


def shard(batch, devices):
    """[B, ...] -> [devices, B / devices, ...]"""
    return jax.tree_util.tree_map(lambda x: x.reshape((devices, -1) + x.shape[1:]), batch)


def replicate_n(tree, n):
    return replicate(tree, jax.local_devices()[:n])


@functools.lru_cache(maxsize=1)
def _variables():
    batch = global_batch()
    video = prepare(batch, MEAN, STD, jnp.float32)["video"][:1]
    return init_model_variables(tiny_model(), 0, video, jnp.asarray(batch["spectrogram"][:1]))


def fresh_state(tx):
    return create_train_state(_variables(), tx, 0)


def run_step(devices, tx, *, loss_weights=None, steps=1):
    model = tiny_model(bn_axis_name="batch")
    step = make_train_step(model, tx, CONFIG, loss_weights=loss_weights)
    state = replicate_n(fresh_state(tx), devices)
    for i in range(steps):
        state, metrics = step(state, shard(global_batch(seed=i), devices))
    return jax.device_get(state), jax.device_get(metrics)


@pytest.mark.slow
def test_four_devices_equal_one_device_on_the_global_batch():
    assert jax.local_device_count() >= 4
    tx = adam(1e-2, 0.1)
    one, m1 = run_step(1, tx, steps=2)
    four, m4 = run_step(4, tx, steps=2)
    # every replica identical
    for leaf in jax.tree_util.tree_leaves(four.params) + jax.tree_util.tree_leaves(four.batch_stats):
        np.testing.assert_array_equal(leaf[0], leaf[3])
    # and equal to the single-device step on the whole batch
    for name in ("params", "batch_stats", "opt_state"):
        jax.tree_util.tree_map(
            lambda a, b: np.testing.assert_allclose(a[0], b[0], rtol=2e-4, atol=2e-5),
            getattr(one, name), getattr(four, name))
    assert set(m4) >= {"loss", "accuracy_multimodal", "loss_visual"}
    np.testing.assert_allclose(m1["loss"][0], m4["loss"][0], rtol=1e-5)
    assert int(four.step[0]) == 2
    assert jax.tree_util.tree_leaves(four.batch_stats)  # BN statistics exist and were compared


@pytest.mark.slow
def test_multimodal_loss_moves_only_its_head_and_dropout_differs_per_device():
    """A step on the multimodal loss alone (weight decay 0: coupled L2 would move everything)
    leaves both backbones and the unimodal heads unchanged. The same sample on two devices:
    with equal dropout keys the pmean'd update would equal a one-device step on that sample
    (synced BN over two copies = BN over one), so the heads must differ."""
    tx = adam(1e-2, 0.0)
    step = make_train_step(tiny_model(dropout=0.5, bn_axis_name="batch"), tx, CONFIG,
                           loss_weights={"visual": 0.0, "aural": 0.0, "multimodal": 1.0})
    one = jax.tree_util.tree_map(lambda x: x[None, :1], global_batch())      # [1, 1, ...]
    two = jax.tree_util.tree_map(lambda x: np.concatenate([x, x]), one)      # [2, 1, ...]
    before = fresh_state(tx)
    s1, _ = step(replicate_n(before, 1), one)
    s2, _ = step(replicate_n(before, 2), two)
    for after in (s1, s2):
        for part in ("visual_backbone", "aural_backbone", "visual_head", "aural_head"):
            jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a, b[0]),
                                   before.params[part], after.params[part])
        changed = jax.tree_util.tree_map(lambda a, b: not np.array_equal(a, b[0]),
                                         before.params["multimodal_head"],
                                         after.params["multimodal_head"])
        assert all(jax.tree_util.tree_leaves(changed))  # the head itself learns
    head1 = np.asarray(s1.params["multimodal_head"]["out"]["kernel"][0])
    head2 = np.asarray(s2.params["multimodal_head"]["out"]["kernel"][0])
    assert not np.allclose(head1, head2, atol=1e-7)


def test_eval_step_gathers_the_global_batch():
    tx = adam(1e-3, 0.0)
    state = fresh_state(tx)
    step = make_eval_step(tiny_model(), CONFIG)
    variables = replicate_n({"params": state.params, "batch_stats": state.batch_stats}, 4)
    batch = global_batch()
    batch["mask"][-1] = False
    out = jax.device_get(step(variables, shard(batch, 4)))
    assert out["probs"]["multimodal"].shape == (4, 4, 2, 10)   # [local, global devices, b, 10]
    np.testing.assert_array_equal(out["label"][0].reshape(-1), batch["label"])
    np.testing.assert_array_equal(out["mask"][2].reshape(-1), batch["mask"])
    np.testing.assert_array_equal(out["video_id"][1].reshape(-1), batch["video_id"])
    np.testing.assert_allclose(out["probs"]["visual"][0].sum(-1), 1.0, rtol=1e-5)


def test_a_c3d_training_step_with_its_own_normalisation():
    """C3D + R18-2D through create_run and the pmap step, at the smallest clip C3D takes
    (16 frames of 16x16); the video is normalised with C3D's mean and std, not Hara's."""
    config = CONFIG.replace(visual_backbone="c3d")
    assert input_normalization(config) == "c3d" and input_normalization(CONFIG) == "hara"
    assert NORMALIZATION["c3d"] == (c3d.INPUT_MEAN, c3d.INPUT_STD)
    spec = InputSpec(clips=1, clip_length=16, image_size=16, spectrogram_shape=(16, 16),
                     num_classes=10)
    run = create_run(config, spec)
    initial = run.initial_state()
    assert "fc6" in initial.params["visual_backbone"]
    rng = np.random.default_rng(0)
    batch = {"video": rng.integers(0, 256, (2, 1, 16, 16, 16, 3), dtype=np.uint8),
             "spectrogram": rng.random((2, 16, 16), dtype=np.float32),
             "label": np.array([1, 7], np.int32), "video_id": np.array([0, 1], np.int32),
             "mask": np.ones(2, bool)}
    step = make_train_step(run.model, run.tx, config)
    state, metrics = step(replicate_n(initial, 1), shard(batch, 1))
    assert np.isfinite(float(metrics["loss"][0])) and int(state.step[0]) == 1
    before = initial.params["visual_backbone"]["conv1"]["kernel"]
    assert not np.allclose(before, np.asarray(state.params["visual_backbone"]["conv1"]["kernel"][0]))
    with pytest.raises(TrainConfigError, match="c3d needs clips of at least 16 frames"):
        create_run(config, dataclasses.replace(spec, clip_length=8))


class ArraySource:
    """A split of n random samples, indexable like a SampleSource."""

    def __init__(self, n, seed=0):
        rng = np.random.default_rng(seed)
        self.video = rng.integers(0, 256, (n, 2, 4, 16, 16, 3), dtype=np.uint8)
        self.spectrogram = rng.random((n, 16, 16), dtype=np.float32).astype(np.float16)
        self.label = rng.integers(0, 10, n).astype(np.int32)

    def __len__(self):
        return len(self.label)

    def __getitem__(self, i):
        return {"video": self.video[i], "spectrogram": self.spectrogram[i],
                "label": self.label[i], "video_id": np.int32(i // 2)}


@pytest.mark.slow
def test_steps_on_device_data_equal_steps_on_host_batches():
    """Three steps over an epoch boundary (2 steps per epoch), from host batches and from the
    splits in device memory (rows chosen by the state's step number): the same states; the
    eval step scores the padded test split the same way too."""
    tx = adam(1e-2, 0.1)
    config = CONFIG.replace(batch_size=8, seed=3)
    train, test = ArraySource(17), ArraySource(11, seed=1)
    mesh = jax.sharding.Mesh(np.array(jax.local_devices()[:4]), ("batch",))
    placed = {"host": (train, test),
              "device": (DeviceSplit.upload(train, mesh), DeviceSplit.upload(test, mesh))}
    states, scores = {}, {}
    for mode, (train_source, test_source) in placed.items():
        on = mode == "device"
        step = make_train_step(tiny_model(bn_axis_name="batch"), tx, config, data_on_device=on)
        state = replicate_n(fresh_state(tx), 4)
        for epoch, first in ((0, 0), (1, 0)):
            for inputs in train_step_inputs(train_source, config, epoch=epoch, start_step=first):
                state, _ = step(state, *inputs)
                if int(state.step[0]) == 3:
                    break
        states[mode] = jax.device_get(state)
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        scores[mode] = predict_split(make_eval_step(tiny_model(), config, data_on_device=on),
                                     variables, test_source, global_batch_size=8)
    # The batches are bitwise equal (tests/data/test_on_device.py); the two programs fuse the
    # normalisation differently, which moves float32 results by an ulp, and Adam's first steps
    # (update ~ lr * sign) magnify that for tiny gradients: the 1-vs-4-device tolerance. A
    # wrong row or flip moves parameters by ~lr = 1e-2.
    close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5)
    assert int(states["device"].step[0]) == 3
    jax.tree_util.tree_map(close, states["host"], states["device"])
    np.testing.assert_array_equal(scores["host"].labels, test.label)
    np.testing.assert_array_equal(scores["device"].labels, test.label)
    np.testing.assert_array_equal(scores["device"].video_ids, np.arange(11) // 2)
    jax.tree_util.tree_map(close, scores["host"].probs, scores["device"].probs)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="CPU compiler options")
def test_the_project_options_update_the_donated_parameters_in_place_with_the_same_bits():
    """With copy insertion's region analysis (pisa_jax.xla_options) XLA no longer copies each
    donated parameter before updating it; the step's results stay the same to the bit."""
    tx = adam(1e-3, 0.1)
    batch = shard(global_batch(), 1)
    copies, states = [], []
    for options in ({"xla_cpu_experimental_ynn_fusion_type": ""}, cpu_compiler_options()):
        step = make_train_step(tiny_model(), tx, CONFIG, compiler_options=options)
        state = replicate_n(fresh_state(tx), 1)
        compiled = step.lower(state, batch).compile()
        copies.append(compiled.as_text().count(" copy("))
        for _ in range(2):
            state, _ = compiled(state, batch)
        states.append(jax.device_get(state))
    assert copies[1] < copies[0], copies
    jax.tree_util.tree_map(np.testing.assert_array_equal, states[0], states[1])


GPU_SPEC = InputSpec(clips=2, clip_length=4, image_size=16, spectrogram_shape=(16, 16),
                     num_classes=10)


def traced_steps(config, monkeypatch, backend, *, spec=GPU_SPEC, batch_at=global_batch,
                 steps=2):
    """`steps` train steps traced as on `backend` (what `jax.default_backend()` answers while
    the model and optimiser trace; they still run on this CPU) on the global batches
    `batch_at(0)`, `batch_at(1)`, ...: the StableHLO of the train and eval steps, the first
    state, the states and metrics after each step."""
    with monkeypatch.context() as patch:
        patch.setattr(jax, "default_backend", lambda: backend)
        run = create_run(config, spec)
        step = make_train_step(run.model, run.tx, config)
        state = replicate_n(run.initial_state(), 1)
        text = step.lower(state, shard(batch_at(0), 1)).as_text()
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        text += make_eval_step(run.eval_model, config).lower(
            variables, shard(batch_at(0), 1)).as_text()
        states, metrics = [jax.device_get(state)], []
        for seed in range(steps):
            state, step_metrics = step(state, shard(batch_at(seed), 1))
            states.append(jax.device_get(state))
            metrics.append(jax.device_get(step_metrics))
        return text, states, metrics


def cpu_lowering():
    """oneDNN's where it is installed (an explicit "onednn" fails without it), else "auto"."""
    return "onednn" if onednn.available() else "auto"


def update_directions(states):
    return jax.tree_util.tree_map(lambda a, b: np.sign(b - a), states[0].params, states[1].params)


@pytest.mark.slow
def test_the_step_a_gpu_traces_calls_no_cpu_handler_and_computes_what_the_cpus_does(
        monkeypatch):
    """No GPU has run this project, so the GPU's form of the step (native 3D convolutions,
    XLA's max-pool, BatchNorm and Adam; in bf16 the stem padded to 8 channels) is traced here
    against the CPU's with the lowering "onednn" where oneDNN is installed (and the native
    handlers where they build): the GPU's program must call none of the handlers, which are
    registered for the CPU only, and must compute the same steps."""
    runs = {}
    for precision in ("float32", "bfloat16"):
        config = CONFIG.replace(precision=precision, conv_lowering=cpu_lowering(),
                                weight_decay=0.1, learning_rate=1e-2)
        for backend in ("cpu", "gpu"):
            runs[precision, backend] = traced_steps(config, monkeypatch, backend)
    for precision in ("float32", "bfloat16"):
        (cpu_text, cpu_states, cpu_metrics), (gpu_text, gpu_states, gpu_metrics) = (
            runs[precision, "cpu"], runs[precision, "gpu"])
        assert "Pisa" not in gpu_text
        assert ("Pisa" in cpu_text) == native_adam.available()  # the reference uses them
        jax.tree_util.tree_map(np.testing.assert_array_equal, cpu_states[0], gpu_states[0])
    # float32: as close as 1 and 4 devices are (see the on-device test); Adam's moments hold
    # the gradients themselves, which BatchNorm's sums (float64 in the native ones) and the
    # convolutions' orders of summation move by up to ~0.05 % of a tensor's largest value here.
    close = functools.partial(np.testing.assert_allclose, rtol=2e-4, atol=2e-5)
    (_, cpu_states, cpu_metrics), (_, gpu_states, gpu_metrics) = (runs["float32", "cpu"],
                                                                  runs["float32", "gpu"])
    for part in ("params", "batch_stats"):
        jax.tree_util.tree_map(close, getattr(cpu_states[2], part), getattr(gpu_states[2], part))
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(
        a, b, rtol=0, atol=2e-3 * np.abs(a).max() + 1e-9), cpu_states[2].opt_state,
        gpu_states[2].opt_state)
    jax.tree_util.tree_map(close, cpu_metrics, gpu_metrics)
    # bf16 rounds the activations, and Adam's first update is ~ lr * sign(g), so a gradient near
    # 0 steps either way: the first step's losses, and its update directions against float32's
    # (a wrong gradient agrees on about half of a tensor; bf16 here on 98 % of all elements).
    jax.tree_util.tree_map(functools.partial(np.testing.assert_allclose, rtol=1e-2),
                           runs["bfloat16", "cpu"][2][0], runs["bfloat16", "gpu"][2][0])
    reference = update_directions(runs["float32", "cpu"][1])
    for backend in ("cpu", "gpu"):
        directions = update_directions(runs["bfloat16", backend][1])
        agree = jax.tree_util.tree_map(lambda a, b: (np.sum(a == b), a.size), reference,
                                       directions)
        counts = np.array(jax.tree_util.tree_leaves(agree)).reshape(-1, 2)
        assert counts[:, 0].sum() / counts[:, 1].sum() > 0.95, backend
        large = counts[counts[:, 1] >= 100]
        assert (large[:, 0] / large[:, 1]).min() > 0.75, (backend, agree)


@pytest.mark.parametrize("precision", ["float32", "bfloat16"])
def test_the_c3d_step_a_gpu_traces_calls_no_cpu_handler(monkeypatch, precision):
    """C3D's own layers too (its max-pools, Dense and bias gradients): traced only, the train
    and eval steps."""
    config = CONFIG.replace(visual_backbone="c3d", precision=precision,
                            conv_lowering=cpu_lowering())
    spec = InputSpec(clips=1, clip_length=16, image_size=16, spectrogram_shape=(16, 16),
                     num_classes=10)
    batch = {name: value[:2] for name, value in global_batch().items()}
    batch["video"] = np.zeros((2, 1, 16, 16, 16, 3), np.uint8)  # C3D's smallest clip
    texts = {backend: traced_steps(config, monkeypatch, backend, spec=spec,
                                   batch_at=lambda seed: batch, steps=0)[0]
             for backend in ("cpu", "gpu")}
    assert "Pisa" not in texts["gpu"]
    assert ("Pisa" in texts["cpu"]) == native_adam.available()
