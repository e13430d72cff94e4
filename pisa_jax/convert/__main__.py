"""Entry point of `python -m pisa_jax.convert`."""
import sys

from pisa_jax.convert.cli import main

sys.exit(main())
