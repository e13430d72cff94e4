"""What every command shares: its parser's name."""
import sys

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
