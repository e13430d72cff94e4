"""Config, presets, flags and the workdir's config check."""
import dataclasses
import json

import pytest

from pisa_jax.train import ConfigMismatchError, TrainConfig, TrainConfigError, preset, train_and_evaluate
from pisa_jax.train.flags import build_parser, parse_args
from pisa_jax.train.config import PRESETS, config_differences, load_config, save_config


def test_paper_defaults():
    c = TrainConfig()
    assert (c.optimizer, c.learning_rate, c.weight_decay, c.batch_size, c.epochs, c.dropout) == \
        ("adam", 1e-4, 0.1, 4, 100, 0.5)
    assert c.depths == (18, 18) and c.modalities == ("visual", "aural")
    for name in PRESETS:
        preset(name)  # every preset is a valid config


def test_every_field_has_a_flag_and_flags_override_the_preset(tmp_path):
    flags = {a.dest for a in build_parser()._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= flags
    args = parse_args(["--workdir", str(tmp_path), "--preset", "demo", "--depths", "34,18",
                       "--modalities", "visual", "--no-flip", "--visual_init", "none",
                       "--learning_rate", "3e-4", "--optimizer", "adamw"])
    c = args.config
    assert c.depths == (34, 18) and c.modalities == ("visual",) and not c.flip
    assert c.learning_rate == 3e-4 and c.optimizer == "adamw"
    assert c.base_width == PRESETS["demo"]["base_width"]  # the rest from the preset
    assert args.workdir == str(tmp_path) and not args.override_config
    c3d = parse_args(["--visual_backbone", "c3d", "--dataset", "pisa"])
    assert c3d.config.visual_backbone == "c3d" and c3d.workdir == "runs/c3d_r18_pisa_consecutive"


def test_bad_values_are_refused_naming_the_field():
    with pytest.raises(TrainConfigError, match="depths"):
        TrainConfig(depths=(18, 10))
    with pytest.raises(TrainConfigError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(TrainConfigError, match=r"visual_backbone='c2d': expected one of \['resnet3d', 'c3d'\]"):
        TrainConfig(visual_backbone="c2d")
    with pytest.raises(TrainConfigError, match="precision='float16'"):  # one line, exit 1
        parse_args(["--workdir", "x", "--precision", "float16"])
    with pytest.raises(TrainConfigError, match=r"conv_lowering='im2col': expected one of "
                                               r"\['auto', 'native', 'taps', 'stacked', 'onednn'\]"):
        TrainConfig(conv_lowering="im2col")


def test_conv_lowering_reaches_the_model_and_may_change_on_resume():
    from pisa_jax.train.state import skill_model
    config = preset("smoke").replace(conv_lowering="taps")
    assert skill_model(config, 10).conv_lowering == "taps"
    assert config_differences(preset("smoke").to_dict(), config,
                              ignore=TrainConfig.RESUMABLE_CHANGES) == []


def test_json_round_trip(tmp_path):
    c = preset("demo", depths=(50, 34), visual_init="/w/r3d50")
    save_config(c, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == c
    assert json.loads((tmp_path / "config.json").read_text())["depths"] == [50, 34]


def test_mismatched_workdir_config_is_refused_listing_differences(tmp_path):
    save_config(preset("smoke"), tmp_path / "config.json")
    changed = preset("smoke", learning_rate=0.5, depths=(18, 18), data_dir="/elsewhere")
    assert config_differences(json.loads((tmp_path / "config.json").read_text()), changed,
                              ignore=TrainConfig.RESUMABLE_CHANGES) == [
        "depths: [10, 18] (workdir) -> [18, 18] (now)",
        "learning_rate: 0.001 (workdir) -> 0.5 (now)"]
    # A run saved before a field existed (here visual_backbone) resumes when the field keeps its
    # default, and is refused when it does not.
    older = json.loads((tmp_path / "config.json").read_text())
    del older["visual_backbone"]
    assert config_differences(older, preset("smoke")) == []
    assert config_differences(older, preset("smoke", visual_backbone="c3d")) == [
        "visual_backbone: 'resnet3d' (workdir) -> 'c3d' (now)"]
    with pytest.raises(ConfigMismatchError, match=r"(?s)depths.*learning_rate.*--override_config"):
        train_and_evaluate(changed, tmp_path, dataset=object())


def test_uneven_batch_is_an_error_before_anything_runs(tmp_path):
    # 4 simulated devices: 6 samples do not split; fails before the (absent) dataset is opened
    with pytest.raises(TrainConfigError, match="batch_size=6 does not split evenly over 4 devices"):
        train_and_evaluate(preset("smoke", batch_size=6), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_eval_batch_size_defaults_to_the_batch_may_change_on_resume_and_must_split(tmp_path):
    assert preset("smoke").evaluation_batch_size == preset("smoke").batch_size
    assert preset("smoke", eval_batch_size=16).evaluation_batch_size == 16
    assert config_differences(preset("smoke").to_dict(), preset("smoke", eval_batch_size=16),
                              ignore=TrainConfig.RESUMABLE_CHANGES) == []
    with pytest.raises(TrainConfigError, match=r"eval_batch_size=-1: expected >= 0"):
        preset("smoke", eval_batch_size=-1)
    with pytest.raises(TrainConfigError, match="eval_batch_size=6 does not split evenly over 4"):
        train_and_evaluate(preset("smoke", eval_batch_size=6), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_train_py_reports_user_errors_without_a_traceback(tmp_path, capsys):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(
        "train_script", Path(__file__).parents[2] / "train.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--workdir", str(tmp_path), "--preset", "smoke", "--batch_size", "6"]) == 1
    assert "error: batch_size=6 does not split evenly" in capsys.readouterr().err
