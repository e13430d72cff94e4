"""What a sweep would run, and the choices it refuses, without training anything."""
import pytest

from pisa_jax.reproduce import EXPERIMENTS, main
from pisa_jax.reproduce.plan import CONFLICT, SKIPPED, TODO, Choices, cell_config, plan
from pisa_jax.train.config import save_config


def test_every_experiment_has_valid_cells():
    for experiment in EXPERIMENTS.values():
        assert len({c.name for c in experiment.cells}) == len(experiment.cells)
        for cell in experiment.cells:
            cell_config(experiment, cell, "consecutive", 0, Choices())  # a valid TrainConfig
    assert len(EXPERIMENTS["table4"].cells) == 10 and len(EXPERIMENTS["figure7"].cells) == 10
    assert EXPERIMENTS["table4"].cell("r18_r18").paper == 70.80
    assert EXPERIMENTS["table4"].cell("c3d_r18").flags["visual_backbone"] == "c3d"


def test_dry_run_lists_the_runs_and_writes_nothing(tmp_path, capsys):
    assert main(["table4", "--dry_run", "--seeds", "2", "--workdir", str(tmp_path / "runs"),
                 "--weights_dir", "/nowhere"]) == 0
    out = capsys.readouterr().out
    assert "consecutive/r18_r34/seed1" in out and "consecutive_by_source/c3d_r18/seed0" in out
    assert "--depths 34,50 --visual_init /nowhere/r3d34_hara" in out
    assert "--visual_backbone c3d" in out and "40 to run" in out
    assert "converted pretrained weights missing" in out   # a note in a dry run
    assert not (tmp_path / "runs").exists()


def test_the_pisa_sweep_needs_the_converted_weights(tmp_path, capsys):
    assert main(["table7", "--workdir", str(tmp_path), "--weights_dir", "/nowhere"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: converted pretrained weights missing: /nowhere/r2d18_imagenet")
    assert "--weights_dir none" in err
    assert not list(tmp_path.iterdir())


def test_cells_that_cannot_run_are_skipped_with_the_reason(tmp_path):
    # C3D needs 16-frame clips: the demo data has 8; PISA's have 16.
    demo = Choices(preset="demo", dataset="synthetic", splits=("demo",), seeds=1,
                   workdir=str(tmp_path))
    runs = {r.cell.name: r for r in plan(EXPERIMENTS["table4"], demo)}
    assert runs["c3d_r18"].status == SKIPPED and "8 frames" in runs["c3d_r18"].detail
    assert runs["r50_r50"].status == TODO
    pisa = Choices(seeds=1, workdir=str(tmp_path), weights_dir=None, cells=("c3d_r18",))
    assert {r.status for r in plan(EXPERIMENTS["table4"], pisa)} == {TODO}
    # Pretraining cannot be compared without weights: narrow nets have none.
    runs = {r.cell.name: r for r in plan(EXPERIMENTS["table7"], demo)}
    assert runs["pretrained"].status == SKIPPED and "narrow nets" in runs["pretrained"].detail
    assert runs["scratch"].status == TODO and runs["scratch"].config.visual_init is None


def test_bad_choices_are_one_line_errors(tmp_path, capsys):
    assert main(["figure7", "--cells", "dropout_0.5,dropout_1.0", "--dry_run"]) == 1
    assert "--cells dropout_1.0: not cells of figure7" in capsys.readouterr().err
    assert main(["figure7", "--seeds", "0", "--dry_run"]) == 1
    assert "--seeds 0" in capsys.readouterr().err
    # a workdir holding a run made with other flags
    choices = Choices(preset="smoke", dataset="synthetic", splits=("tiny",), seeds=1,
                      workdir=str(tmp_path), cells=("dropout_0.5",))
    experiment = EXPERIMENTS["figure7"]
    other = cell_config(experiment, experiment.cell("dropout_0.5"), "tiny", 0, choices)
    run = tmp_path / "figure7" / "tiny" / "dropout_0.5" / "seed0"
    run.mkdir(parents=True)
    save_config(other.replace(learning_rate=0.5), run / "config.json")
    assert [r.status for r in plan(experiment, choices)] == [CONFLICT]
    assert main(["figure7", "--preset", "smoke", "--workdir", str(tmp_path), "--seeds", "1",
                 "--cells", "dropout_0.5"]) == 1
    assert "learning_rate: 0.5 (workdir) -> 0.001 (now)" in capsys.readouterr().err
