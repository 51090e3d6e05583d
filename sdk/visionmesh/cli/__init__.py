"""The ``vmesh`` command line.

Each command group lives in its own module exposing ``register(subparsers)``; the module
adds its sub-commands and sets ``func`` on each parser. ``main`` dispatches, and turns
errors into a message on stderr and an exit code (see ``_common.EXIT_CODES_HELP``).

The offline commands (``OFFLINE_COMMANDS``) are parsed with their own module alone, so
``vmesh convert`` neither imports grpc and the client nor builds every other parser.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from visionmesh.cli._common import EXIT_CODES_HELP, INTERRUPTED, USAGE, common_options, run_command

# Modules that contribute commands, in the order they appear in --help.
COMMAND_MODULES = [
    "visionmesh.cli.account",
    "visionmesh.cli.datasets",
    "visionmesh.cli.training",
    "visionmesh.cli.assist",
    "visionmesh.cli.convert",
    "visionmesh.cli.models_io",
]

# Commands whose module needs no network: given one of these, only that module is loaded.
OFFLINE_COMMANDS = {
    "convert": "visionmesh.cli.convert",
    "validate": "visionmesh.cli.convert",
    "shapes": "visionmesh.cli.convert",
}
# Options of the top-level parser that take a value (the others are flags).
_VALUE_OPTIONS = ("--dataset-addr", "--trainers")


def command_modules(argv: list[str]) -> list[str]:
    """The modules to build the parser from: the one holding an offline command when the
    command line surely names one, else all of them."""
    words = iter(argv)
    for word in words:
        if word in _VALUE_OPTIONS:
            next(words, None)
        elif word == "--json" or word.startswith(tuple(o + "=" for o in _VALUE_OPTIONS)):
            continue
        elif word in OFFLINE_COMMANDS:
            return [OFFLINE_COMMANDS[word]]
        else:  # another command, help, or an option argparse may read otherwise
            break
    return COMMAND_MODULES


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``vmesh`` parser with the commands of ``modules`` (default: every module)."""
    parser = argparse.ArgumentParser(
        prog="vmesh",
        description="visionmesh command line: datasets, training and predictions over gRPC",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common_options()],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES if modules is None else modules:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name == module_name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Line by line even into a pipe, so a followed job's rows show as they come.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    if argv is None:
        argv = sys.argv[1:]
    parser = build_parser(command_modules(argv))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        if getattr(args, "usage_parser", None):
            args.usage_parser.print_help()
        else:
            parser.print_help()
        return USAGE
    try:
        return run_command(args.func, args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        return 0


def run() -> None:
    """The ``vmesh`` executable: :func:`main`, then exit with its code. After Ctrl-C it
    leaves at once (streams flushed, then ``os._exit``): a gRPC stream interrupted half-way
    can keep the interpreter's shutdown waiting on the channel's threads forever."""
    code = main()
    if code == INTERRUPTED:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    run()
