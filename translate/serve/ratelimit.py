"""Who may translate, and how much: API keys and per-client limits, as LibreTranslate has them.

A client is its API key when it sends a valid one (the ``api_key`` field), else its remote
address. Each client has two limits, counted in this process's memory by the ``limits``
library (the one Flask-Limiter, LibreTranslate's limiter, is built on):

* requests per minute (``--req-limit``, or the key's own), over a moving window, as
  LibreTranslate counts them; a list of N texts counts as N requests, as there;
* characters per day (``--char-limit-per-day``, or the key's own), over a fixed 24-hour
  window that opens with the client's first counted request: a quota, and a moving window
  would keep one entry per character.

The answers are LibreTranslate's, which its clients map to their own errors (Mastodon: 403 to
an authentication error, 429 to "too many requests"): a missing key where one is required is a
400, a key that is not in the database a 403, a client over a limit a 429 with ``Retry-After``
(whole seconds until the request would pass). A request that no wait would let through (more
characters than a day allows) is a 413. A request refused is not counted.
"""

from __future__ import annotations

import argparse
import logging
import math
import threading
import time

from limits import RateLimitItemPerDay, RateLimitItemPerMinute
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from translate.cli import non_negative
from translate.config import ConfigError
from translate.serve.keys import ApiKey, KeyStore, KeyStoreError
from translate.serve.limits import RequestError

__all__ = ["Guard", "add_arguments", "from_args"]

log = logging.getLogger("translate.serve")

# LibreTranslate's texts, spelled exactly: clients match them (GNOME Dialect maps these two to
# "API key required" and "API key invalid", "exceeds text/character limit" to its own errors).
MISSING_KEY = "Please contact the server operator to obtain an API key"
INVALID_KEY = "Invalid API key"


