"""The package as pip installs it: every command's entry point exists, and the data the builder
needs at run time (the shipped annotations) and the native sources are package data."""
import fnmatch
import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_installed_command_points_to_its_entry_function():
    scripts = PROJECT["project"]["scripts"]
    assert set(scripts) == {"pisa-train", "pisa-build", "pisa-convert", "pisa-evaluate",
                            "pisa-predict", "pisa-reproduce"}
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        # the commands that compute pick their allocator first (pisa_jax.malloc)
        computes = name in ("pisa-train", "pisa-evaluate", "pisa-predict", "pisa-reproduce")
        assert function == ("command" if computes else "main"), name


def test_the_shipped_annotations_are_package_data():
    patterns = PROJECT["tool"]["setuptools"]["package-data"]["data_builders.pisa"]
    folder = ROOT / "data_builders" / "pisa"
    shipped = [p.relative_to(folder).as_posix() for p in (folder / "annotations").iterdir()]
    assert len(shipped) == 5
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in shipped)


def test_the_native_sources_are_package_data():
    """The C++ handlers are compiled where the package is installed: every source and header."""
    patterns = PROJECT["tool"]["setuptools"]["package-data"]["pisa_jax.native"]
    folder = ROOT / "pisa_jax" / "native"
    sources = [p.name for p in folder.iterdir() if p.suffix in (".cc", ".h")]
    assert {"onednn_conv.cc", "onednn_pool.cc", "onednn_common.h", "adam.cc"} <= set(sources)
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in sources)


def test_the_declared_licence_has_its_text():
    assert PROJECT["project"]["license"] == "Apache-2.0"
    assert PROJECT["project"]["license-files"] == ["LICENSE"]
    assert "Apache License\n                           Version 2.0" in (ROOT / "LICENSE").read_text()
