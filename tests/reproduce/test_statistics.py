"""The figures of RESULTS.md: means over seeds, the bootstrap interval by video, epoch timing."""
import json

import numpy as np
import pytest

from pisa_jax.reproduce.statistics import bootstrap_ci_by_video, mean_std, seconds_per_epoch


def _table(rows):
    """[(video_id, samples, correct)] -> a per-video table of the multimodal head."""
    return [{"video_id": v, "true_level": 1, "samples": n, "predicted_level": {"multimodal": 1},
             "correct_samples": {"multimodal": c}} for v, n, c in rows]


def test_the_interval_resamples_videos_not_samples():
    """Two recordings of 50 samples, one all right, one all wrong: a draw of two recordings
    is both right (p 1/4), both wrong (1/4) or one of each (1/2), so the 95 % interval is
    [0, 100]. Resampling the 100 samples instead would give about 50 +- 10."""
    low, high = bootstrap_ci_by_video([_table([(1, 50, 50), (2, 50, 0)])], "multimodal")
    assert (low, high) == (0.0, 100.0)


def test_the_interval_weights_recordings_by_their_samples_and_averages_seeds():
    # Every recording equally good: no spread, whatever the draw.
    assert bootstrap_ci_by_video([_table([(1, 10, 5), (2, 30, 15), (3, 20, 10)])],
                                 "multimodal") == pytest.approx((50.0, 50.0))
    # Two seeds on the same recordings: the statistic is their mean, per draw. Seed A gets
    # recording 1 (10 samples) right, seed B recording 2 (30 samples): draws {1,1} -> 50,
    # {2,2} -> 50, {1,2} -> (10/40 + 30/40) / 2 = 50: every draw gives 50.
    seeds = [_table([(1, 10, 10), (2, 30, 0)]), _table([(2, 30, 30), (1, 10, 0)])]
    assert bootstrap_ci_by_video(seeds, "multimodal") == pytest.approx((50.0, 50.0))
    # The point estimate lies inside, the interval is reproducible (fixed generator seed).
    table = _table([(v, 10, c) for v, c in enumerate([10, 9, 2, 7, 0, 5, 10, 3])])
    low, high = bootstrap_ci_by_video([table], "multimodal")
    assert low < 100 * 46 / 80 < high
    assert (low, high) == bootstrap_ci_by_video([table], "multimodal")
    with pytest.raises(ValueError, match="different test videos"):
        bootstrap_ci_by_video([table, table[:-1]], "multimodal")


def test_mean_and_std_over_seeds():
    assert mean_std([60.0, 70.0]) == (65.0, pytest.approx(np.sqrt(50.0)))  # ddof 1
    assert mean_std([60.0]) == (60.0, None)
    assert mean_std([None, 0.5]) == (0.5, None)    # an undefined Spearman is left out
    assert mean_std([]) == (None, None)


def test_seconds_per_epoch_leave_out_the_compiling_first_epoch(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"kind": "train", "epoch": 1, "seconds": 100.0},
               {"kind": "eval", "epoch": 1},
               {"kind": "train", "epoch": 2, "seconds": 10.0},
               {"kind": "train", "epoch": 3, "seconds": 12.0},
               {"kind": "train", "epoch": 4, "seconds": 50.0}]  # e.g. a resumed epoch
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "{cut")
    assert seconds_per_epoch(path) == 12.0   # median of epochs 2-4
    path.write_text(json.dumps(records[0]) + "\n")
    assert seconds_per_epoch(path) == 100.0  # one epoch: all there is
    assert seconds_per_epoch(tmp_path / "absent.jsonl") is None
