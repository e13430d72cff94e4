"""PISA as a TFDS dataset (array_record, no TensorFlow): builder, configs, build helper.

Imported lazily so that `pisa_jax.data` can find the shipped annotations without TFDS.
"""
_EXPORTS = {"Builder": "pisa_dataset_builder", "PisaConfig": "pisa_dataset_builder",
            "build": "prepare", "BuildResult": "prepare", "make_config": "prepare"}


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
