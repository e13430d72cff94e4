"""Fixtures for the data tests (helpers in data_helpers.py)."""
import json

import pytest

from data_helpers import SR, coded_frames, tone
from pisa_jax.data import encode


@pytest.fixture
def write_coded_video():
    def write(path, n, fps, height=48, width=64, audio=True, box=None):
        audio_data = tone(int(round(n / fps * SR))) if audio else None
        encode.write_video(path, coded_frames(n, height, width, box), fps, audio_data, SR)
        return path
    return write


@pytest.fixture
def write_annotations():
    def write(path, splits):
        path.write_text(json.dumps(splits))
        return str(path)
    return write


@pytest.fixture
def small_config():
    """A builder config with tiny shapes: 2 clips x 4 frames, 32x32 frames, 16x16 spectra."""
    import dataclasses
    from data_builders.pisa.prepare import make_config

    def make(annotations, name="consecutive", **changes):
        config = make_config(name, annotations)
        fields = dict(image_size=32, clips_per_sample=2, clip_length=4, spectrogram_size=16)
        return dataclasses.replace(config, **{**fields, **changes})
    return make
