"""Video-level scores: the mean of a recording's sample probabilities decides its level."""
import numpy as np
import pytest

from pisa_jax.train import videos
from pisa_jax.train.reports import evaluation_results


def _probs(rows):
    """rows of {class: probability} -> float [n, 10] (the rest spread evenly)."""
    out = np.zeros((len(rows), 10))
    for i, row in enumerate(rows):
        rest = (1.0 - sum(row.values())) / (10 - len(row))
        out[i] = rest
        for c, p in row.items():
            out[i, c] = p
    return out


def test_a_hand_made_case():
    """Recording 7 (level 3 = class 2): two samples pick class 2 (0.4 vs 0.3), one picks class 5
    (0.36 vs 0.1): 2 of 3 samples right, but the mean (class 2: 0.30, class 5: 0.32) is wrong.
    Recording 4 (level 1): each sample wrong (class 1, then class 3, each 0.5 vs 0.45), the mean
    right (class 0: 0.45). Recording 9 (level 10): one sample, right."""
    probs = _probs([{2: 0.4, 5: 0.3}, {2: 0.4, 5: 0.3}, {2: 0.1, 5: 0.36},
                    {1: 0.5, 0: 0.45}, {3: 0.5, 0: 0.45}, {9: 0.9}])
    labels = np.array([2, 2, 2, 0, 0, 9])
    video_ids = np.array([7, 7, 7, 4, 4, 9])
    table = videos.video_table({"multimodal": probs}, labels, video_ids)
    assert [(r["video_id"], r["true_level"], r["samples"], r["predicted_level"]["multimodal"],
             r["correct_samples"]["multimodal"]) for r in table] == [
        (7, 3, 3, 6, 2), (4, 1, 2, 1, 0), (9, 10, 1, 10, 1)]
    assert videos.video_accuracy(table, "multimodal") == pytest.approx(200.0 / 3)
    sure = _probs([{c: 0.9} for c in labels])   # another head, right on every sample
    results = evaluation_results({"multimodal": probs, "aural": sure}, labels,
                                 primary="multimodal", video_ids=video_ids)
    assert results["accuracy"] == 50.0                      # 3 of 6 samples
    assert results["video_accuracy"] == pytest.approx(200.0 / 3)   # 2 of 3 recordings
    assert results["heads"]["aural"]["video_accuracy"] == 100.0
    assert results["num_videos"] == 3
    csv = videos.table_csv(results["videos"]).splitlines()
    assert csv[0] == ("video_id,true_level,samples,predicted_level_multimodal,"
                      "correct_samples_multimodal,predicted_level_aural,correct_samples_aural")
    assert csv[1:] == ["7,3,3,6,2,3,3", "4,1,2,1,0,1,2", "9,10,1,10,1,10,1"]


def test_no_video_ids_no_video_scores():
    probs, labels = _probs([{0: 0.9}, {1: 0.9}]), np.array([0, 1])
    for ids in (None, np.array([-1, -1])):   # predict's cuts of one file carry no recording
        results = evaluation_results({"visual": probs}, labels, primary="visual", video_ids=ids)
        assert "videos" not in results and "video_accuracy" not in results["heads"]["visual"]
