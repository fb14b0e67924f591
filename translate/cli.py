"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable

from translate.errors import TranslateError

# Errors a person can act on: ours, and a path of theirs that does not exist (e.g. the
# folder of --output). Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (TranslateError, FileNotFoundError)


class ArgumentParser(argparse.ArgumentParser):
    """Usage errors in one line (no usage block), like every other error of the CLIs."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def help_text(doc: str | None) -> str:
    """A module docstring as plain text for ``--help``: the reST markup that renders in the
    API docs (````code````, ``:class:`x.y```) reads as noise on a terminal."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", doc or "")
    return text.replace("``", "").strip()


def non_negative(text: str) -> int:
    """argparse type: an integer >= 0 (e.g. ``--threads``, where 0 means torch's default)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


# A config override as a W&B sweep agent writes one: ``--training.lr=0.001`` (its ``${args}``)
# or ``training.lr=0.001`` (``${args_no_hyphens}``). The key is dotted (``section.key``, list
# items as ``[i]``), which no option of ours is, so an override never shadows a flag.
_KEY = r"[A-Za-z_][\w-]*(?:\[[^\]=]*\])*(?:\.[A-Za-z_][\w-]*(?:\[[^\]=]*\])*)+"
_OVERRIDE = re.compile(rf"(?:--)?({_KEY})=(.*)", re.S)
_VALUELESS = re.compile(rf"--?{_KEY}")


def config_overrides(extras: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """The ``KEY=VALUE`` assignments spelled ``--KEY=VALUE`` or ``KEY=VALUE`` among the
    arguments argparse did not know (``parse_known_args``), in their order, for
    :func:`translate.config.load` to apply as it applies ``--set``. Anything else is a usage
    error naming the argument, so a mistyped flag is never taken for an override."""
    found = []
    for arg in extras:
        if match := _OVERRIDE.fullmatch(arg):
            found.append(f"{match.group(1)}={match.group(2)}")
        elif _VALUELESS.fullmatch(arg):
            parser.error(f"{arg}: a config override needs a value: {arg}=VALUE")
        else:
            parser.error(f"unrecognized arguments: {arg} (config overrides are written "
                         "--set KEY=VALUE, --KEY=VALUE or KEY=VALUE, with a dotted KEY such "
                         "as training.lr)")
    return found


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def run_main(main: Callable[[], int], prog: str) -> None:
    """Run ``main``; a user error becomes ``prog: error: message`` and exit status 2."""
    try:
        code = main()
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:
        # Whoever read stdout has gone (`... | head`): stop quietly, as `yes | head` does, with
        # the status a shell gives a process killed by SIGPIPE. Stdout goes to /dev/null so
        # that the interpreter's final flush does not fail again.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except USER_ERRORS as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
