"""pisa_jax.load: a trained workdir -> a model that predicts from arrays like evaluation does."""
import subprocess
import sys

import jax
import numpy as np
import pytest
from scipy.special import softmax

import pisa_jax
from pisa_jax.api import ModelInputError
from pisa_jax.data.dataset import open_dataset
from pisa_jax.data.pipeline import NORMALIZATION


def _test_split(data_dir):
    test = open_dataset("synthetic_tiny", data_dir).test
    samples = [test[i] for i in range(len(test))]
    return (np.stack([s["video"] for s in samples]), np.stack([s["spectrogram"] for s in samples]),
            np.array([s["label"] for s in samples]))


@pytest.fixture(scope="module")
def trained(smoke_run):
    _, workdir, _ = smoke_run
    return pisa_jax.load(workdir, "latest", batch_size=4)


def test_predictions_score_the_test_split_as_training_did(trained, smoke_run, synthetic_tiny):
    _, _, results = smoke_run
    video, spectrogram, labels = _test_split(synthetic_tiny.data_dir)
    probs = trained.predict(video, spectrogram)   # 10 samples: the last call of 4 is padded
    assert set(probs) == {"visual", "aural", "multimodal"} and trained.primary == "multimodal"
    assert probs["multimodal"].shape == (len(labels), trained.spec.num_classes)
    np.testing.assert_allclose(probs["aural"].sum(-1), 1.0, rtol=1e-5)
    # the latest checkpoint is the state the run's final evaluation scored
    for head, scores in results["heads"].items():
        accuracy = 100 * np.mean(probs[head].argmax(-1) == labels)
        assert accuracy == pytest.approx(scores["accuracy"]), head
    # each sample's prediction depends on that sample only, not on its batch
    few = trained.predict(video[3:6], spectrogram[3:6])
    np.testing.assert_allclose(few["multimodal"], probs["multimodal"][3:6], rtol=1e-5, atol=1e-6)


def test_predict_normalises_the_video_like_training(trained, synthetic_tiny):
    video, spectrogram, _ = _test_split(synthetic_tiny.data_dir)
    mean, std = NORMALIZATION[trained.config.visual_stem]
    normalised = (video[:2] / 255.0 - np.asarray(mean)) / np.asarray(std)
    apply = jax.jit(lambda variables, v, s: trained.model.apply(variables, v, s, train=False))
    out = apply(trained.variables, normalised.astype(np.float32), spectrogram[:2].astype(np.float32))
    expected = softmax(np.asarray(out["logits"]["visual"], np.float64), axis=-1)
    got = trained.predict(video[:2], spectrogram[:2])["visual"]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_inputs_that_do_not_fit_are_clear_errors(trained, synthetic_tiny):
    video, spectrogram, _ = _test_split(synthetic_tiny.data_dir)
    with pytest.raises(ModelInputError, match=r"video has shape \(2, 2, 8, 16, 16, 3\); this run "
                                              r"expects \[batch, 2, 8, 32, 32, 3\]"):
        trained.predict(video[:2, :, :, :16, :16], spectrogram[:2])
    with pytest.raises(ModelInputError, match="video has dtype float32; expected uint8"):
        trained.predict(video[:2].astype(np.float32), spectrogram[:2])
    with pytest.raises(ModelInputError, match="spectrogram is None, but this run's model has the "
                                              "aural branch"):
        trained.predict(video[:2], None)
    with pytest.raises(ModelInputError, match="spectrogram has shape"):
        trained.predict(video[:2], spectrogram[:3])


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    from pisa_jax.errors import UserError
    with pytest.raises(UserError, match="no config.json"):
        pisa_jax.load(tmp_path)


def test_importing_the_package_does_not_import_jax():
    code = "import sys, pisa_jax; pisa_jax.load; print(sorted(m for m in ('jax', 'flax', 'numpy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
