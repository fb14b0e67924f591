"""API keys in an SQLite file, and ``python -m translate.serve keys add|remove|list``.

LibreTranslate keeps its keys in an SQLite database (``db/api_keys.db``) managed with
``ltmanage keys``; clients send a key as the ``api_key`` field (JSON body, form or query
string), and each key may carry its own requests-per-minute limit. This module keeps that
model with two differences that an operator can see:

* Keys are stored as their SHA-256 digest, not as text: a copied database file, backup or
  shared volume does not hand out working keys. A key is shown once, when it is added; the
  list shows a short id (the first 12 hex digits of the digest) that ``remove`` accepts.
  The keys are random 192-bit tokens, so a fast digest is as safe as a slow password hash
  and keeps the per-request lookup one indexed ``SELECT``.
* Each key may also carry its own characters-per-day limit (the server's
  ``--char-limit-per-day`` otherwise). A limit of 0 means none; no limit stored means the
  server's own.

Nothing is cached: a key removed with the command is refused by a running server at once.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import sqlite3
import sys
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from translate.cli import ArgumentParser, non_negative
from translate.errors import TranslateError

__all__ = ["ApiKey", "KeyStore", "KeyStoreError", "command"]

PROG = "python -m translate.serve keys"
ID_LENGTH = 12  # hex digits of the digest shown as a key's id
MIN_KEY_LENGTH = 16  # a key given with --key: shorter ones are guessable
MAX_KEY_LENGTH = 200
_SCHEMA = """CREATE TABLE IF NOT EXISTS api_keys (
    sha256 TEXT PRIMARY KEY,
    req_limit INTEGER,
    char_limit_per_day INTEGER,
    created TEXT NOT NULL)"""


class KeyStoreError(TranslateError):
    """A key database that cannot be used, or a key that is not in it; one line."""


@dataclass(frozen=True)
class ApiKey:
    """One key as stored: never the key itself. ``None`` limits: the server's own."""

    id: str
    req_limit: int | None  # requests per minute; 0: none
    char_limit_per_day: int | None  # 0: none
    created: str  # UTC, ISO 8601


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class KeyStore:
    """The key database at ``path``; created (with its folder) on first use if ``create``.

    One connection, shared by the server's threads behind a lock; SQLite's own locking keeps
    the command and a running server apart (``timeout``: seconds to wait for the other's
    lock before giving up).
    """

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 5.0):
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise KeyStoreError(f"{self.path}: no such key database (create it with "
                                f"`{PROG} add --api-keys {self.path}`)")
        if self.path.is_dir():
            raise KeyStoreError(f"{self.path}: is a folder, expected an SQLite file")
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False)
            self._check_schema()
        except (sqlite3.Error, OSError) as err:
            raise KeyStoreError(f"{self.path}: cannot use as a key database ({err})") from None

    def _check_schema(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(api_keys)")}
        if "api_key" in columns:
            raise KeyStoreError(f"{self.path}: a LibreTranslate key database (plain keys); "
                                f"add its keys here with `{PROG} add --key KEY`")
        if columns and "sha256" not in columns:
            raise KeyStoreError(f"{self.path}: has an api_keys table of another layout")
        with self._db:
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, *, req_limit: int | None = None, char_limit_per_day: int | None = None,
            key: str | None = None) -> tuple[str, ApiKey]:
        """A new key (random unless ``key`` is given) and its record; the key is not kept."""
        for name, value in (("req_limit", req_limit), ("char_limit_per_day", char_limit_per_day)):
            if value is not None and (not isinstance(value, int) or value < 0):
                raise KeyStoreError(f"{name}: expected 0 or more, got {value!r}")
        key = secrets.token_urlsafe(24) if key is None else _checked_key(key)
        created = datetime.now(UTC).isoformat(timespec="seconds")
        try:
            with self._lock, self._db:
                self._db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?)",
                                 (digest(key), req_limit, char_limit_per_day, created))
        except sqlite3.IntegrityError:
            raise KeyStoreError(f"{self.path}: that key is already in it") from None
        except sqlite3.Error as err:
            raise KeyStoreError(f"{self.path}: cannot add the key ({err})") from None
        return key, ApiKey(digest(key)[:ID_LENGTH], req_limit, char_limit_per_day, created)

    def lookup(self, key: str) -> ApiKey | None:
        """The record of ``key``, or ``None`` when it is not a key of this database."""
        rows = self._select("WHERE sha256 = ?", (digest(key),))
        return rows[0] if rows else None

    def list(self) -> list[ApiKey]:
        """Every key's record, oldest first."""
        return self._select("ORDER BY rowid", ())

    def remove(self, key_or_id: str) -> ApiKey:
        """Remove a key given as itself or as its listed id; its record, or an error."""
        found = self._select("WHERE sha256 = ?", (digest(key_or_id),))
        if not found and len(key_or_id) == ID_LENGTH:
            found = self._select("WHERE substr(sha256, 1, ?) = ?", (ID_LENGTH, key_or_id.lower()))
        if len(found) != 1:
            what = "two or more keys share" if found else "no key has"
            raise KeyStoreError(f"{self.path}: {what} the key or id {key_or_id!r} (see "
                                f"`{PROG} list`)")
        with self._lock, self._db:
            self._db.execute("DELETE FROM api_keys WHERE substr(sha256, 1, ?) = ?",
                             (ID_LENGTH, found[0].id))
        return found[0]

    def _select(self, where: str, params: tuple) -> list[ApiKey]:
        query = f"SELECT sha256, req_limit, char_limit_per_day, created FROM api_keys {where}"
        try:
            with self._lock:
                rows = self._db.execute(query, params).fetchall()
        except sqlite3.Error as err:
            raise KeyStoreError(f"{self.path}: cannot read the keys ({err})") from None
        return [ApiKey(sha[:ID_LENGTH], req, chars, created) for sha, req, chars, created in rows]


