"""The ``curvprune`` command: list, train, prune, sweep, report, export.

Every user error exits with status 2 and one line on stderr (``curvprune: error: ...``), never
a traceback: `CurvpruneError` from anywhere in the library, argparse's own errors, and OS errors
on the user's paths. Anything else is a bug and keeps its traceback.

Under ``torchrun`` (``RANK``, ``WORLD_SIZE``, ... in the environment) ``train``, ``prune`` and
``sweep`` join the process group for the command's duration
(`curvprune.experiments.launch`); only rank 0
prints results. Errors that every rank would raise alike (bad options) print on rank 0 only;
errors raised while the ranks run together print on each rank that raises them, tagged.

Layout: `curvprune.cli.parser` (arguments), `curvprune.cli.commands` (what each subcommand
does), `curvprune.cli.export` (the export subcommand); this module is the entry point.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from curvprune.cli import support
from curvprune.cli.commands import COMMANDS
from curvprune.cli.parser import build_parser
from curvprune.errors import CurvpruneError
from curvprune.experiments import launch

__all__ = ["build_parser", "main"]


def _print_error(err: Exception) -> None:
    """One line on stderr; on ranks other than 0 only for errors raised inside the group."""
    rank = getattr(err, "rank", None)
    if rank:
        print(f"curvprune: error: [rank {rank}] {err}", file=sys.stderr)
    elif launch.env_rank() == 0:
        print(f"curvprune: error: {err}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``curvprune`` console script; returns the exit status.

    Returns:
        0 on success, 2 on any user error (after one line on stderr), 130 on Ctrl-C.
    """
    support.safe_console()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("list", "report") and launch.env_rank() != 0:
            return 0  # under torchrun: rank 0 answers alone
        COMMANDS[args.command](args)
    except SystemExit as exit_:  # argparse: --help (0) and usage errors (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    except BrokenPipeError:  # `curvprune list | head`: the reader left, nothing to report
        sys.stdout = None  # no flush of the closed pipe at exit
        return 0
    except (CurvpruneError, OSError) as err:
        # OSError: the user's paths, e.g. an unwritable --out or a directory given as a file.
        _print_error(err)
        return 2
    except KeyboardInterrupt:
        print("curvprune: interrupted", file=sys.stderr)
        return 130
    return 0
