import sys

from pisa_jax.reproduce.cli import main

sys.exit(main())
