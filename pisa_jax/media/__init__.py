"""Decoding and encoding video and audio (ffmpeg), and the mel spectrogram of a sample.

The lowest layer of the data path: it knows files and arrays, nothing of datasets or models.
Modules: `decode` (probe, read_frames, read_audio), `encode` (write_video, for the synthetic
data and the tests), `spectrogram` (the aural input: SAMPLE_RATE, frames_spectrogram).
"""
