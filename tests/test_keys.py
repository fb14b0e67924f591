"""API keys and rate limits: the key database and its command on a real SQLite file, and the
guard on the real ``limits`` counters (a moved clock only where a window must pass)."""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("limits", reason="the serve extra is not installed (pip install "
                                     "'translate[serve]')")

import limits.storage.memory  # noqa: E402

from translate.config import ConfigError  # noqa: E402
from translate.serve import ratelimit  # noqa: E402
from translate.serve.keys import KeyStore, KeyStoreError, command  # noqa: E402
from translate.serve.limits import RequestError  # noqa: E402
from translate.serve.ratelimit import Guard, add_arguments, from_args  # noqa: E402


def _run(capsys, *argv: str) -> tuple[int, list[str], list[str]]:
    code = command(list(argv))
    out, err = capsys.readouterr()
    return code, out.splitlines(), err.splitlines()


def _refused(guard: Guard, *args, **kwargs) -> RequestError:
    with pytest.raises(RequestError) as info:
        guard.check(*args, **kwargs)
    return info.value


# --------------------------------------------------------------------------- the command


def test_command_adds_lists_and_removes_keys(tmp_path, capsys):
    db = str(tmp_path / "db" / "keys.db")  # the folder too is created on first use
    code, out, err = _run(capsys, "add", "--api-keys", db, "--req-limit", "5")
    assert code == 0 and len(out) == 1 and len(out[0]) >= 32, (out, err)
    first = out[0]
    assert "shown only now" in err[0] and "requests per minute: 5" in err[0]
    code, out, _ = _run(capsys, "add", "--api-keys", db, "--char-limit-per-day", "0")
    second = out[0]
    assert code == 0 and second != first

    code, listed, _ = _run(capsys, "list", "--api-keys", db)
    assert code == 0 and len(listed) == 2
    assert "req_limit=5" in listed[0] and "char_limit_per_day=default" in listed[0]
    assert "req_limit=default" in listed[1] and "char_limit_per_day=none" in listed[1]
    assert first not in "\n".join(listed)  # only ids are shown
    ids = [line.split()[0] for line in listed]

    code, out, _ = _run(capsys, "remove", "--api-keys", db, first)  # by the key itself
    assert code == 0 and out == [f"removed key {ids[0]} from {db}"]
    code, out, _ = _run(capsys, "remove", "--api-keys", db, ids[1])  # by its listed id
    assert code == 0 and out == [f"removed key {ids[1]} from {db}"]
    code, out, err = _run(capsys, "list", "--api-keys", db)
    assert code == 0 and out == [] and err == [f"{db}: no keys"]


def test_command_errors_are_one_line(tmp_path, capsys):
    missing = str(tmp_path / "missing.db")
    code, out, err = _run(capsys, "list", "--api-keys", missing)
    assert code == 2 and out == [] and len(err) == 1 and "no such key database" in err[0]
    assert missing in err[0] and not Path(missing).exists()  # list never creates one

    db = str(tmp_path / "keys.db")
    assert _run(capsys, "add", "--api-keys", db)[0] == 0
    code, _, err = _run(capsys, "remove", "--api-keys", db, "not-a-key-of-this-db")
    assert code == 2 and len(err) == 1 and "'not-a-key-of-this-db'" in err[0]

    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    code, _, err = _run(capsys, "add", "--api-keys", str(text))
    assert code == 2 and len(err) == 1 and str(text) in err[0] and "not a database" in err[0]
    code, _, err = _run(capsys, "add", "--api-keys", str(tmp_path))
    assert code == 2 and err == [f"python -m translate.serve keys: error: {tmp_path}: is a "
                                 "folder, expected an SQLite file"]
    code, _, err = _run(capsys, "add", "--api-keys", db, "--key", "short")
    assert code == 2 and "--key: expected 16 to 200 characters, got 5" in err[0]
    code, _, err = _run(capsys, "add", "--api-keys", db, "--req-limit", "-3")
    assert code == 2 and len(err) == 1 and "--req-limit" in err[0]
    code, _, err = _run(capsys, "list")
    assert code == 2 and len(err) == 1 and "--api-keys" in err[0]


def test_keys_are_stored_as_digests(tmp_path, capsys):
    db = tmp_path / "keys.db"
    given = "0b6e5c1e-6f0a-4f6e-9b7c-3d2a1f0e9c8b"  # a LibreTranslate-style key, kept
    assert _run(capsys, "add", "--api-keys", str(db), "--key", given)[0] == 0
    code, out, _ = _run(capsys, "add", "--api-keys", str(db))
    random_key = out[0]
    data = db.read_bytes()
    assert given.encode() not in data and random_key.encode() not in data
    store = KeyStore(db, create=False)
    assert store.lookup(given) is not None and store.lookup(random_key) is not None
    assert store.lookup(given[:-1]) is None
    with pytest.raises(KeyStoreError, match="already in it"):
        store.add(key=given)
    store.close()


