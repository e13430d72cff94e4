"""train_and_evaluate end to end on the tiny synthetic dataset, and the NaN stop."""
import json

import jax
import numpy as np
import pytest

from pisa_jax.train import NonFiniteLossError, preset, train_and_evaluate
from pisa_jax.train.checkpoints import Checkpoints
from pisa_jax.train.reports import read_metrics


def test_run_writes_checkpoints_reports_and_results(smoke_run):
    config, workdir, results = smoke_run
    names = {p.name for p in workdir.iterdir()}
    assert {"config.json", "inputs.json", "metrics.jsonl", "results.json", "results_best.json",
            "confusion_matrix.png", "training_curves.png", "tensorboard", "checkpoints"} <= names
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((workdir / "config.json").read_text()) == config.to_dict()
    saved = json.loads((workdir / "results.json").read_text())
    assert saved["step"] == 10 and saved["epoch"] == 2 and saved["num_samples"] == 10
    assert set(saved["heads"]) == {"visual", "aural", "multimodal"}
    assert saved["prediction_head"] == "multimodal" and saved["accuracy"] == results["accuracy"]
    for head in saved["heads"].values():
        assert {"accuracy", "per_class_accuracy", "mae_levels", "spearman",
                "confusion_matrix"} <= set(head)
        assert len(head["per_class_accuracy"]) == 10
    records = read_metrics(workdir / "metrics.jsonl")
    assert [(r["kind"], r["step"]) for r in records] == [
        ("train", 5), ("eval", 5), ("train", 10), ("eval", 10)]
    assert all(np.isfinite(r["loss"]) and r["samples_per_s"] > 0 for r in records if r["kind"] == "train")
    checkpoints = Checkpoints(workdir, read_only=True)
    assert checkpoints.latest_step() == 10
    assert checkpoints.best_step() == saved["best"]["step"]
    # the 3 newest steps (saved every 2 steps and at epoch ends) and the best one
    assert checkpoints.steps() == sorted({6, 8, 10, saved["best"]["step"]})
    checkpoints.close()


def test_finished_run_restarted_only_re_evaluates(smoke_run, monkeypatch):
    from pisa_jax.train import state as state_module
    config, workdir, results = smoke_run
    # resuming restores into the state's template: no random weights are drawn to be overwritten
    monkeypatch.setattr(state_module, "init_model_variables", lambda *a: pytest.fail("random init"))
    again = train_and_evaluate(config, workdir)
    assert again["accuracy"] == results["accuracy"] and again["step"] == 10


class _Poisonable:
    """A source whose spectrograms turn to NaN once `poisoned` is set."""

    def __init__(self, source):
        self.source, self.poisoned = source, False

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        sample = dict(self.source[i])
        if self.poisoned:
            sample["spectrogram"] = np.full_like(sample["spectrogram"], np.nan)
        return sample


def test_non_finite_loss_stops_keeping_the_last_good_checkpoint(synthetic_tiny, tmp_path):
    from pisa_jax.data.dataset import open_dataset
    dataset = open_dataset("synthetic_tiny", synthetic_tiny.data_dir)
    dataset.train = source = _Poisonable(dataset.train)

    def poison_after_epoch_1(step):  # epoch 2's batches are read after this
        source.poisoned = source.poisoned or step == 5

    config = preset("smoke", data_dir=str(synthetic_tiny.data_dir), epochs=2, modalities=("aural",))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 6 \(epoch 2\).*step 5"):
        train_and_evaluate(config, tmp_path, dataset=dataset, on_step=poison_after_epoch_1)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    assert checkpoints.latest_step() == 5
    state, _, _ = checkpoints.restore(_template(config, dataset))
    checkpoints.close()
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(state.params))


def _out_of_memory() -> Exception:  # what XLA raises when an allocation fails on a GPU
    return jax.errors.JaxRuntimeError(
        "RESOURCE_EXHAUSTED: Out of memory while trying to allocate 5.00GiB.")


