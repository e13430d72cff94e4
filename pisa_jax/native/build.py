"""Compile a C++ source of this package into a shared library, once per machine, and load it.

The library lands in a cache directory (`$PISA_JAX_NATIVE_CACHE`, else
`$XDG_CACHE_HOME/pisa_jax/native` or `~/.cache/pisa_jax/native`) under a name that hashes
everything it depends on (the source, the compile command, the jaxlib version, and the size and
modification time of each library it links and of the headers the caller names), so a changed
source, a new jaxlib or another oneDNN release builds a new one and an old one is never loaded
by mistake. It is
compiled to a temporary name and renamed into place, so a killed build leaves no half library
and two processes building at once both end with a whole one. Nothing is downloaded: the
compiler, jaxlib's FFI headers and the libraries linked are what is installed.
This module imports nothing of the project.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import jax


class NativeBuildError(RuntimeError):
    """A native library could not be compiled or loaded; the message says why, in one line."""


def cache_dir() -> Path:
    if os.environ.get("PISA_JAX_NATIVE_CACHE"):
        return Path(os.environ["PISA_JAX_NATIVE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(base) / "pisa_jax" / "native"


def compiler() -> str | None:
    """$CXX, else the first of c++ and g++ on PATH."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def _identities(library_dir: str, libraries: Sequence[str],
                headers: Sequence[Path]) -> list[tuple[str, int, int]]:
    """(path, size, mtime) of the linked libraries and of `headers`: cheap to read at every
    start (only these files, not a whole include tree such as /usr/include), and any reinstall
    of them changes it."""
    files = [f for name in libraries for f in sorted(Path(library_dir).glob(f"lib{name}.so*"))]
    files += [Path(h) for h in headers]
    identities = []
    for f in files:
        stat = f.stat()  # follows links: the real file's size and time
        identities.append((str(f), stat.st_size, stat.st_mtime_ns))
    return identities


def build_and_load(source: Path, include_dirs: Sequence[str], library_dir: str,
                   libraries: Sequence[str], headers: Sequence[Path] = (),
                   flags: Sequence[str] = ()) -> ctypes.CDLL:
    """The loaded library built from `source` (C++17), with jaxlib's FFI headers and
    `include_dirs` on the include path, linked to `libraries` in `library_dir` (found there at
    run time too, through the library's rpath). `headers`: the included files (beyond
    jaxlib's) whose change must build anew. `flags`: more compiler options, after `-O2`."""
    cxx = compiler()
    if cxx is None:
        raise NativeBuildError("no C++ compiler found (set CXX, or install g++)")
    command = [cxx, "-O2", *flags, "-std=c++17", "-shared", "-fPIC", "-w",
               f"-I{jax.ffi.include_dir()}", *(f"-I{d}" for d in include_dirs),
               str(source), f"-L{library_dir}", *(f"-l{name}" for name in libraries),
               f"-Wl,-rpath,{library_dir}"]
    digest = hashlib.sha256()
    digest.update(Path(source).read_bytes())
    digest.update(repr((command, jax.__version__, jax.lib.__version__)).encode())
    digest.update(repr(_identities(library_dir, libraries, headers)).encode())
    target = cache_dir() / f"lib{Path(source).stem}-{digest.hexdigest()[:16]}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        try:
            try:
                done = subprocess.run(command + ["-o", str(partial)], capture_output=True,
                                      text=True, check=False)
            except OSError as e:
                raise NativeBuildError(f"running the C++ compiler {cxx!r} failed: {e}") from None
            if done.returncode != 0:
                first = next((line for line in done.stderr.splitlines() if "error" in line),
                             done.stderr.strip()[:300])
                raise NativeBuildError(f"compiling {source.name} failed: {first}")
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
    try:
        return ctypes.CDLL(str(target))
    except OSError as e:
        raise NativeBuildError(f"loading {target} failed: {e}") from None


# The header every compiler-only handler includes (its pool chunks and failed futures).
POOL_CHUNKS = Path(__file__).with_name("pool_chunks.h")


def load_handlers(source: Path, targets: Sequence[str], switch: str,
                  flags: Sequence[str] = ()) -> str | None:
    """Builds `source` (a C++ compiler only: no library linked), loads it and registers its FFI
    handler symbols `targets` as CPU targets. None when they are ready, else the reason they
    cannot be used: `$switch` set to "off", or a one-line build error."""
    if os.environ.get(switch, "").lower() == "off":
        return f"turned off by {switch}=off"
    try:
        library = build_and_load(source, [], str(source.parent), [], headers=[POOL_CHUNKS],
                                 flags=flags)
    except NativeBuildError as e:
        return str(e)
    for target in targets:
        jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(library, target)),
                                    platform="cpu")
    return None