def _checked_key(key: str) -> str:
    if not MIN_KEY_LENGTH <= len(key) <= MAX_KEY_LENGTH:
        raise KeyStoreError(f"--key: expected {MIN_KEY_LENGTH} to {MAX_KEY_LENGTH} "
                            f"characters, got {len(key)}")
    if not key.isprintable() or any(c.isspace() for c in key):
        raise KeyStoreError("--key: expected printable characters without spaces")
    return key


# --------------------------------------------------------------------------- the command


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog=PROG, description="Add, remove and list the API keys of "
                       "python -m translate.serve --api-keys PATH.")
    sub = p.add_subparsers(dest="action", required=True, metavar="add|remove|list")
    db = argparse.ArgumentParser(add_help=False)
    db.add_argument("--api-keys", metavar="PATH", required=True,
                    help="the key database (SQLite; created by add if missing)")
    add = sub.add_parser("add", parents=[db], help="add a key and print it (shown only now)")
    add.add_argument("--req-limit", metavar="N", type=non_negative,
                     help="this key's requests per minute (0: none; default: the server's "
                          "--req-limit)")
    add.add_argument("--char-limit-per-day", metavar="N", type=non_negative,
                     help="this key's characters per day (0: none; default: the server's "
                          "--char-limit-per-day)")
    add.add_argument("--key", help="store this key instead of a random one (e.g. one a "
                                   "LibreTranslate server gave out)")
    remove = sub.add_parser("remove", parents=[db], help="remove a key")
    remove.add_argument("key", metavar="KEY_OR_ID", help="the key, or its id from list")
    sub.add_parser("list", parents=[db], help="list the keys' ids, limits and dates")
    return p


def _limit(value: int | None) -> str:
    return "default" if value is None else "none" if value == 0 else str(value)


def _run(args: argparse.Namespace) -> None:
    store = KeyStore(args.api_keys, create=args.action == "add")
    try:
        if args.action == "add":
            key, record = store.add(req_limit=args.req_limit, key=args.key,
                                    char_limit_per_day=args.char_limit_per_day)
            print(key)
            print(f"added key {record.id} to {store.path} (requests per minute: "
                  f"{_limit(record.req_limit)}, characters per day: "
                  f"{_limit(record.char_limit_per_day)}); the key is shown only now",
                  file=sys.stderr)
        elif args.action == "remove":
            print(f"removed key {store.remove(args.key).id} from {store.path}")
        else:
            records = store.list()
            if not records:
                print(f"{store.path}: no keys", file=sys.stderr)
            for r in records:
                print(f"{r.id}  req_limit={_limit(r.req_limit)}  "
                      f"char_limit_per_day={_limit(r.char_limit_per_day)}  created={r.created}")
    finally:
        store.close()


def command(argv: list[str]) -> int:
    """``python -m translate.serve keys ...`` (``argv`` after ``keys``): the exit status.

    0 on success; 2 with one line on stderr for a usage error, a database that cannot be
    used or a key that is not in it.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed
        return stop.code if isinstance(stop.code, int) else 2
    try:
        _run(args)
    except KeyStoreError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return 0
