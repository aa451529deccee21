"""`feast-bc`: the command line of the serving side.

Nothing imported here loads Feast (seconds) or torch: only the subcommands that run Feast
(`selfcheck`, `status` without ``--no-feast``, `serve`, `push`) import it, on use. A refusal
(:class:`feast_bc.errors.FeastBCError`) prints one clear line to stderr and exits with status 2;
nothing is written in that case. One module per kind of command: :mod:`.repo_commands` (create and
read), :mod:`.maintenance_commands` (change what is served), :mod:`.serving_commands` (run against the
stores); :mod:`.arguments` holds what they share.
"""

from __future__ import annotations

import argparse
import sys

from feast_bc.cli import maintenance_commands, repo_commands, serving_commands
from feast_bc.cli.arguments import parse_pairs, whole_number
from feast_bc.cli.serving_commands import cmd_serve
from feast_bc.errors import FeastBCError

__all__ = ["build_parser", "cmd_serve", "main", "parse_pairs", "whole_number"]


def build_parser() -> argparse.ArgumentParser:
    """The `feast-bc` parser: every subcommand with its options (the defaults of shared settings
    come from where they live: the audit's sample, the server's config)."""
    p = argparse.ArgumentParser(prog="feast-bc", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    for commands in (repo_commands, maintenance_commands, serving_commands):
        commands.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except FeastBCError as exc:
        print(f"feast-bc: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a file that cannot be removed: one line, not a traceback
        print(f"feast-bc: error: {exc.strerror or exc}: {exc.filename or ''} -- nothing was changed", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
