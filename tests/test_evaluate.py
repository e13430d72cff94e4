"""python -m pisa_jax.evaluate re-scores a run's checkpoint on the test split."""
import json

from pisa_jax.evaluate import evaluate_workdir, main


def test_rescoring_the_last_checkpoint_reproduces_the_final_evaluation(smoke_run):
    _, workdir, results = smoke_run
    rescored = evaluate_workdir(workdir, "latest")
    assert rescored["step"] == results["step"] == 10
    for head, scores in results["heads"].items():
        assert rescored["heads"][head]["confusion_matrix"] == scores["confusion_matrix"]
    assert json.loads((workdir / "eval_latest.json").read_text())["accuracy"] == results["accuracy"]
    assert (workdir / "eval_latest_confusion.png").is_file()
    # Video level: the tiny test split is one sample of each of 10 recordings, so every
    # recording's prediction is its sample's, and the per-video table says so.
    assert rescored["num_videos"] == 10 and results["num_videos"] == 10
    assert rescored["video_accuracy"] == rescored["accuracy"] == results["video_accuracy"]
    table = (workdir / "eval_latest_videos.csv").read_text().splitlines()
    assert table[0].startswith("video_id,true_level,samples,predicted_level_")
    assert len(table) == 11 and all(line.split(",")[2] == "1" for line in table[1:])
    levels = sorted(int(line.split(",")[1]) for line in table[1:])
    assert levels == list(range(1, 11))


def test_the_scores_do_not_depend_on_the_evaluation_batch(smoke_run):
    """Eval mode: running BatchNorm statistics, padded last batch masked out."""
    _, workdir, results = smoke_run
    for batch_size in (8, 12):  # the smoke run's own batch is 4
        rescored = evaluate_workdir(workdir, "latest", batch_size=batch_size)
        for head, scores in results["heads"].items():
            assert rescored["heads"][head]["confusion_matrix"] == scores["confusion_matrix"]


def test_cli(smoke_run, tmp_path, capsys):
    _, workdir, results = smoke_run
    assert main(["--workdir", str(workdir)]) == 0          # the best checkpoint by default
    assert "best checkpoint" in capsys.readouterr().out
    assert main(["--workdir", str(tmp_path)]) == 1
    assert "not a training workdir" in capsys.readouterr().err


def test_the_command_uses_the_compilation_cache(smoke_run, monkeypatch, tmp_path):
    import jax
    _, workdir, _ = smoke_run
    before = jax.config.jax_compilation_cache_dir
    monkeypatch.setenv("PISA_JAX_COMPILATION_CACHE", str(tmp_path / "cache"))
    try:
        assert main(["--workdir", str(workdir)]) == 0
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_a_read_only_workdir_still_shows_the_scores(smoke_run, tmp_path, capsys, caplog,
                                                    monkeypatch):
    import os
    import shutil

    from pisa_jax.train import reports
    _, workdir, results = smoke_run
    copy = tmp_path / "run"
    shutil.copytree(workdir, copy, ignore=shutil.ignore_patterns("eval_*"))
    for path in [copy, *copy.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    if os.geteuid() == 0:  # root writes through permission bits; a read-only mount refuses
        def refuse(*args, **kwargs):
            raise OSError(30, "Read-only file system")
        monkeypatch.setattr(reports, "write_results", refuse)
    try:
        assert main(["--workdir", str(copy), "--checkpoint", "latest"]) == 1
    finally:
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
    out, err = capsys.readouterr()
    assert f"{copy} (latest checkpoint, step 10): test accuracy:" in out
    assert err.strip() == (f"error: {copy}: cannot save the scores above into it (Read-only file "
                           f"system); they are printed only") or "Permission denied" in err
    assert len(err.strip().splitlines()) == 1
    assert not (copy / "eval_latest.json").exists()
    # orbax's "Given directory is read only" warning is for its read_only option, not used
    assert not [r for r in caplog.records if "read only" in r.getMessage()]


def test_a_batch_size_below_one_is_one_line(tmp_path, capsys):
    for value in ("0", "-3"):
        assert main(["--workdir", str(tmp_path), "--batch_size", value]) == 1
        assert capsys.readouterr().err.strip() == (
            f"error: --batch_size={value}: expected a positive number of samples")
