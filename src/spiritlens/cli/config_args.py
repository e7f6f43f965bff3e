"""Command-line options generated from a configuration dataclass, so the two cannot disagree.

Each field of the dataclass is one option (SAELens parses its runner's CLI from the same dataclasses
its API takes). The option is ``--field-name`` unless the field's metadata names a ``flag``; its help
is the metadata's ``help``; its default is the field's own, shown in ``--help`` and applied by the
dataclass itself (options not given are not passed). ``tuple[str, ...]`` fields take a
comma-separated list; a ``bool`` field defaulting to False is a ``--flag``, one defaulting to True a
``--no-flag``; metadata ``choices`` and ``metavar`` go to argparse; ``cli: False`` keeps a field off
the command line. Values are checked by the dataclass's ``__post_init__`` (one line naming the flag).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _converter(annotation: str):
    base = annotation.replace(" ", "").replace("|None", "")
    if base == "int":
        return int
    if base.startswith("tuple["):
        return _csv
    return str  # str, Path and Path|str: the dataclass turns them into paths itself


def cli_fields(cls) -> list[dataclasses.Field]:
    """The fields of ``cls`` that are command-line options."""
    return [f for f in dataclasses.fields(cls) if f.init and f.metadata.get("cli", True)]


def option_name(field: dataclasses.Field) -> str:
    """The option string of a field: metadata ``flag``, ``--no-name`` for a True-by-default bool,
    else ``--name`` with dashes."""
    if "flag" in field.metadata:
        return field.metadata["flag"]
    name = "--" + field.name.replace("_", "-")
    return "--no-" + name[2:] if str(field.type) == "bool" and field.default is True else name


def add_config_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """One option per command-line field of the dataclass ``cls`` (module docstring)."""
    for field in cli_fields(cls):
        flag, meta = option_name(field), field.metadata
        has_default = field.default is not dataclasses.MISSING
        kwargs: dict[str, Any] = {"dest": field.name, "help": meta.get("help")}
        if str(field.type) == "bool":
            kwargs["action"] = "store_false" if field.default is True else "store_true"
            kwargs["default"] = argparse.SUPPRESS
        else:
            kwargs["type"] = _converter(str(field.type))
            if has_default:
                default = field.default
                shown = ",".join(default) if isinstance(default, tuple) else default
                # not applied by argparse (SUPPRESS keeps it out of the namespace); only shown
                if shown is not None and "(default:" not in (meta.get("help") or ""):
                    kwargs["help"] = f"{meta.get('help') or ''} (default: {shown})".strip()
                kwargs["default"] = argparse.SUPPRESS
            else:
                kwargs["required"] = True
            for key in ("choices", "metavar"):
                if key in meta:
                    kwargs[key] = meta[key]
        parser.add_argument(flag, **kwargs)


def config_from_args(cls, args: argparse.Namespace):
    """The ``cls`` instance of the options given on the command line (the rest: the field defaults)."""
    given = {f.name: getattr(args, f.name) for f in cli_fields(cls) if hasattr(args, f.name)}
    return cls(**given)
