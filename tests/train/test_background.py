"""The training's background thread (the evaluation figures)."""
import threading

import pytest

from pisa_jax.train.background import BackgroundJobs


def test_jobs_run_in_order_off_the_callers_thread():
    jobs, release, seen = BackgroundJobs(), threading.Event(), []

    def first():
        release.wait(10)
        seen.append(threading.current_thread().name)
    jobs.submit(first)
    assert seen == []  # submit did not wait for the job
    release.set()
    jobs.submit(lambda: seen.append("second"))  # waits for the first one
    assert seen[0].startswith("pisa_jax_reports") and seen[0] != threading.current_thread().name
    jobs.close()
    assert seen[1:] == ["second"]


def test_a_failed_job_is_raised_at_the_next_submit_or_at_close():
    jobs = BackgroundJobs()
    jobs.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        jobs.submit(lambda: None)
    jobs.submit(lambda: [][1])
    with pytest.raises(IndexError):
        jobs.close()
