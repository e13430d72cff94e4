"""Which annotated frames a smaller stored sample keeps (extract.select_frames)."""
import numpy as np
import pytest

from data_builders.pisa.extract import select_frames


def test_pisa_sample_to_two_clips_of_eight_keeps_every_tenth_frame():
    kept = select_frames(np.arange(320, 480), 2, 8)   # sample 2 of a video: frames 320..479
    np.testing.assert_array_equal(kept, 320 + np.arange(5, 160, 10))


def test_as_many_frames_as_annotated_keeps_them_all():
    frames = np.arange(160) * 3
    np.testing.assert_array_equal(select_frames(frames, 10, 16), frames)


def test_spread_clips_keep_their_time_order_within_each_half():
    # unidist: 10 runs of 16 consecutive frames spread over the video, 100 frames apart
    annotated = np.concatenate([100 * c + np.arange(16) for c in range(10)])
    kept = select_frames(annotated, 2, 8)
    assert np.all(np.diff(kept) > 0)
    assert kept[:8].max() < 500 <= kept[8:].min()     # clip 0 from runs 0-4, clip 1 from 5-9


@pytest.mark.parametrize("clips, length", [(3, 8), (2, 81)])
def test_shapes_that_do_not_divide_the_sample_are_refused(clips, length):
    with pytest.raises(ValueError, match="cannot make"):
        select_frames(np.arange(160), clips, length)
