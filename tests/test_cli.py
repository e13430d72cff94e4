"""What every command shares: its parser's name, one-line errors, no abbreviated flags."""
import sys

import pytest

from pisa_jax import cli


def test_an_installed_command_names_itself(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["/venv/bin/pisa-train", "--help"])
    assert cli.argument_parser("train.py", None).prog == "pisa-train"
    monkeypatch.setattr(sys, "argv", ["train.py"])
    assert cli.argument_parser("train.py", None).prog == "train.py"
    monkeypatch.setattr(sys, "argv", ["/x/data_builders/pisa/__main__.py"])
    assert cli.argument_parser("python -m data_builders.pisa", None).prog == \
        "python -m data_builders.pisa"


def test_run_turns_user_errors_into_one_line_and_keeps_exit_statuses(capsys):
    from pisa_jax.errors import UserError

    def fails(argv):
        raise UserError("videos/1.mp4: no audio stream")

    def stopped(argv):
        raise KeyboardInterrupt

    assert cli.run(fails, []) == 1
    assert capsys.readouterr().err == "error: videos/1.mp4: no audio stream\n"
    assert cli.run(stopped, []) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert cli.run(lambda argv: None, []) == 0 and cli.run(lambda argv: 3, []) == 3


def test_xla_running_out_of_memory_is_one_line_and_other_errors_stay_tracebacks(capsys):
    import jax.numpy as jnp

    def allocates_a_pebibyte(argv):  # more than any address space: fails at once, never swaps
        jnp.ones((2**50,), jnp.uint8).block_until_ready()

    def breaks(argv):
        raise ValueError("a bug")

    assert cli.run(allocates_a_pebibyte, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: out of memory in a step (Out of memory ") and \
        "--batch_size" in err and err.count("\n") == 1
    with pytest.raises(ValueError, match="a bug"):
        cli.run(breaks, [])


@pytest.mark.parametrize("module", ["pisa_jax.train.flags", "pisa_jax.predict",
                                    "pisa_jax.evaluate", "pisa_jax.reproduce.cli"])
def test_a_command_imports_no_jax_before_it_picks_its_allocator(module):
    """run_command re-runs the process under tcmalloc first: JAX imported before that is ~1 s
    lost (and its allocations made on the other allocator)."""
    import subprocess
    code = f"import sys, {module}; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# Every command refuses abbreviated flags: with abbreviations `--lr -1` would silently mean
# `--lr_schedule -1`, and a typo would change what runs instead of stopping it. (module with
# main, argv with an abbreviated flag, the abbreviation); each abbreviation is the prefix of
# exactly one flag, so argparse with abbreviations on would accept it.
ABBREVIATED = [
    ("pisa_jax.train.flags", ["--lr", "-1", "--workdir", "{tmp}/run"], "--lr"),
    ("pisa_jax.evaluate", ["--workdir", "{tmp}/run", "--check", "latest"], "--check"),
    ("pisa_jax.predict", ["{tmp}/video.mp4", "--workdir", "{tmp}/run", "--check", "latest"],
     "--check"),
    ("pisa_jax.convert.cli", ["--arch", "r2d18", "--source", "torchvision", "--num_class", "10",
                              "{tmp}/in.pth", "{tmp}/out"], "--num_class"),
    ("data_builders.pisa.__main__", ["--manual_dir", "{tmp}/videos", "--skip"], "--skip"),
]


@pytest.mark.parametrize("module, argv, abbreviation", ABBREVIATED,
                         ids=["train", "evaluate", "predict", "convert", "build"])
def test_abbreviated_flags_are_refused(module, argv, abbreviation, tmp_path, capsys):
    import importlib
    main = importlib.import_module(module).main
    with pytest.raises(SystemExit) as exit_info:
        main([a.format(tmp=tmp_path) for a in argv])
    assert exit_info.value.code == 2
    assert f"unrecognized arguments: {abbreviation}" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing ran
