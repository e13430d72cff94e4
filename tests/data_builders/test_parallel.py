"""run_parallel: every result once, and plain progress lines (no redrawn bars) in a log."""
from data_builders.pisa.parallel import run_parallel


def test_every_item_once_and_plain_lines_when_not_a_terminal(capsys):
    results = sorted(run_parallel(lambda x: x * x, list(range(25)), num_workers=3,
                                  desc="decoding videos"))
    assert results == [x * x for x in range(25)]
    err = capsys.readouterr().err   # captured: not a terminal, as a log file
    assert "\r" not in err
    assert err.splitlines()[-1] == "decoding videos: 25/25" and len(err.splitlines()) <= 11
