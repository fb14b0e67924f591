"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from translate.config import ConfigError

# Errors a person can act on. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Error types of the modules this process actually loaded.

    Looked up in ``sys.modules`` rather than imported, so that `infer` never pulls in the
    training stack (and ``datasets``) just to recognise an error it cannot raise.
    """
    found = []
    for module, name in (("translate.data", "DataError"),
                         ("translate.checkpoint", "CheckpointError"),
                         ("translate.runtime", "RuntimeSetupError"),
                         ("translate.tokenizer", "TokenizerError"),
                         ("translate.trainer", "TrainingError")):
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return USER_ERRORS + tuple(found)


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
    except Exception as err:  # noqa: BLE001 - filtered right below
        if not isinstance(err, user_errors()):
            raise
        print(f"{prog}: error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code)
