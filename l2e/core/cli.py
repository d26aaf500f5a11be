"""Command-line options defined once: an options dataclass generates its script's ``argparse`` parser.

A script's options live in one dataclass (``TokenizeOptions``, ``MineOptions``); each field is declared with
``option(default, "help", ...)`` and ``options_parser(cls)`` turns the fields into ``--name`` arguments in
declaration order, so the name, type, default, choices and help text are written once and the library call
(``run(Options(**vars(args)))``) cannot drift from the parser. Written by hand because ``argparse`` has no
dataclass bridge and the libraries that have one (``simple-parsing``, ``HfArgumentParser``) would either add a
dependency or bring transformers into scripts that must start before any model library loads.

Also here: ``parse_weights``, the ``name=weight,...`` option type of every script that fuses scores.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Dict, Optional, Sequence, Type, Union


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: Union[Sequence, Callable, None] = None,
           type: Optional[Callable] = None, group: str = "") -> Any:
    """A dataclass field that is also a command-line option.

    ``choices`` may be a callable, called when the parser is built (so a name registered after import, e.g. a
    head from a user's file, is a valid choice); ``type`` parses the string (default: from the annotation);
    ``group`` starts a titled section of ``--help`` (the fields after it belong to it until the next group).
    No default makes the option required.
    """
    meta = {"help": help, "choices": choices, "type": type, "group": group}
    return dataclasses.field(default=default, metadata={"cli": meta})


def _scalar_type(annotation: Any) -> Any:
    """``Optional[int]`` -> ``int``; other annotations as they are."""
    if typing.get_origin(annotation) is Union:
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults (but not empty ones) and keep a script docstring's command lines as written."""

    def _get_help_string(self, action):
        if action.default in ("", None, False) or action.required:
            return action.help
        return super()._get_help_string(action)


def options_parser(cls: Type, description: str = "") -> argparse.ArgumentParser:
    """An ``argparse`` parser with one ``--field`` per field of the dataclass ``cls``, in declaration order."""
    parser = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    hints = typing.get_type_hints(cls)
    target: Any = parser
    for f in dataclasses.fields(cls):
        meta = f.metadata.get("cli")
        if meta is None:
            raise TypeError(f"{cls.__name__}.{f.name} is not declared with l2e.core.cli.option()")
        if meta["group"]:
            target = parser.add_argument_group(meta["group"])
        kwargs: Dict[str, Any] = {"help": meta["help"]}
        kind = _scalar_type(hints[f.name])
        if kind is bool:
            if f.default is not False:
                raise TypeError(f"{cls.__name__}.{f.name}: a bool option must default to False (a switch)")
            kwargs["action"] = "store_true"
        else:
            kwargs["type"] = meta["type"] or kind
            choices = meta["choices"]
            if choices is not None:
                kwargs["choices"] = tuple(choices() if callable(choices) else choices)
            if f.default is dataclasses.MISSING:
                kwargs["required"] = True
            else:
                kwargs["default"] = f.default
        target.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_weights(text: str) -> Dict[str, float]:
    """``dense=1,sparse=0.3`` -> ``{"dense": 1.0, "sparse": 0.3}`` (an ``argparse`` type: bad text is a usage error)."""
    try:
        return {k.strip(): float(v) for k, v in (item.split("=") for item in text.split(",") if item.strip())}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected name=weight,name=weight, e.g. dense=1,bm25=0.5")
