"""``spiritlens`` command line: thin subcommands over the Python API.

Each subcommand lives in its own module with ``add_parser(subparsers)``, which registers the
parser and sets ``func`` (a callable taking the parsed namespace and returning an exit code).
Errors about user input (ValueError, FileNotFoundError) become one line on stderr and exit 2, and so
do a missing optional extra (an ImportError whose message gives its ``pip install`` line) and an
output the storage refuses (disk full, file too large, read-only or permission denied:
:func:`spiritlens._io.is_output_error`; :func:`spiritlens._io.save_or_rescue` has already put a
finished result elsewhere and the line says where). Every error line is printed with terminal
control characters in a visible form (:func:`spiritlens.figures.escape.terminal_text`): a file
name or a prompt holding ESC sequences cannot move the cursor.
``--help`` of every command shows every option's default; ``spiritlens --version`` prints the version.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import sys
import warnings

from spiritlens._io import OutputError, is_output_error

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written, and ``(default: …)`` after the help of every option that has a
    value by default (not for flags, nor when the help already says what the default is)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and action.default not in (None, argparse.SUPPRESS)
                and "default" not in text.lower()):
            text = f"{text} (default: %(default)s)".strip()
        return text


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose help always uses :class:`HelpFormatter` (subcommands included)."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        for action in self._actions:  # an option without help text still shows its default
            if action.help is None and action.option_strings and action.default not in (None, argparse.SUPPRESS):
                action.help = "(default: %(default)s)"
        return super().format_help()


SUBCOMMANDS = {
    "make-tiny": "spiritlens.cli.tiny",
    "make-toy": "spiritlens.cli.toy",
    "units": "spiritlens.cli.units",
    "trace": "spiritlens.cli.trace",
    "aggregate": "spiritlens.cli.aggregate",
    "experiment": "spiritlens.cli.experiment",
    "crossmodal": "spiritlens.cli.crossmodal",
}


def build_parser() -> argparse.ArgumentParser:
    from spiritlens import __version__

    parser = Parser(
        prog="spiritlens",
        description="Look inside SpiritLM: causal tracing of factual recall for text and speech prompts.",
    )
    parser.add_argument("--version", action="version", version=f"spiritlens {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
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
    previous = warnings.showwarning
    warnings.showwarning = functools.partial(_warning_line, args.command)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
            NotImplementedError) as error:
        return _error_line(args.command, error)
    except OSError as error:
        if not is_output_error(error):  # not the storage refusing a write: keep the traceback
            raise
        return _error_line(args.command, error)
    except ImportError as error:
        if "pip install" not in str(error):  # not a missing optional extra: a bug, keep its traceback
            raise
        return _error_line(args.command, error)  # the extra's install line
    except KeyboardInterrupt:
        print(f"spiritlens {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


def _warning_line(command: str, message, category, filename, lineno, file=None, line=None) -> None:
    """A warning on the command line: one line, ``spiritlens CMD: warning: message (Category)``."""
    from spiritlens.figures.escape import terminal_text

    text = " ".join(str(message).split())
    print(f"spiritlens {command}: warning: {terminal_text(text)} ({category.__name__})", file=file or sys.stderr)


def print_json_last_resort(data) -> str:
    """Print a finished result's JSON on standard output when no file could hold it (the last resort
    of :func:`spiritlens._io.save_or_rescue`); returns what was done, for the error line."""
    from spiritlens._io import json_text

    print(json_text(data), flush=True)
    return "it is printed on standard output above"


def _error_line(command: str, error: BaseException) -> int:
    """Print ``spiritlens <command>: error: <message>`` (one line, control characters visible); return 2."""
    from spiritlens.figures.escape import terminal_text

    message = str(error)
    if isinstance(error, OSError) and not isinstance(error, OutputError) and error.strerror and error.filename:
        verb = "cannot write " if is_output_error(error) and not isinstance(error, PermissionError) else ""
        message = f"{verb}{error.filename}: {error.strerror}"  # not "[Errno 28] No space left on device: '…'"
    print(f"spiritlens {command}: error: {terminal_text(message)}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
