"""pisa_jax.cudnn: the cuDNN release, and the warning a bf16 run gets on a release whose bf16
3D convolutions can be wrong (in training, evaluate and predict)."""
import json
import shutil

import pytest

from pisa_jax import cudnn
from pisa_jax.train import TrainConfigError, preset, train_and_evaluate


def on_gpu_with(monkeypatch, release):
    """What pisa_jax.cudnn sees: a GPU whose cuDNN is `release` (None: unreadable)."""
    monkeypatch.setattr(cudnn, "platform", lambda: "gpu")
    monkeypatch.setattr(cudnn, "version", lambda: release)


def test_the_version_number_splits_as_cudnn_counts_it():
    assert cudnn.split_version(91002) == (9, 10, 2)   # cuDNN 9: major * 10000
    assert cudnn.split_version(91501) == (9, 15, 1)
    assert cudnn.split_version(90100) == (9, 1, 0)
    assert cudnn.split_version(8906) == (8, 9, 6)     # cuDNN 8: major * 1000
    assert cudnn.dotted((9, 10, 2)) == "9.10.2" and cudnn.dotted(None) == "none"


def test_the_release_is_read_without_failing_where_there_is_none():
    release = cudnn.version()   # None on a machine without JAX's CUDA plugin
    assert release is None or (len(release) == 3 and release[0] >= 8)


@pytest.mark.parametrize("release", [(9, 10, 2), (9, 12, 0), (9, 15, 9)])
def test_a_bf16_run_on_an_affected_release_is_warned(monkeypatch, release):
    on_gpu_with(monkeypatch, release)
    line = cudnn.bf16_warning("bfloat16")
    name = ".".join(map(str, release))
    assert line.startswith(f"warning: this GPU runs cuDNN {name}, ")
    assert "benchmarks/bf16_check.py" in line and "--precision float32" in line


@pytest.mark.parametrize("release", [(9, 10, 1), (9, 16, 0), (8, 9, 7), None])
def test_other_releases_get_no_warning(monkeypatch, release):
    on_gpu_with(monkeypatch, release)
    assert cudnn.bf16_warning("bfloat16") is None


def test_float32_and_cpu_runs_get_no_warning(monkeypatch):
    on_gpu_with(monkeypatch, (9, 12, 0))
    assert cudnn.bf16_warning("float32") is None
    monkeypatch.setattr(cudnn, "platform", lambda: "cpu")
    assert cudnn.bf16_warning("bfloat16") is None


def test_training_in_bf16_says_so_before_it_starts(synthetic_tiny, tmp_path, monkeypatch, capsys):
    on_gpu_with(monkeypatch, (9, 12, 0))
    # a batch larger than the training split: the run stops right after its start lines
    config = preset("smoke", data_dir=str(synthetic_tiny.data_dir), precision="bfloat16",
                    batch_size=400)
    with pytest.raises(TrainConfigError, match="larger than the training split"):
        train_and_evaluate(config, tmp_path / "run")
    assert "warning: this GPU runs cuDNN 9.12.0," in capsys.readouterr().out


def test_evaluate_and_predict_of_a_bf16_run_say_so_on_stderr(smoke_run, synthetic_tiny, tmp_path,
                                                              monkeypatch, capsys):
    from pisa_jax.evaluate import evaluate_workdir
    from pisa_jax.predict import main as predict_main
    config, workdir, _ = smoke_run
    bf16_run = tmp_path / "bf16_run"   # the smoke run, as if it had trained in bf16
    shutil.copytree(workdir, bf16_run)
    settings = json.loads((bf16_run / "config.json").read_text())
    assert settings["precision"] == "float32"
    settings["precision"] = "bfloat16"
    (bf16_run / "config.json").write_text(json.dumps(settings))
    on_gpu_with(monkeypatch, (9, 12, 0))
    evaluate_workdir(workdir, "latest")   # the float32 run: nothing to say
    assert "warning" not in capsys.readouterr().err
    evaluate_workdir(bf16_run, "latest")
    assert capsys.readouterr().err.startswith("warning: this GPU runs cuDNN 9.12.0,")
    video = str(synthetic_tiny.manual_dir / "videos" / "1.mp4")
    assert predict_main([video, "--workdir", str(bf16_run), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["level"] in range(1, 11)   # the JSON stays clean
    assert err.startswith("warning: this GPU runs cuDNN 9.12.0,")