def test_a_libretranslate_database_is_named(tmp_path):
    db = tmp_path / "api_keys.db"
    with sqlite3.connect(db) as conn:  # LibreTranslate's layout: plain keys
        conn.execute('CREATE TABLE api_keys ("api_key" TEXT NOT NULL, "req_limit" INTEGER '
                     'NOT NULL, "char_limit" INTEGER DEFAULT NULL, PRIMARY KEY("api_key"))')
    conn.close()
    with pytest.raises(KeyStoreError, match="a LibreTranslate key database.*--key KEY"):
        KeyStore(db)


# --------------------------------------------------------------------------- the guard


@pytest.fixture
def store(tmp_path):
    keys = KeyStore(tmp_path / "keys.db")
    yield keys
    keys.close()


def test_missing_wrong_and_valid_keys(store):
    key, record = store.add()
    guard = Guard(store, require_key=True)
    for absent in (None, ""):
        err = _refused(guard, absent, "10.0.0.1")
        assert (err.status, err.message) == (400, "Please contact the server operator to "
                                               "obtain an API key")
    err = _refused(guard, key + "x", "10.0.0.1")
    assert (err.status, err.message) == (403, "Invalid API key")  # as clients match it
    assert _refused(guard, 12345, "10.0.0.1").status == 400
    assert guard.check(key, "10.0.0.1", 20) == f"key {record.id}"
    assert guard.frontend_settings() == {"apiKeys": True, "keyRequired": True}

    optional = Guard(store)  # keys allowed, not required: a wrong one is still a 403
    assert optional.check(None, "10.0.0.1") == "address 10.0.0.1"
    assert _refused(optional, "wrong-key-wrong-key", "10.0.0.1").status == 403
    no_db = Guard(None)  # without a key database a sent key is ignored, as LibreTranslate
    assert no_db.check("anything-at-all-here", "10.0.0.1") == "address 10.0.0.1"
    assert no_db.frontend_settings() == {"apiKeys": False, "keyRequired": False}


def test_a_removed_key_is_refused_at_once(store, capsys):
    key, _ = store.add()
    guard = Guard(store, require_key=True)
    guard.check(key, "10.0.0.1")
    assert command(["remove", "--api-keys", str(store.path), key]) == 0
    assert _refused(guard, key, "10.0.0.1").status == 403


def test_a_locked_database_is_a_503_not_a_500(tmp_path):
    store = KeyStore(tmp_path / "keys.db", timeout=0.2)
    key, _ = store.add()
    writer = sqlite3.connect(tmp_path / "keys.db", isolation_level=None)
    writer.execute("BEGIN EXCLUSIVE")  # another process holding the file
    err = _refused(Guard(store), key, "10.0.0.1")
    assert err.status == 503 and err.headers == {"Retry-After": "1"}
    assert str(tmp_path) not in err.message
    writer.execute("ROLLBACK")
    writer.close()
    Guard(store).check(key, "10.0.0.1")
    store.close()


def test_requests_over_the_minute_limit_get_429_with_retry_after():
    guard = Guard(None, req_per_minute=3)
    for _ in range(3):
        guard.check(None, "10.0.0.1")
    err = _refused(guard, None, "10.0.0.1")
    assert err.status == 429
    assert "more than 3 requests per minute from address 10.0.0.1 (--req-limit)" in err.message
    assert 1 <= int(err.headers["Retry-After"]) <= 60
    # a refused request is not counted, and other clients have their own counts
    assert _refused(guard, None, "10.0.0.1").status == 429
    for _ in range(3):
        guard.check(None, "10.0.0.2")
        guard.check(None, "2001:db8::1")


def test_a_list_counts_as_its_texts():
    guard = Guard(None, req_per_minute=5)
    guard.check(None, "10.0.0.1", texts=4)
    assert _refused(guard, None, "10.0.0.1", texts=2).status == 429
    guard.check(None, "10.0.0.1", texts=1)
    err = _refused(Guard(None, req_per_minute=5), None, "10.0.0.1", texts=6)
    assert err.status == 413 and "request (6 texts) exceeds text limit of 5" in err.message


