"""Checkpoints: one orbax manager keeps the newest steps and the best; a damaged step is told
apart from another model's checkpoint and falls back to the step before; old layouts load."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from pisa_jax.train.checkpoints import (KEEP_LATEST, CheckpointMismatchError, Checkpoints,
                                        DamagedCheckpointError, LegacyLayoutError, load_trained)
from pisa_jax.train.state import TrainState


def _tiny_state(step: int) -> TrainState:
    """A TrainState of a few numbers: what the manager keeps does not depend on a model."""
    return TrainState(step=jnp.int32(step), params={"w": np.full(3, step, np.float32)},
                      batch_stats={}, opt_state={}, rng=np.zeros(2, np.uint32))


def test_keeps_the_newest_steps_and_the_best_earliest_of_equals(tmp_path):
    accuracies = {1: 10.0, 2: 30.0, 3: 30.0, 4: 20.0, 5: None, 6: None, 7: 25.0}
    checkpoints = Checkpoints(tmp_path)
    for step, accuracy in accuracies.items():
        checkpoints.save(_tiny_state(step), {"epoch": step}, accuracy=accuracy)
    checkpoints.wait()
    assert checkpoints.best_step() == 2
    checkpoints.close()
    reader = Checkpoints(tmp_path, read_only=True)
    assert reader.steps() == [2, *range(8 - KEEP_LATEST, 8)]
    assert reader.best_step() == 2 and reader.latest_step() == 7
    state, meta, step = reader.restore(_tiny_state(0), "best")
    assert step == 2 and meta == {"epoch": 2} and state.params["w"].tolist() == [2, 2, 2]
    reader.close()
    assert (tmp_path / ".checkpointed").read_text().strip() == "1"   # the run has history


@pytest.fixture(scope="module")
def trained(smoke_run):
    """(workdir, run, state) of the smoke run's latest checkpoint, restored into the template
    (no model compiled)."""
    _, workdir, _ = smoke_run
    run, state = load_trained(workdir, "latest")
    return workdir, run, state


def test_loading_a_trained_run_draws_no_random_weights(smoke_run, monkeypatch):
    from pisa_jax.train import state as state_module
    _, workdir, _ = smoke_run
    monkeypatch.setattr(state_module, "init_model_variables", lambda *a: pytest.fail("random init"))
    _, state = load_trained(workdir, "latest")
    assert int(state.step) == 10
    assert all(isinstance(x, np.ndarray) for x in jax.tree_util.tree_leaves(state))


def _copy(workdir, tmp_path):
    shutil.copytree(workdir, tmp_path / "run")
    return tmp_path / "run"


def _truncate_largest_file(step_dir):
    largest = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(64)


def test_a_damaged_latest_step_is_named_as_such_and_the_step_before_is_used(trained, tmp_path):
    workdir, run, reference = trained
    copy = _copy(workdir, tmp_path)
    _truncate_largest_file(copy / "checkpoints" / "10" / "state")
    checkpoints = Checkpoints(copy, read_only=True)
    damaged = []
    state, _, step = checkpoints.restore(run.template, on_damaged=lambda s, e: damaged.append((s, e)))
    checkpoints.close()
    assert step == 8 and int(state.step) == 8
    [(bad_step, error)] = damaged
    message = str(error)
    assert bad_step == 10 and "checkpoints/10: damaged or incomplete" in message
    assert "different" not in message and len(message) < 400 and "\n" not in message


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(trained):
    workdir, run, _ = trained
    flat = traverse_util.flatten_dict(run.template.params)
    name = sorted(flat)[0]
    flat[name] = np.zeros((*flat[name].shape, 2), np.float32)   # what another config gives
    other = run.template.replace(params=traverse_util.unflatten_dict(flat))
    checkpoints = Checkpoints(workdir, read_only=True)
    with pytest.raises(CheckpointMismatchError, match=r"checkpoints/10: holds another model: "
                       r"params/.*different depths, widths or modalities"):
        checkpoints.restore(other, on_damaged=lambda *_: pytest.fail("not damage"))
    checkpoints.close()


def test_no_readable_step_at_all_is_damage(trained, tmp_path):
    workdir, run, _ = trained
    copy = _copy(workdir, tmp_path)
    for step_dir in (copy / "checkpoints").iterdir():
        _truncate_largest_file(step_dir / "state")
    checkpoints = Checkpoints(copy, read_only=True)
    with pytest.raises(DamagedCheckpointError, match=r"no readable checkpoint: steps .* damaged"):
        checkpoints.restore(run.template, on_damaged=lambda *_: None)
    checkpoints.close()


def test_the_layout_of_earlier_versions_still_loads_and_is_refused_for_training(trained, tmp_path):
    workdir, _, reference = trained
    copy = _copy(workdir, tmp_path)
    root = copy / "checkpoints"
    best = Checkpoints(copy, read_only=True).best_step()
    (root / "latest").mkdir()
    (root / "best").mkdir()
    shutil.move(str(root / "10"), str(root / "latest" / "10"))
    shutil.move(str(root / str(best)), str(root / "best" / str(best)))
    _, state = load_trained(copy, "latest")
    assert int(state.step) == 10
    jax.tree_util.tree_map(np.testing.assert_array_equal, state.params, reference.params)
    assert int(load_trained(copy, "best")[1].step) == best
    with pytest.raises(LegacyLayoutError, match="earlier pisa-jax.*--restart"):
        Checkpoints(copy)


def test_a_save_keeps_the_values_its_arrays_had_when_it_was_called(tmp_path):
    # The train loop hands the save views of the device buffers that the next step overwrites
    # (on a CPU, without a copy of its own): the checkpoint must hold the values at the call.
    checkpoints = Checkpoints(tmp_path)
    checkpoints.save(_tiny_state(1), {"epoch": 1})  # the first save waits for itself
    buffer = np.full(1 << 22, 7.0, np.float32)
    checkpoints.save(_tiny_state(2).replace(params={"w": buffer[:]}), {"epoch": 2})
    buffer[:] = -1.0  # what the next step does to a donated buffer, while the save writes
    checkpoints.wait()
    checkpoints.close()
    reader = Checkpoints(tmp_path, read_only=True)
    restored, _, step = reader.restore(
        _tiny_state(0).replace(params={"w": np.zeros(1 << 22, np.float32)}))
    reader.close()
    assert step == 2 and np.all(restored.params["w"] == 7.0)