@pytest.mark.parametrize("where", ["train", "eval"])
def test_out_of_memory_is_one_line_naming_the_step_and_its_batch(
        synthetic_tiny, tmp_path, monkeypatch, where):
    from pisa_jax.data.dataset import open_dataset
    from pisa_jax.errors import OutOfMemoryError
    from pisa_jax.train import loop
    dataset = open_dataset("synthetic_tiny", synthetic_tiny.data_dir)
    config = preset("smoke", data_dir=str(synthetic_tiny.data_dir), epochs=2, modalities=("aural",))

    def run_out(step):
        if where == "train" and step == 7:
            raise _out_of_memory()

    def evaluate_out(*args, **kwargs):
        raise _out_of_memory()
    if where == "eval":
        monkeypatch.setattr(loop, "predict_split", evaluate_out)
    flag = {"train": f"--batch_size={config.batch_size}",
            "eval": f"--eval_batch_size={config.evaluation_batch_size}"}[where]
    with pytest.raises(OutOfMemoryError) as raised:
        train_and_evaluate(config, tmp_path, dataset=dataset, on_step=run_out)
    message = str(raised.value)
    assert message.startswith(f"out of memory in the {where} step (Out of memory while trying "
                              f"to allocate 5.00GiB.): {flag} (4 device(s)) is too large")
    assert "\n" not in message
    checkpoints = Checkpoints(tmp_path, read_only=True)
    latest = checkpoints.latest_step()  # saved at epoch ends: step 5 before step 7, none before
    checkpoints.close()                 # epoch 1's evaluation
    assert latest == {"train": 5, "eval": None}[where]
    assert message.endswith({"train": "(the checkpoints so far, up to step 5, are kept)",
                             "eval": "the same command with a smaller one resumes"}[where])


def _template(config, dataset):
    from pisa_jax.train.state import InputSpec, create_run
    return create_run(config, InputSpec.of_dataset(dataset)).template


@pytest.mark.slow
def test_data_on_device_run_stopped_mid_epoch_resumes_and_ends_like_the_host_run(
        smoke_run, tmp_path):
    """The splits in device memory (data_on_device=on, also on a CPU): stopped by SIGTERM in
    epoch 2 and resumed, the run ends where the host-batch run ends (the same batches)."""
    import os
    import signal

    from pisa_jax.train import Interrupted
    from pisa_jax.train.checkpoints import load_trained
    config, reference_dir, reference = smoke_run
    config = config.replace(data_on_device="on")

    def stop_in_epoch_2(step):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(Interrupted):
        train_and_evaluate(config, tmp_path, on_step=stop_in_epoch_2)
    checkpoints = Checkpoints(tmp_path, read_only=True)
    assert checkpoints.latest_step() == 8   # saved at the step boundary after the signal
    checkpoints.close()
    results = train_and_evaluate(config, tmp_path)
    _, ours = load_trained(tmp_path, "latest")
    _, theirs = load_trained(reference_dir, "latest")
    assert int(ours.step) == int(theirs.step) == 10
    # The two programs round differently (the normalisation fuses differently; buffer placement
    # moves reductions by an ulp), and 10 Adam steps (update ~ lr * sign(gradient)) magnify that
    # for near-zero gradients: up to ~lr on under 1 % of the parameters. Two samples swapped
    # between batches moved 35 % of them by more than lr / 10.
    assert _fraction_moved(ours.params, theirs.params, by=config.learning_rate / 10) < 0.05
    assert results["num_samples"] == reference["num_samples"]


def _fraction_moved(params, reference, *, by: float) -> float:
    """The fraction of all parameter values that differ from the reference's by more than `by`."""
    moved = [np.abs(np.asarray(a) - np.asarray(b)) > by for a, b in
             zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(reference))]
    return sum(m.sum() for m in moved) / sum(m.size for m in moved)
