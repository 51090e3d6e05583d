"""The ``vmesh`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the module
adds its sub-commands and sets ``func`` on each parser. ``main`` dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute commands, in the order they appear in --help.
COMMAND_MODULES = [
    "visionmesh.cli.convert",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmesh", description="visionmesh command line")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
