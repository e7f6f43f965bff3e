"""``spiritlens`` command line: thin subcommands over the Python API.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which registers the
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
Errors about user input (ValueError, FileNotFoundError) become one line on stderr and exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMANDS = {
    "make-tiny": "spiritlens.cli.tiny",
    "make-toy": "spiritlens.cli.toy",
    "units": "spiritlens.cli.units",
    "trace": "spiritlens.cli.trace",
    "aggregate": "spiritlens.cli.aggregate",
    "experiment": "spiritlens.cli.experiment",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spiritlens",
        description="Look inside SpiritLM: causal tracing of factual recall for text and speech prompts.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in SUBCOMMANDS.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:  # a stage not installed in this build
            if error.name != module_name:
                raise
            continue
        module.add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError) as error:
        print(f"spiritlens {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"spiritlens {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
