"""Reading Parmar's Ready2Use annotation pickles without trusting them.

A plain `pickle.load` can run any code a file names. These pickles only need numpy arrays
(dict[(video_id, sample_idx)] -> {"frames": int64 array, "framerate", "player_level",
"song_level"}), so the unpickler below resolves exactly the three numpy globals that arrays
need and refuses everything else.

    python -m data_builders.pisa.pickles annotations_consecutive_train.pkl out.json
"""
from __future__ import annotations

import io
import json
import pickle
import sys
from pathlib import Path

import numpy as np

from pisa_jax.errors import DataError


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as fn  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct as fn
    return fn


_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): lambda: np.ndarray,
    ("numpy", "dtype"): lambda: np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")
        return _ALLOWED[(module, name)]()


def load_ready2use(path: str | Path) -> list[dict]:
    """A Ready2Use .pkl -> sample records in the JSON schema, in the pickle's order."""
    path = Path(path)
    try:
        data = _ArraysOnlyUnpickler(io.BytesIO(path.read_bytes())).load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise DataError([(path, f"not a readable annotation pickle: {error}")]) from None
    if not isinstance(data, dict):
        raise DataError([(path, f"expected a dict, got {type(data).__name__}")])
    records = []
    for key, value in data.items():
        if not (isinstance(key, tuple) and len(key) == 2 and isinstance(value, dict)):
            raise DataError([(path, f"unexpected entry {key!r}")])
        video_id, sample_idx = (int(k) for k in key)
        records.append({"key": f"{video_id}_{sample_idx}", "video_id": video_id,
                        "sample_idx": sample_idx,
                        "player_level": int(value.get("player_level", -1)),
                        "song_level": int(value.get("song_level", -1)),
                        "framerate": float(value.get("framerate", 0.0)),
                        "frames": [int(f) for f in np.asarray(value.get("frames", []))]})
    return records


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m data_builders.pisa.pickles IN.pkl OUT.json")
    Path(sys.argv[2]).write_text(json.dumps(load_ready2use(sys.argv[1])))
