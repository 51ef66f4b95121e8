"""`python -m mariofm record|train|generate|rollout|evaluate|export|demo`: each subcommand lives beside its code.

Every module that owns a subcommand exposes `add_cli(subparsers)`, which adds its parser and sets
`func(args) -> int`. Modules are imported only when needed, so `record` never imports the model.

Exit codes, the same for every command: 0 done; 2 bad input (a missing file or folder, a setting that cannot
work, a foreign or damaged checkpoint, a run folder in use or holding another run, a destination that cannot be
written, a training run that diverged or does not fit in memory); 130 interrupted (Ctrl-C). Arguments and
destinations are checked before any expensive work.
Errors go to stderr as one line that says what is wrong, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pickle
import sys

COMMANDS = {
    "record": "mariofm.record",
    "train": "mariofm.train",
    "generate": "mariofm.generate",
    "rollout": "mariofm.rollout",
    "evaluate": "mariofm.evaluate",
    "export": "mariofm.export",
    "demo": "mariofm.demo",
}


def _whole_number(text: str, low: int, bound: str) -> int:
    """`text` as an int >= low, else an argparse error saying which (`bound` words the limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} must be {bound}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (a step count, a number of videos, an interval)."""
    return _whole_number(text, 1, "at least 1")


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number >= 0 (0 meaning: none, skip)."""
    return _whole_number(text, 0, "0 or more")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mariofm", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="|".join(COMMANDS))
    for name, module in COMMANDS.items():
        if only is None or only == name:
            importlib.import_module(module).add_cli(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # import only the module of the chosen command; fall back to all of them for --help
    only = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(only).parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, pickle.UnpicklingError) as err:
        # bad input (a missing data folder, a wrong setting, a foreign checkpoint, a diverged run: all
        # ValueErrors): say what, not a traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
