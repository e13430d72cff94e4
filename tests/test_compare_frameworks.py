"""benchmarks/compare_frameworks.py: on a GPU one variant at a time (their memory together would
not fit), on a CPU all alive and stepped round-robin; every row gives a peak memory."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import compare_frameworks  # noqa: E402

# batch 4: the tests run on 4 CPU devices (conftest.py)
TINY = ["--batch_size", "4", "--clips", "1", "--clip_length", "4", "--image_size", "16",
        "--spectrogram_size", "16", "--base_width", "2", "--steps", "2", "--pause_s", "0"]


class FakeWorker:
    """Stands in for a worker process: records how many were alive at each step."""
    alive: set = set()
    most_alive = 0

    def __init__(self, name, variant, library, allocator, platform):
        self.name, self.allocator, self.error = name, allocator, None
        self.info = {"platform": platform, "device_kind": "fake", "devices": 1,
                     "version": "fake", "flops": None}
        self.peak_bytes = 2**30
        FakeWorker.alive.add(name)

    def step(self):
        FakeWorker.most_alive = max(FakeWorker.most_alive, len(FakeWorker.alive))
        return 0.5 if self.name.startswith("torch") else 0.25

    def close(self):
        FakeWorker.alive.discard(self.name)


@pytest.mark.parametrize("platform, schedule, most_alive", [
    ("gpu", "auto", 1), ("cpu", "auto", 3), ("cpu", "sequential", 1), ("gpu", "interleaved", 3)])
def test_the_schedule_decides_how_many_variants_are_alive_at_once(
        monkeypatch, capsys, platform, schedule, most_alive):
    FakeWorker.alive, FakeWorker.most_alive = set(), 0
    monkeypatch.setattr(compare_frameworks, "start_worker",
                        lambda *variant: FakeWorker(*variant, platform=platform))
    monkeypatch.setattr(sys, "argv", ["compare_frameworks.py", *TINY, "--schedule", schedule,
                                      "--torch_variants", "eager,eager+cl3d"])
    compare_frameworks.main()
    assert FakeWorker.most_alive == most_alive
    assert not FakeWorker.alive  # every worker ended
    out = capsys.readouterr().out
    sequential = most_alive == 1
    assert ("one variant at a time" in out) == sequential
    # one variant at a time: each one's result as soon as it is done, before the table
    assert ("done: torch eager: 500.0 ms/step, median of 2, peak memory 1.00 GiB\n" in out) == sequential
    assert "| torch eager | 500.0 | 8.00 | 64.5 | n/a | 1.00 GiB | 2.00 |" in out


@pytest.mark.slow
def test_a_real_run_gives_each_variant_its_time_memory_and_ratio(tmp_path):
    pytest.importorskip("torch")
    rows = tmp_path / "rows.md"
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "compare_frameworks.py"), *TINY,
         "--schedule", "sequential", "--torch_variants", "eager", "--append_rows", str(rows)],
        capture_output=True, text=True, cwd=REPO, timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    lines = rows.read_text().splitlines()
    assert [line.split(" | ")[1] for line in lines] == ["jax auto", "torch eager"]
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 8  # configuration, variant, 5 figures, ratio
        assert cells[6].endswith(" GiB") and float(cells[6].split()[0]) > 0.1
        assert float(cells[7].split()[0]) > 0
