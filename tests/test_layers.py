"""The data flows one way: no module imports from a layer above its own.

Layers, lowest first (a module may import its own package and any lower layer):
  0  pisa_jax (the package root), pisa_jax.errors, pisa_jax.cli, pisa_jax.files,
     pisa_jax.xla_options, pisa_jax.compile_cache, pisa_jax.malloc, pisa_jax.native (oneDNN's
     convolutions through XLA's FFI)
  1  pisa_jax.media (decoding, spectrograms) | pisa_jax.models
  2  data_builders (the TFDS builder)        | pisa_jax.convert (PyTorch weights)
     | pisa_jax.reference (PyTorch models for parity tests and benchmarks: no project module
       imports it)
  3  pisa_jax.data (opening a built dataset, the input pipeline)
  4  pisa_jax.train
  5  the commands on top: pisa_jax.evaluate, .predict, .reproduce, .experiments, .api, train.py
Every import counts, also those inside functions. One exception, listed in PUBLIC_FACE: the
package root's `pisa_jax.load` imports the top layer's API when it is called (never at import).
"""
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [
    ["pisa_jax.errors", "pisa_jax.cli", "pisa_jax.files", "pisa_jax.xla_options",
     "pisa_jax.compile_cache", "pisa_jax.malloc", "pisa_jax.native", "pisa_jax"],
    ["pisa_jax.media", "pisa_jax.models"],
    ["data_builders", "pisa_jax.convert", "pisa_jax.reference"],
    ["pisa_jax.data"],
    ["pisa_jax.train"],
    ["pisa_jax.evaluate", "pisa_jax.predict", "pisa_jax.reproduce", "pisa_jax.experiments",
     "pisa_jax.api", "train"],
]

# (importing module, imported package): the package root re-exports the user API lazily.
PUBLIC_FACE = {("pisa_jax", "pisa_jax.api")}


def _group(module: str):
    """(layer, package) of a project module, None for third-party ones. The longest prefix
    wins, so pisa_jax.data is layer 3 although pisa_jax itself is layer 0."""
    best = None
    for layer, packages in enumerate(LAYERS):
        for package in packages:
            if module == package or module.startswith(package + "."):
                if best is None or len(package) > len(best[1]):
                    best = (layer, package)
    return best


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str):
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:  # `from pisa_jax import train` imports pisa_jax.train
                yield node.lineno, f"{base}.{alias.name}"


def violations(files) -> list[str]:
    found = []
    for path in files:
        module = _module_name(path)
        own = _group(module)
        if own is None:
            continue
        for line, imported in _imports(path, module):
            target = _group(imported)
            if target is None or target[1] == own[1] or (module, target[1]) in PUBLIC_FACE:
                continue
            sideways = target[0] == own[0] > 0  # layer 0's small modules may use each other
            if target[0] > own[0] or sideways:
                found.append(f"{path.relative_to(ROOT)}:{line}: {module} (layer {own[0]}) "
                             f"imports {target[1]} (layer {target[0]})")
    return list(dict.fromkeys(found))  # `from a import b` is one import, not two


def _project_files():
    files = [ROOT / "train.py"]
    for top in ("pisa_jax", "data_builders"):
        files += sorted((ROOT / top).rglob("*.py"))
    return files


def test_no_module_imports_from_a_higher_layer():
    assert violations(_project_files()) == []


def test_no_project_module_imports_the_pytorch_reference():
    """Training, evaluation and prediction never need PyTorch: only tests and benchmarks use
    pisa_jax.reference."""
    found = [f"{path.relative_to(ROOT)}:{line}" for path in _project_files()
             if not _module_name(path).startswith("pisa_jax.reference")
             for line, imported in _imports(path, _module_name(path))
             if imported == "pisa_jax.reference" or imported.startswith("pisa_jax.reference.")]
    assert found == []


def test_every_project_module_has_a_layer():
    assert [str(p) for p in _project_files() if _group(_module_name(p)) is None] == []


def test_the_check_finds_an_upward_and_a_sideways_import(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "pisa_jax" / "data").mkdir(parents=True)
    (tmp_path / "pisa_jax" / "media").mkdir()
    bad = tmp_path / "pisa_jax" / "data" / "dataset.py"
    bad.write_text("def f():\n    from pisa_jax.train import loop\n")
    sideways = tmp_path / "pisa_jax" / "media" / "decode.py"
    sideways.write_text("from pisa_jax.models import SkillModel\nfrom . import encode\n")
    assert [v.split(": ")[0] for v in violations([bad, sideways])] == [
        "pisa_jax/data/dataset.py:2", "pisa_jax/media/decode.py:1"]
