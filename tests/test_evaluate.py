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


def test_cli(smoke_run, tmp_path, capsys):
    _, workdir, results = smoke_run
    assert main(["--workdir", str(workdir)]) == 0          # the best checkpoint by default
    assert "best checkpoint" in capsys.readouterr().out
    assert main(["--workdir", str(tmp_path)]) == 1
    assert "not a training workdir" in capsys.readouterr().err
