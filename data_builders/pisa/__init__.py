"""PISA as a TFDS dataset (array_record, no TensorFlow).

Importing this package registers the builder with TFDS, so that
    tfds.builder("pisa/consecutive", data_dir=...)
    tfds.data_source("pisa/consecutive", split="train[:100]", data_dir=...)
find it. Build with `python -m data_builders.pisa --manual_dir DIR` (or `pisa-build`).
"""
from data_builders.pisa.pisa_dataset_builder import Builder, PisaConfig

VERSION = str(Builder.VERSION)

__all__ = ["VERSION", "Builder", "PisaConfig"]
