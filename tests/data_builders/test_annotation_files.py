"""The shipped PISA annotations, the schema checks and the restricted pickle reader."""
import collections
import io
import json
import pickle

import numpy as np
import pytest

from data_builders.pisa.layouts import crop_reference_heights
from data_builders.pisa.pickles import load_ready2use
from data_builders.pisa import annotation_files as A
from pisa_jax.errors import DataError

TRAIN_IDS = {1, 2, 4, 5, 6, 7, 8, 10, 12, 13, 14, 16, 18, 19, 20, 22, 23, 25, 28, 29, 30, 34,
             35, 36, 41, 42, 44, 46, 47, 48, 50, 51, 52, 54, 56, 57, 61}
TRAIN_LEVELS = {0: 18, 1: 19, 2: 34, 3: 16, 4: 27, 5: 22, 6: 72, 7: 89, 8: 157, 9: 62}
TEST_LEVELS = {0: 4, 2: 16, 3: 27, 5: 11, 6: 21, 7: 142, 8: 107, 9: 148}


@pytest.mark.parametrize("sampling", ["consecutive", "unidist"])
def test_shipped_annotations(sampling):
    splits = A.load_annotations(None, sampling)
    train, test = splits["train"], splits["test"]
    assert (len(train), len(test)) == (516, 476)
    assert {s.video_id for s in train} == TRAIN_IDS
    assert {s.video_id for s in train} | {s.video_id for s in test} == set(range(1, 62))
    assert dict(collections.Counter(s.player_level for s in train)) == TRAIN_LEVELS
    assert dict(collections.Counter(s.player_level for s in test)) == TEST_LEVELS
    assert all(s.frames.shape == (160,) for s in train + test)


def test_schemes_use_the_same_frames_per_video():
    frames = {}
    for sampling in ("consecutive", "unidist"):
        for split in A.load_annotations(None, sampling).values():
            for s in split:
                frames.setdefault((sampling, s.video_id), []).append(s.frames)
    for (sampling, video), arrays in frames.items():
        if sampling == "consecutive":
            n = len(arrays)
            together = np.sort(np.concatenate(arrays))
            np.testing.assert_array_equal(together, np.arange(160 * n))
            other = np.sort(np.concatenate(frames[("unidist", video)]))
            np.testing.assert_array_equal(together, other)


def test_raw_annotations_and_crop_reading():
    raw = A.load_raw_annotations()
    assert len(raw) == 61 and len({v.youtube_id for v in raw.values()}) == 40
    assert raw[13].youtube_id == "Onr0UtD-h18"   # the link has a stray trailing '-'
    assert raw[14].crop == (104, 33, 614, 331) and raw[14].start_s == 0   # "0;00"
    assert raw[21].start_s == 5 * 60 + 11
    heights = crop_reference_heights(raw)
    assert {v.video_id for v in raw.values() if heights[v.youtube_id] == 720} == {1, 2, 3, 4, 5}
    assert set(heights.values()) == {360, 720}


def test_split_by_source_separates_recordings():
    raw = A.load_raw_annotations()
    splits = A.split_by_source(A.load_annotations(), raw)
    assert (len(splits["train"]), len(splits["test"])) == (544, 448)
    sources = [{raw[s.video_id].youtube_id for s in splits[k]} for k in ("train", "test")]
    assert not sources[0] & sources[1]


def test_schema_problems_are_all_listed(tmp_path):
    good = {"key": "1_0", "video_id": 1, "sample_idx": 0, "player_level": 3, "song_level": 1,
            "framerate": 25.0, "frames": [0, 1]}
    bad = [good, good, {**good, "sample_idx": 1, "key": "1_1", "player_level": 12},
           {**good, "sample_idx": 2, "key": "1_2", "frames": "0-1"},
           {k: v for k, v in good.items() if k != "framerate"}, "not a record"]
    path = tmp_path / "ann.json"
    path.write_text(json.dumps({"train": bad}))
    with pytest.raises(DataError) as error:
        A.load_annotations(path)
    text = str(error.value)
    for expected in ["player_level 12", "frames", "framerate", "must be an object",
                     "appears 2 times"]:
        assert expected in text
    assert str(path) in text
    path.write_text("{not json")
    with pytest.raises(DataError, match="not readable as JSON"):
        A.load_annotations(path)


def test_pickles_read_without_running_code(tmp_path):
    data = {(3, 0): {"frames": np.arange(4, dtype=np.int64), "framerate": 29.97,
                     "player_level": 2, "song_level": 1}}
    path = tmp_path / "annotations_consecutive_train.pkl"
    path.write_bytes(pickle.dumps(data, protocol=3))
    assert load_ready2use(path)[0] == {"key": "3_0", "video_id": 3, "sample_idx": 0,
                                       "player_level": 2, "song_level": 1, "framerate": 29.97,
                                       "frames": [0, 1, 2, 3]}
    assert len(A.load_annotations(tmp_path)["train"]) == 1   # a folder of Ready2Use pickles

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))
    buffer = io.BytesIO()
    pickle.dump({(1, 0): Evil()}, buffer)
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DataError, match="builtins.print is not allowed"):
        load_ready2use(path)