def test_a_key_has_its_own_client_and_limits(store):
    own, own_record = store.add(req_limit=5)
    default, _ = store.add()
    unlimited, _ = store.add(req_limit=0)
    guard = Guard(store, req_per_minute=2)
    for _ in range(5):
        guard.check(own, "10.0.0.1")
    err = _refused(guard, own, "10.0.0.1")
    assert err.status == 429 and f"from key {own_record.id} (the key's own limit)" in err.message
    for _ in range(2):  # the same address with another key, or none, is another client
        guard.check(default, "10.0.0.1")
        guard.check(None, "10.0.0.1")
    assert "(--req-limit)" in _refused(guard, default, "10.0.0.1").message
    assert _refused(guard, None, "10.0.0.1").status == 429
    for _ in range(50):
        guard.check(unlimited, "10.0.0.1")


def test_characters_per_day(store):
    guard = Guard(store, chars_per_day=100)
    guard.check(None, "10.0.0.1", 60)
    err = _refused(guard, None, "10.0.0.1", 50)
    assert err.status == 429 and "--char-limit-per-day; 40 left" in err.message
    assert 86_000 < int(err.headers["Retry-After"]) <= 86_400
    guard.check(None, "10.0.0.1", 40)  # exactly what is left
    assert _refused(guard, None, "10.0.0.1", 1).status == 429
    guard.check(None, "10.0.0.1", 0)  # a request without text still passes
    guard.check(None, "10.0.0.2", 100)
    err = _refused(guard, None, "10.0.0.3", 101)
    assert err.status == 413
    assert "request (101 characters) exceeds character limit of 100 per day" in err.message
    big, _ = store.add(char_limit_per_day=1000)
    guard.check(big, "10.0.0.1", 1000)
    assert _refused(guard, big, "10.0.0.1", 1).status == 429


class _Clock:
    def __init__(self, now: float):
        self.now = now

    def time(self) -> float:
        return self.now


def test_retry_after_is_when_the_request_passes(monkeypatch):
    """Moved on a clock the limiter reads, a client that waits Retry-After gets in, not
    sooner; a whole-second clock puts it on a window's very edge."""
    clock = _Clock(1_000_000.0)
    monkeypatch.setattr(limits.storage.memory, "time", types.SimpleNamespace(time=clock.time))
    monkeypatch.setattr(ratelimit, "time", types.SimpleNamespace(time=clock.time))
    guard = Guard(None, req_per_minute=3, chars_per_day=100)
    guard.check(None, "10.0.0.1")
    guard.check(None, "10.0.0.1")
    clock.now += 30
    guard.check(None, "10.0.0.1", 100)
    clock.now += 1
    wait = int(_refused(guard, None, "10.0.0.1").headers["Retry-After"])
    assert wait == 30  # the first two leave the window 60 s after they came, 29 s from now
    clock.now += wait - 1
    assert _refused(guard, None, "10.0.0.1").status == 429
    clock.now += 1
    guard.check(None, "10.0.0.1")  # one slot free, the characters still spent
    wait = int(_refused(guard, None, "10.0.0.1", 1).headers["Retry-After"])
    assert "per day" in _refused(guard, None, "10.0.0.1", 1).message
    clock.now += wait
    guard.check(None, "10.0.0.1", 100)  # a new day


def test_counts_stay_exact_across_threads():
    guard = Guard(None, req_per_minute=100)

    def attempt(_) -> bool:
        try:
            guard.check(None, "10.0.0.1")
        except RequestError as err:
            assert err.status == 429
            return False
        return True

    with ThreadPoolExecutor(8) as pool:
        admitted = sum(pool.map(attempt, range(400)))
    assert admitted == 100


def test_server_flags(tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    defaults = from_args(parser.parse_args([]))
    assert defaults.keys is None and defaults.req_per_minute == 0
    with pytest.raises(ConfigError, match="--require-api-key needs --api-keys"):
        from_args(parser.parse_args(["--require-api-key"]))
    db = tmp_path / "keys.db"
    guard = from_args(parser.parse_args(["--api-keys", str(db), "--require-api-key",
                                         "--req-limit", "10", "--char-limit-per-day", "500"]))
    assert db.is_file() and guard.frontend_settings()["keyRequired"]
    assert (guard.req_per_minute, guard.chars_per_day) == (10, 500)
    guard.close()


def test_python_m_translate_serve_keys(tmp_path):
    """The command as the docs show it: a key on stdout, then one-line errors, status 2."""
    db = str(tmp_path / "keys.db")
    run = [sys.executable, "-m", "translate.serve", "keys"]
    added = subprocess.run([*run, "add", "--api-keys", db, "--req-limit", "30"],
                           capture_output=True, text=True, timeout=120)
    assert added.returncode == 0 and len(added.stdout.split()) == 1, added.stderr
    store = KeyStore(db, create=False)
    assert store.lookup(added.stdout.strip()).req_limit == 30
    store.close()
    missing = subprocess.run([*run, "list", "--api-keys", str(tmp_path / "none.db")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stdout == ""
    assert len(missing.stderr.splitlines()) == 1 and "no such key database" in missing.stderr