class Guard:
    """Checks one request's key and counts it against its client's limits.

    ``keys``: the key database, or ``None`` when the server has none (a sent ``api_key`` is
    then ignored, as LibreTranslate ignores it without ``--api-keys``). ``require_key``:
    refuse requests without a key. ``req_per_minute``, ``chars_per_day``: the limits of a
    client without a key of its own; 0 for none. Thread-safe.
    """

    def __init__(self, keys: KeyStore | None, require_key: bool = False,
                 req_per_minute: int = 0, chars_per_day: int = 0):
        if require_key and keys is None:
            raise ValueError("require_key needs a key database")
        if req_per_minute < 0 or chars_per_day < 0:
            raise ValueError("limits are 0 (none) or more")
        self.keys = keys
        self.require_key = require_key
        self.req_per_minute = req_per_minute
        self.chars_per_day = chars_per_day
        storage = MemoryStorage()
        self._requests = MovingWindowRateLimiter(storage)
        self._chars = FixedWindowRateLimiter(storage)
        self._lock = threading.Lock()  # a test-then-count of two limits is one step

    def frontend_settings(self) -> dict[str, bool]:
        """LibreTranslate's ``apiKeys`` and ``keyRequired`` fields of ``/frontend/settings``."""
        return {"apiKeys": self.keys is not None, "keyRequired": self.require_key}

    def close(self) -> None:
        if self.keys is not None:
            self.keys.close()

    def check(self, api_key: object, client_ip: str | None, chars: int = 0, *,
              texts: int = 1) -> str:
        """Admit one request or raise :class:`RequestError`; the client's name if admitted.

        ``api_key``: the request's ``api_key`` field as sent (``None`` or ``""`` when absent);
        ``client_ip``: the remote address; ``chars``: characters to translate; ``texts``: how
        many requests it counts as (the items of a list ``q``).
        """
        record = self._key(api_key)
        client = f"key {record.id}" if record else f"address {client_ip or 'unknown'}"
        req_limit, req_source = self._limit(record, "req_limit", self.req_per_minute,
                                             "--req-limit")
        char_limit, char_source = self._limit(record, "char_limit_per_day", self.chars_per_day,
                                              "--char-limit-per-day")
        req_item = RateLimitItemPerMinute(req_limit) if req_limit else None
        char_item = RateLimitItemPerDay(char_limit) if char_limit else None
        if req_item and texts > req_limit:
            raise RequestError(413, f"request ({texts} texts) exceeds text limit of "
                                    f"{req_limit} per minute ({req_source}; each text "
                                    "counts as one request)")
        if char_item and chars > char_limit:
            raise RequestError(413, f"request ({chars} characters) exceeds character limit "
                                    f"of {char_limit} per day ({char_source})")
        with self._lock:
            if char_item and chars and not self._chars.test(char_item, client, cost=chars):
                stats = self._chars.get_window_stats(char_item, client)
                raise _slowdown(f"{chars} characters would exceed {char_limit} per day from "
                                f"{client} ({char_source}; {stats.remaining} left)",
                                self._wait(stats.reset_time))
            # hit, not test-then-hit: the moving window's test counts an entry at the window's
            # very end as gone, its hit as still there; a refused hit counts nothing.
            if req_item and not self._requests.hit(req_item, client, cost=texts):
                wait = self._wait(self._requests.get_window_stats(req_item, client).reset_time)
                raise _slowdown(f"more than {req_limit} requests per minute from {client} "
                                f"({req_source})", wait)
            if char_item and chars:
                self._chars.hit(char_item, client, cost=chars)
        return client

    def _key(self, api_key: object) -> ApiKey | None:
        """The sent key's record; ``None`` for no key (where none is required)."""
        if self.keys is None:
            return None
        if api_key is None or api_key == "":
            if self.require_key:
                raise RequestError(400, MISSING_KEY)
            return None
        if not isinstance(api_key, str):
            raise RequestError(400, f"api_key: expected a string, got {type(api_key).__name__}")
        try:
            record = self.keys.lookup(api_key)
        except KeyStoreError as err:  # locked past its timeout, or gone: retry, not a 500
            log.warning("%s", err)  # the path is the operator's business, not the client's
            raise RequestError(503, "cannot check the API key now; retry",
                               {"Retry-After": "1"}) from None
        if record is None:
            raise RequestError(403, INVALID_KEY)
        return record

    @staticmethod
    def _limit(record: ApiKey | None, field: str, default: int, flag: str) -> tuple[int, str]:
        own = getattr(record, field) if record else None
        return (default, flag) if own is None else (own, "the key's own limit")

    @staticmethod
    def _wait(reset_time: float) -> int:
        """Whole seconds strictly past ``reset_time``: a window still holds an entry at its
        very end, so a client that waits exactly ``ceil`` could be refused again."""
        return max(1, math.floor(reset_time - time.time()) + 1)


def _slowdown(what: str, wait: int) -> RequestError:
    return RequestError(429, f"Slowdown: {what}; retry in {wait} s", {"Retry-After": str(wait)})


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The server's flags for keys and limits, in their own group of ``--help``."""
    g = parser.add_argument_group("API keys and rate limits (see docs/keys.md)")
    g.add_argument("--api-keys", metavar="PATH",
                   help="SQLite database of API keys (created if missing; manage it with "
                        "`python -m translate.serve keys`); clients send theirs as api_key")
    g.add_argument("--require-api-key", action="store_true",
                   help="refuse requests without a key (400); a wrong key is always a 403")
    g.add_argument("--req-limit", metavar="N", type=non_negative, default=0,
                   help="requests per minute per client (key, else address); a key's own "
                        "limit replaces it (default: 0, none); more: 429 with Retry-After")
    g.add_argument("--char-limit-per-day", metavar="N", type=non_negative, default=0,
                   help="characters per day per client; a key's own limit replaces it "
                        "(default: 0, none); more: 429 with Retry-After")


def from_args(args: argparse.Namespace) -> Guard:
    """The guard the flags of :func:`add_arguments` ask for; opens (or creates) the keys."""
    if args.require_api_key and not args.api_keys:
        raise ConfigError("--require-api-key needs --api-keys PATH (the key database)")
    keys = KeyStore(args.api_keys) if args.api_keys else None
    return Guard(keys, args.require_api_key, args.req_limit, args.char_limit_per_day)
