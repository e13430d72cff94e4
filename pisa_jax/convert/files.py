"""Weight files in (.pth via torch.load(weights_only=True), .safetensors), converted
checkpoints out (orbax + meta.json) and back."""
from __future__ import annotations

import json
import os
import secrets
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


def check_output_dir(out_dir: str | os.PathLike, *, overwrite: bool = False) -> None:
    """Raise ConversionError unless `save_converted` may write to out_dir (before any work)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConversionError(out_dir, "exists and is not a directory")
    for parent in out_dir.absolute().parents:  # mkdir would fail on a file on the way
        if parent.exists():
            if not parent.is_dir():
                raise ConversionError(out_dir, f"{parent} is not a directory")
            break
    if not overwrite and ((out_dir / "variables").exists() or (out_dir / "meta.json").exists()):
        raise ConversionError(out_dir, "already holds a converted checkpoint (--overwrite)")


def save_converted(out_dir: str | os.PathLike, variables: dict, meta: dict, *,
                   overwrite: bool = False) -> None:
    """out_dir/variables (orbax) + out_dir/meta.json, never a mixture of two conversions.

    Both parts are first written under temporary names in out_dir: a failure there (a full
    disk) leaves the previous checkpoint untouched. Then three renames swap them in, meta.json
    last: a directory without meta.json is not a converted checkpoint (`load_converted` refuses
    it), so a crash between the renames leaves no checkpoint rather than new variables with old
    meta. Files in out_dir that are not ours are left alone."""
    import orbax.checkpoint as ocp
    out_dir = Path(out_dir).absolute()
    check_output_dir(out_dir, overwrite=overwrite)
    ckpt_dir, meta_path = out_dir / "variables", out_dir / "meta.json"
    tag = f"{os.getpid()}-{secrets.token_hex(4)}"
    new_ckpt, new_meta = out_dir / f".variables.new-{tag}", out_dir / f".meta.json.new-{tag}"
    old_ckpt = out_dir / f".variables.old-{tag}"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(new_ckpt, variables)
            checkpointer.wait_until_finished()
        with open(new_meta, "w") as f:
            f.write(json.dumps(meta, indent=1, default=str))
            f.flush()
            os.fsync(f.fileno())
        meta_path.unlink(missing_ok=True)  # from here until the last rename: no checkpoint
        if ckpt_dir.exists():
            os.replace(ckpt_dir, old_ckpt)
        os.replace(new_ckpt, ckpt_dir)
        os.replace(new_meta, meta_path)
    except OSError as error:
        raise ConversionError(out_dir, f"cannot write the checkpoint ({_first_line(error)})"
                              ) from None
    finally:  # after a failure in the renames, a .variables.old-* stays for the user to recover
        shutil.rmtree(new_ckpt, ignore_errors=True)
        new_meta.unlink(missing_ok=True)
    shutil.rmtree(old_ckpt, ignore_errors=True)


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
