"""PISA data: media decoding, spectrograms, annotations, the synthetic dataset and the input
pipeline. Names are imported on first use, so `import pisa_jax.data` stays light (no JAX, no
TFDS, no librosa until needed)."""
import importlib

_EXPORTS = {
    "DataError": "errors", "MediaError": "errors",
    "VideoInfo": "media", "probe": "media", "read_frames": "media", "read_audio": "media",
    "sample_spectrogram": "spectrogram", "frames_spectrogram": "spectrogram",
    "load_annotations": "annotations",
    "ensure_synthetic": "synthetic", "DatasetRef": "synthetic",
    "open_dataset": "dataset", "open_path": "dataset", "Dataset": "dataset",
    "train_batches": "pipeline", "eval_batches": "pipeline", "steps_per_epoch": "pipeline",
    "eval_steps": "pipeline", "prefetch_to_device": "pipeline", "prepare_inputs": "pipeline",
    "NORMALIZATION": "pipeline",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
