import sys

from pisa_jax.reproduce.cli import command

sys.exit(command())
