"""Shared command-line plumbing: logging set-up and one-line errors instead of tracebacks."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from translate.config import ConfigError

# Errors a person can act on. Anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, FileNotFoundError)


def user_errors() -> tuple[type[BaseException], ...]:
    """Collected lazily so that importing the CLI stays cheap."""
    from translate.checkpoint import CheckpointError
    from translate.data import DataError
    from translate.runtime import RuntimeSetupError
    from translate.trainer import TrainingError

    return USER_ERRORS + (DataError, CheckpointError, RuntimeSetupError, TrainingError)


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
