"""What every command of the project shares: its argument parser and its error handling.

    def main(argv=None) -> int:
        return cli.run(_main, argv)

    def command() -> int:  # `if __name__ == "__main__"` and pyproject's [project.scripts]
        return cli.run_command(_main)

`run` turns a `UserError` (and XLA running out of memory) into one line on stderr and exit
status 1, and Ctrl-C into a short line and status 130, instead of a traceback. Parsers never
accept abbreviated flags: with abbreviations `--lr -1` would silently mean `--lr_schedule -1`.
`run_command` is `run` for a process's command line, where the commands that compute first pick
the allocator.
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from pisa_jax import malloc
from pisa_jax.errors import UserError, is_out_of_memory, out_of_memory_message


def argument_parser(prog: str, description: str | None, **kwargs) -> argparse.ArgumentParser:
    """prog: how the command is run from the source tree (train.py, python -m ...); an installed
    command (pisa-train, pisa-build ...) names itself instead."""
    kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if invoked.startswith("pisa-"):
        prog = invoked
    return argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False,
                                   **kwargs)


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """main(argv) -> exit status, with user errors as one line."""
    try:
        return int(main(argv) or 0)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if not is_out_of_memory(error):
            raise
        print(f"error: {out_of_memory_message(error)}", file=sys.stderr)
        return 1


def run_command(main: Callable[[Sequence[str] | None], int | None]) -> int:
    """run(main) for the command line: the process first re-runs itself under a faster
    allocator where one is installed (`pisa_jax.malloc`), before it imports JAX or reads input;
    a bad $PISA_JAX_MALLOC is then one line, as any UserError."""
    def restarted_main(argv: Sequence[str] | None) -> int | None:
        malloc.restart_with_faster_malloc()
        return main(argv)
    return run(restarted_main)
