"""benchmarks/gpu_suite.sh: its tiny dry run on a CPU, with only the items picked, and within
its time budget."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_suite(out: pathlib.Path, **settings: str) -> str:
    """The suite's tiny dry run, JAX only (no PyTorch variant); its table."""
    env = dict(os.environ, PYTHON=sys.executable, PISA_SUITE_TINY="1",
               PISA_SUITE_TORCH_FULL="none", PISA_SUITE_TORCH_LIGHT="none",
               JAX_COMPILATION_CACHE_DIR=str(out / "cache"), **settings)
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_suite.sh"), str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return (out / "gpu_suite.md").read_text()


@pytest.mark.slow
def test_only_the_picked_items_run_and_the_table_has_their_rows(tmp_path):
    table = run_suite(tmp_path, PISA_SUITE_ITEMS="2")
    assert ", items 2\n" in table
    rows = [line for line in table.splitlines() if line.startswith("| r18+r18 ")]
    assert len(rows) == 3, table  # item 2: bf16 (the default, and channels last) and float32
    assert rows[0].startswith("| r18+r18 bfloat16 b32 ") and rows[0].endswith("| 1.00 (JAX) |")
    assert rows[1].startswith("| r18+r18 bfloat16 b32 ")
    assert "| jax auto:xla_gpu_force_conv_nhwc=true |" in rows[1]
    assert rows[2].startswith("| r18+r18 float32 b32 ") and rows[2].endswith("| 1.00 (JAX) |")
    # the items not picked leave no section and are not reported as skipped
    assert "input path and conv lowering" not in table and "Where the JAX step" not in table
    assert "Skipped" not in table
    log = (tmp_path / "log.txt").read_text()
    assert "1. bf16 check" not in log and "5. " not in log
    assert "done: jax auto: " in log  # each variant's result as soon as it is done


def test_an_item_past_the_budget_and_its_grace_is_stopped_and_the_table_still_printed(tmp_path):
    table = run_suite(tmp_path, PISA_SUITE_ITEMS="2,3", PISA_SUITE_BUDGET_S="1",
                      PISA_SUITE_GRACE_S="1")
    # the first item starts within the budget; JAX's compile alone outlasts budget and grace
    assert "| r18+r18 b32 bfloat16 | stopped at the time budget" in table
    assert "- 2. r18+r18 b32 float32\n- 3. r18+r18 b32 bf16: JAX input path and lowering" in table
