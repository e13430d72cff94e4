"""python -m pisa_jax.reproduce end to end at tiny size: 2 cells x 2 seeds of Figure 6 (the
unimodal cells: one backbone each, the cheapest to compile), 1 epoch of the smoke recipe on the
tiny synthetic dataset. The sweep is first run half (seed 0), with one more run left as if killed
right after it started, then completed: finished runs are kept, the rest are trained, and the
aggregated table is checked against every run's results.json."""
import csv
import json

import numpy as np
import pytest

from pisa_jax.reproduce import EXPERIMENTS, main
from pisa_jax.reproduce.plan import DONE, PARTIAL, TODO, Choices, cell_config, plan
from pisa_jax.reproduce.statistics import bootstrap_ci_by_video
from pisa_jax.train.config import save_config

CELLS = ("visual", "aural")


@pytest.fixture(scope="module")
def sweep(synthetic_tiny, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reproduce")
    args = ["figure6", "--preset", "smoke", "--data_dir", str(synthetic_tiny.data_dir),
            "--workdir", str(workdir), "--cells", ",".join(CELLS)]
    assert main(args + ["--seeds", "1"]) == 0
    choices = Choices(preset="smoke", dataset="synthetic", splits=("tiny",), seeds=2,
                      workdir=str(workdir), data_dir=str(synthetic_tiny.data_dir), cells=CELLS)
    experiment = EXPERIMENTS["figure6"]
    killed = workdir / "figure6" / "tiny" / "aural" / "seed1"  # started, then killed
    killed.mkdir(parents=True)
    save_config(cell_config(experiment, experiment.cell("aural"), "tiny", 1, choices),
                killed / "config.json")
    before = {r.workdir.name + r.cell.name: r.status for r in plan(experiment, choices)}
    finished = {p: p.stat().st_mtime_ns for p in workdir.glob("figure6/tiny/*/seed0/results.json")}
    assert main(args + ["--seeds", "2"]) == 0
    return workdir, before, finished


@pytest.mark.slow
def test_a_killed_sweep_resumes_where_it_stopped(sweep):
    workdir, before, finished = sweep
    assert before == {"seed0visual": DONE, "seed1visual": TODO, "seed0aural": DONE,
                      "seed1aural": PARTIAL}
    assert len(finished) == 2   # the finished runs were not trained again
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    for cell in CELLS:
        for seed in (0, 1):
            results = json.loads((workdir / "figure6" / "tiny" / cell / f"seed{seed}" /
                                  "results.json").read_text())
            assert results["epoch"] == 1 and results["prediction_head"] == cell


@pytest.mark.slow
def test_the_aggregated_table_matches_the_runs(sweep):
    workdir, _, _ = sweep
    folder = workdir / "figure6"
    rows = {r["cell"]: r for r in csv.DictReader((folder / "results.csv").open())}
    assert set(rows) == set(CELLS)
    markdown = (folder / "RESULTS.md").read_text()
    for cell in CELLS:
        runs = [folder / "tiny" / cell / f"seed{s}" for s in (0, 1)]
        last = [json.loads((r / "results.json").read_text()) for r in runs]
        best = [json.loads((r / "results_best.json").read_text()) for r in runs]
        row = rows[cell]
        assert row["seeds_done"] == "2" and row["prediction_head"] == cell
        accuracy = [r["accuracy"] for r in last]
        assert float(row["accuracy_last_mean"]) == pytest.approx(np.mean(accuracy), abs=1e-4)
        assert float(row["accuracy_last_std"]) == pytest.approx(np.std(accuracy, ddof=1), abs=1e-4)
        assert float(row["accuracy_best_mean"]) == pytest.approx(
            np.mean([r["accuracy"] for r in best]), abs=1e-4)
        assert float(row["video_accuracy_mean"]) == pytest.approx(
            np.mean([r["video_accuracy"] for r in last]), abs=1e-4)
        assert float(row["mae_levels_mean"]) == pytest.approx(
            np.mean([r["heads"][cell]["mae_levels"] for r in last]), abs=1e-4)
        assert float(row[f"accuracy_{cell}_mean"]) == float(row["accuracy_last_mean"])
        low, high = bootstrap_ci_by_video([r["videos"] for r in last], cell)
        assert (float(row["ci95_low"]), float(row["ci95_high"])) == pytest.approx((low, high),
                                                                                  abs=1e-3)
        assert row["num_videos"] == "10" and row["num_samples"] == "10"
        shown = f"{np.mean(accuracy):.2f} ± {np.std(accuracy, ddof=1):.2f} [{low:.1f}, {high:.1f}]"
        assert shown in markdown
    assert "Synthetic data at CPU scale" in markdown and "test-selected" in markdown
    assert (folder / "figure6.png").stat().st_size > 1000


@pytest.mark.slow
def test_a_finished_sweep_trains_nothing(sweep, capsys):
    workdir, _, _ = sweep
    args = ["figure6", "--preset", "smoke", "--workdir", str(workdir), "--cells", ",".join(CELLS),
            "--seeds", "2"]
    assert main(args + ["--dry_run"]) == 0
    assert "4 done" in capsys.readouterr().out
    assert main(args + ["--report_only"]) == 0
    assert "(4 of 4 runs finished)" in capsys.readouterr().out


@pytest.mark.slow
def test_a_complete_run_without_its_scores_is_rescored(sweep):
    """A run whose last checkpoint exists but whose results.json is gone (deleted, or a loop
    that saved the checkpoint first) is re-scored, not retrained, and counts as done again."""
    workdir, _, _ = sweep
    run = workdir / "figure6" / "tiny" / "aural" / "seed0"
    saved = json.loads((run / "results.json").read_text())
    (run / "results.json").unlink()
    args = ["figure6", "--preset", "smoke", "--workdir", str(workdir), "--cells", ",".join(CELLS),
            "--seeds", "2"]
    assert main(args) == 0
    again = json.loads((run / "results.json").read_text())
    assert (again["epoch"], again["step"], again["accuracy"]) == (
        saved["epoch"], saved["step"], saved["accuracy"])
    assert again["heads"]["aural"]["confusion_matrix"] == saved["heads"]["aural"]["confusion_matrix"]
