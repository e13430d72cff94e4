"""Weight files in (.pth via torch.load(weights_only=True), .safetensors), converted
checkpoints out (orbax + meta.json) and back."""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import jax
import numpy as np

from pisa_jax.convert.state_dict import ConversionError, clean_state_dict


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]


def load_weight_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """A .pth / .pt (torch.load, weights_only) or .safetensors file -> {key: float32 array}."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(path, "no such file" if not path.exists() else "not a file")
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        try:
            return clean_state_dict(load_file(str(path)), path)
        except ConversionError:
            raise
        except Exception as error:  # safetensors raises its own error types
            raise ConversionError(path, f"not a readable safetensors file ({_first_line(error)})"
                                  ) from None
    with open(path, "rb") as f:
        head = f.read(4)
    if not head:
        raise ConversionError(path, "is empty")
    if not zipfile.is_zipfile(path):
        if head.startswith(b"PK"):
            raise ConversionError(path, "truncated or damaged (its zip archive has no end)")
        if not head.startswith(b"\x80"):  # torch.save's legacy format starts as a pickle
            raise ConversionError(path, "not a PyTorch checkpoint (neither zip nor pickle)")
    try:
        import torch
    except ImportError:
        raise ConversionError(path, "reading .pth needs PyTorch: install the 'torch' extra, or "
                                    "convert the file to .safetensors") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        problem = ("holds Python objects besides tensors; not unpickling them" if
                   "Weights only load failed" in str(error) else
                   f"cannot be read as a PyTorch checkpoint ({_first_line(error)})")
        raise ConversionError(path, problem) from None
    return clean_state_dict(obj, path)


def save_converted(out_dir: str | os.PathLike, variables: dict, meta: dict, *,
                   overwrite: bool = False) -> None:
    """out_dir/variables (orbax, written atomically) + out_dir/meta.json (written last)."""
    import orbax.checkpoint as ocp
    out_dir = Path(out_dir).absolute()
    ckpt_dir, meta_path = out_dir / "variables", out_dir / "meta.json"
    if ckpt_dir.exists() or meta_path.exists():
        if not overwrite:
            raise ConversionError(out_dir, "already holds a converted checkpoint (--overwrite)")
        meta_path.unlink(missing_ok=True)
        shutil.rmtree(ckpt_dir, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(ckpt_dir, variables)
        checkpointer.wait_until_finished()
    tmp = meta_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1, default=str))
    os.replace(tmp, meta_path)


def load_converted(out_dir: str | os.PathLike) -> tuple[dict, dict]:
    """(variables as a numpy tree, meta) from a directory written by `save_converted`."""
    import orbax.checkpoint as ocp
    out_dir = Path(out_dir).absolute()
    meta_path = out_dir / "meta.json"
    if not meta_path.is_file():
        raise ConversionError(out_dir, "no meta.json: not a converted checkpoint "
                                       "(make one with python -m pisa_jax.convert)")
    try:
        meta = json.loads(meta_path.read_text())
        with ocp.StandardCheckpointer() as checkpointer:
            variables = checkpointer.restore(out_dir / "variables")
    except Exception as error:  # a damaged directory: json or orbax errors of many kinds
        raise ConversionError(out_dir, f"cannot be restored ({_first_line(error)})") from None
    return jax.tree_util.tree_map(np.asarray, variables), meta
