"""The CPU note at start and the per-epoch estimate after the first timed steps."""
import itertools

from pisa_jax.train.config import TrainConfig, preset
from pisa_jax.train.pace import SLOW_EPOCH_S, StepClock, start_note


def test_the_paper_s_shapes_on_a_cpu_get_a_note_pointing_to_the_demo():
    note = start_note(TrainConfig(depths=(18, 18)), "cpu")   # synthetic full: the paper's shapes
    assert "paper's shapes (10 clips x 16 frames of 112x112" in note and "--preset demo" in note
    assert start_note(TrainConfig(dataset="pisa"), "cpu") is not None
    assert start_note(TrainConfig(depths=(18, 18)), "gpu") is None
    assert start_note(preset("demo"), "cpu") is None
    assert start_note(TrainConfig(dataset="pisa", dataset_config="consecutive_demo"), "cpu") is None
    # a config built under a name of its own: its shapes are unknown before it is opened
    assert start_note(TrainConfig(dataset="pisa", dataset_config="consecutive_mine"), "cpu") is None


def _clock(seconds_per_step, compile_s, platform="cpu", steps_per_epoch=129, steps_left=12900):
    times = itertools.accumulate(itertools.chain([compile_s], itertools.repeat(seconds_per_step)))
    return StepClock(steps_per_epoch, steps_left, platform, clock=lambda: next(times))


def test_the_estimate_comes_once_from_the_steps_after_the_compiling_one():
    clock = _clock(65.0, compile_s=600.0)
    said = [clock.observe(step) for step in range(1, 10)]
    assert said[:2] == [None, None] and said[3:] == [None] * 6
    assert said[2] == ("estimate on this CPU: 65 s per step, 2.3 h per epoch of 129 steps, "
                       "9.7 days for the 12900 steps left. `--preset demo` trains a small model "
                       "on small data in minutes on a CPU (with your own PISA-layout videos: "
                       "build a *_demo config, see python -m data_builders.pisa --help).")


def test_fast_epochs_and_accelerators_get_no_estimate():
    fast = _clock(SLOW_EPOCH_S / 129 / 2, compile_s=30.0)
    assert [fast.observe(step) for step in range(1, 6)] == [None] * 5
    gpu = _clock(65.0, compile_s=600.0, platform="gpu")
    assert [gpu.observe(step) for step in range(1, 6)] == [None] * 5
