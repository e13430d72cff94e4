"""python -m pisa_jax.train ... : the same command as train.py."""
import sys

from pisa_jax.train.flags import command

if __name__ == "__main__":
    sys.exit(command())
