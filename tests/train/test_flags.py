"""train.py's bad input: one `error:` line, exit status 1, found before the dataset or model is
built where it can be, and no workdir left behind."""
import os

import pytest

from pisa_jax.train import loop
from pisa_jax.train import workdir as workdir_module
from pisa_jax.train.flags import main
from pisa_jax.train.workdir import WorkdirLock

SMOKE = ["--preset", "smoke", "--epochs", "2"]


@pytest.fixture
def nothing_built(monkeypatch):
    """Fails the test if the dataset is opened or a model is built."""
    monkeypatch.setattr(loop, "open_training_data", lambda *a, **k: pytest.fail("data opened"))
    monkeypatch.setattr(loop, "create_run", lambda *a, **k: pytest.fail("a model was built"))


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr(loop, "create_run", lambda *a, **k: pytest.fail("a model was built"))


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_workdir_that_is_a_file(tmp_path, capsys, nothing_built):
    (tmp_path / "run").write_text("not a directory")
    assert main(SMOKE + ["--workdir", str(tmp_path / "run")]) == 1
    assert _error_line(capsys) == f"error: {tmp_path / 'run'}: is a file, not a directory"


def test_a_read_only_workdir_is_found_first(tmp_path, capsys, nothing_built, monkeypatch):
    (tmp_path / "run").mkdir()
    (tmp_path / "run").chmod(0o555)
    if os.geteuid() == 0:  # root writes through permission bits; a read-only mount refuses
        def refuse(directory):
            raise OSError(30, "Read-only file system")
        monkeypatch.setattr(workdir_module, "_probe_write", refuse)
    assert main(SMOKE + ["--workdir", str(tmp_path / "run")]) == 1
    assert _error_line(capsys).startswith(f"error: {tmp_path / 'run'}: not writable: ")


def test_a_corrupt_saved_config(tmp_path, capsys, nothing_built):
    (tmp_path / "config.json").write_text('{"epochs": ')
    assert main(SMOKE + ["--workdir", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert line.startswith(f"error: {tmp_path / 'config.json'}: cannot read the saved run config")
    assert "--restart" in line


def test_an_empty_workdir_flag(capsys, nothing_built):
    assert main(SMOKE + ["--workdir", ""]) == 1
    assert _error_line(capsys) == "error: --workdir: empty; give a directory for the run"


def test_config_errors_leave_no_workdir(tmp_path, capsys, nothing_built):
    assert main(SMOKE + ["--workdir", str(tmp_path / "run"), "--dataset_config", "bogus"]) == 1
    assert "dataset_config='bogus': expected one of ['demo', 'full', 'tiny']" in \
        capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_batch_larger_than_the_data_leaves_no_workdir(synthetic_tiny, tmp_path, capsys,
                                                         no_model):
    assert main(SMOKE + ["--data_dir", str(synthetic_tiny.data_dir), "--batch_size", "40",
                         "--workdir", str(tmp_path / "run")]) == 1
    assert "batch_size=40 is larger than the training split (20 samples)" in _error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_pisa_config_that_does_not_exist(tmp_path, capsys, no_model):
    assert main(SMOKE + ["--dataset", "pisa", "--dataset_config", "bogus", "--data_dir",
                         str(tmp_path / "data"), "--workdir", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert "'bogus' is not a config of the pisa dataset builder: choose one of consecutive" in line
    assert not (tmp_path / "run").exists()


def test_pisa_not_built_suggests_a_config_that_exists(tmp_path, capsys, no_model):
    # the smoke preset's synthetic size ("tiny") does not carry over to another dataset
    assert main(SMOKE + ["--dataset", "pisa", "--data_dir", str(tmp_path / "data"),
                         "--workdir", str(tmp_path / "run")]) == 1
    line = _error_line(capsys)
    assert "dataset config 'consecutive' is not built here; build it with python -m " \
           "data_builders.pisa --manual_dir <your videos>" in line
    assert line.endswith("--config consecutive")


def test_a_second_training_in_the_same_workdir_is_refused(synthetic_tiny, tmp_path, capsys,
                                                           no_model):
    with WorkdirLock(tmp_path):
        assert main(SMOKE + ["--data_dir", str(synthetic_tiny.data_dir),
                             "--workdir", str(tmp_path)]) == 1
    line = _error_line(capsys)
    assert f"another training is running in this workdir (pid {os.getpid()} on host " in line
    assert not (tmp_path / "config.json").exists()
