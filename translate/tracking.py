"""Experiment tracking: a local ``metrics.jsonl`` always, W&B when it can work unattended.

Training runs for hours on machines nobody watches, so tracking must never stop it:
no login prompt (stdin may be closed), no waiting on an unreachable server, and a W&B
failure mid-run only turns W&B off (with one warning) while the local log continues.

Mode resolution (:func:`resolve_mode`), from ``logging.wandb``:

- ``disabled`` / ``offline`` / ``online`` are honoured, except that the environment
  variable ``WANDB_MODE=disabled`` (or ``WANDB_DISABLED=true``) always turns W&B off: it is
  the kill switch test suites and clusters use.
- ``auto``: ``WANDB_MODE`` decides when set; otherwise ``online`` when an API key is
  configured (:func:`find_api_key`), else ``offline``.
- ``online`` without an API key becomes ``offline`` with a warning instead of a prompt;
  an online start that fails (e.g. no network, bounded by ``init_timeout``) also falls
  back to ``offline``, and :meth:`Tracker.finish` prints the ``wandb sync`` command.

W&B files go under the run directory (``<run>/wandb/``) so it stays self-contained; the
W&B run id is kept in ``<run>/wandb_id`` so ``--resume`` continues the same W&B run.
``wandb`` is imported only when used, so ``disabled`` costs nothing at startup.

Besides the metrics, the run keeps its own log, ``<run>/train.log`` (:func:`run_log`): the
lines the trainer prints for the person watching (:func:`say`) and the package's log records.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import logging
import math
import netrc
import os
import secrets
import shlex
import string
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tqdm import tqdm

from translate.checkpoint import atomic_write_text
from translate.config import LoggingConfig
from translate.errors import TranslateError
from translate.rundir import RunDir

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.wandb.ai"
DEFAULT_INIT_TIMEOUT = 20.0  # seconds; wandb's own default (90 s) would stall a run start
SAMPLE_COLUMNS = ("source", "reference", "hypothesis")

_ENV_MODES = {
    "disabled": "disabled",
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "shared": "online",
}


class TrackingError(TranslateError, ValueError):
    """A tracking setting a person can fix (e.g. an invalid ``WANDB_MODE``)."""


# --------------------------------------------------------------------------- train.log

# The trainer's printed lines, as records for train.log only: on the console they are
# already there (tqdm.write keeps them above the progress bar), so they must not reach the
# root logger's console handler a second time.
_PRINTED = logging.getLogger("translate.printed")
_PRINTED.propagate = False
_PRINTED.setLevel(logging.INFO)


def say(text: str) -> None:
    """Print a line for the person watching a run (above the progress bar), and keep it in
    the run's ``train.log`` while :func:`run_log` is open."""
    tqdm.write(text)
    sys.stdout.flush()  # without a terminal stdout is block-buffered; a log file shows it now
    _PRINTED.info(text)


@contextlib.contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Append to ``path`` (the run's ``train.log``) what the run says while the block runs.

    That is every :func:`say` line, and the records of the ``translate`` loggers (data,
    tokenizer, trainer, tracking) at the level the process's logging lets through: INFO from
    ``python -m translate.train``, DEBUG with ``--verbose``; a library caller who configured
    nothing gets warnings. A resumed run appends to the same file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%Y-%m-%d %H:%M:%S"))
    loggers = (logging.getLogger("translate"), _PRINTED)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        handler.close()


# --------------------------------------------------------------------------- mode resolution


def _settings_files() -> list[Path]:
    """wandb's global settings file, then the workspace one in the current directory."""
    config_dir = os.environ.get("WANDB_CONFIG_DIR")
    base = Path(config_dir).expanduser() if config_dir else Path("~/.config/wandb").expanduser()
    return [base / "settings", Path("wandb") / "settings"]


def _read_settings() -> dict[str, str]:
    values: dict[str, str] = {}
    for path in _settings_files():
        parser = configparser.ConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section("default"):
            values.update(parser["default"])
    return values


def _netrc_path() -> Path:
    if env := os.environ.get("NETRC"):
        return Path(env).expanduser()
    for name in ("~/.netrc", "~/_netrc"):
        if (path := Path(name).expanduser()).exists():
            return path
    return Path("~/.netrc").expanduser()


def find_api_key() -> str | None:
    """Where wandb itself would find credentials, checked without prompting or network.

    Mirrors wandb's lookup order: ``WANDB_API_KEY`` (or ``WANDB_IDENTITY_TOKEN_FILE``),
    the netrc entry for the server host (``$NETRC``, ``~/.netrc``, ``~/_netrc``), then
    ``api_key`` in wandb's settings files. Returns the key (or the token file path).
    """
    if key := os.environ.get("WANDB_API_KEY", "").strip():
        return key
    if token_file := os.environ.get("WANDB_IDENTITY_TOKEN_FILE", "").strip():
        return token_file
    settings = _read_settings()
    base_url = os.environ.get("WANDB_BASE_URL") or settings.get("base_url") or DEFAULT_BASE_URL
    host = urlsplit(base_url.strip()).netloc
    path = _netrc_path()
    if host and path.is_file():
        try:
            creds = netrc.netrc(path).authenticators(host)
        except (netrc.NetrcParseError, OSError) as err:
            log.warning("could not read %s: %s", path, err)
            creds = None
        if creds and creds[2]:
            return creds[2]
    return settings.get("api_key", "").strip() or None


def _env_mode() -> str | None:
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return "disabled"
    raw = os.environ.get("WANDB_MODE", "").strip().lower()
    if not raw:
        return None
    if raw not in _ENV_MODES:
        raise TrackingError(
            f"environment variable WANDB_MODE={raw!r}: expected one of "
            + ", ".join(sorted(_ENV_MODES))
        )
    return _ENV_MODES[raw]


def resolve_mode(setting: str) -> str:
    """Turn ``logging.wandb`` plus the environment into ``online``/``offline``/``disabled``."""
    if setting not in ("auto", "online", "offline", "disabled"):
        raise TrackingError(
            f"logging.wandb: expected one of 'auto', 'online', 'offline', 'disabled', "
            f"got {setting!r}"
        )
    env = _env_mode()
    if env == "disabled" or setting == "disabled":
        return "disabled"
    mode = setting
    if mode == "auto":
        mode = env or ("online" if find_api_key() else "offline")
    if mode == "online" and not find_api_key():
        log.warning(
            "wandb: online logging requested but no API key found (WANDB_API_KEY, ~/.netrc, "
            "wandb settings); logging offline instead (run `wandb login` to go online)"
        )
        mode = "offline"
    return mode


# --------------------------------------------------------------------------- tracker


def _new_run_id() -> str:
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _plain(value: Any) -> Any:
    """JSON-safe scalar: tensors/numpy scalars to Python numbers, non-finite floats to null."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist"):
        return _plain(value.tolist())
    return str(value)


def _append_jsonl(path: Path, record: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")


class Tracker:
    """Metrics to ``run_dir.metrics_path`` and (unless disabled) to W&B.

    ``mode``: the result of :func:`resolve_mode`, for a caller that resolved it before
    starting long work (a bad ``WANDB_MODE`` should not wait for the corpus to be built).
    """

    def __init__(
        self,
        cfg: LoggingConfig,
        run_dir: RunDir,
        config: dict,
        resume_id: str | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        mode: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.mode = mode or resolve_mode(cfg.wandb)
        self.run: Any = None
        self.sync_command: str | None = None
        self._finished = False
        run_dir.root.mkdir(parents=True, exist_ok=True)
        if self.mode != "disabled":
            self._start(config, resume_id, init_timeout)

    # wandb lifecycle -----------------------------------------------------------
    def _start(self, config: dict, resume_id: str | None, init_timeout: float) -> None:
        try:
            import wandb
        except ImportError:
            log.warning("wandb: not installed; logging to %s only", self.run_dir.metrics_path)
            self.mode = "disabled"
            return
        raw = os.environ.get("WANDB_MODE")
        if raw is not None and raw not in _ENV_MODES:
            # wandb itself crashes on e.g. WANDB_MODE="" or "OFFLINE" even when mode= is given
            if raw.strip():
                os.environ["WANDB_MODE"] = _ENV_MODES[raw.strip().lower()]
            else:
                del os.environ["WANDB_MODE"]
        run_id = resume_id or _new_run_id()

        def init(mode: str) -> Any:
            return wandb.init(
                project=self.cfg.project,
                entity=self.cfg.entity,
                name=self.cfg.run_name,
                dir=str(self.run_dir.root),
                config=config,
                id=run_id,
                resume="allow" if resume_id else None,
                mode=mode,
                settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout),
            )

        try:
            self.run = init(self.mode)
        except Exception as err:
            if self.mode != "online":
                log.warning("wandb: could not start (%s); logging locally only", err)
                self.mode = "disabled"
                return
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            log.warning("wandb: online start failed (%s); logging offline instead", first)
            self.mode = "offline"
            try:
                # the failed attempt still holds the run id inside wandb's service process
                wandb.teardown()
                self.run = init("offline")
            except Exception as err2:
                log.warning("wandb: could not start offline either (%s); local only", err2)
                self.mode = "disabled"
                return
        self.run_dir.wandb_id_path.write_text(self.run.id + "\n", encoding="utf-8")
        if self.mode == "online":
            print(f"wandb: run {self.run.url}", file=sys.stderr)

    def _wandb(self, what: str, fn: Any) -> None:
        """Run a wandb call; a failure turns W&B off for the rest of the run, not training."""
        if self.run is None:
            return
        try:
            fn()
        except Exception as err:
            log.warning("wandb: %s failed (%s); W&B logging stops, %s continues",
                        what, err, self.run_dir.metrics_path.name)
            self.run = None

    # logging --------------------------------------------------------------------
    def log(self, metrics: dict, step: int) -> None:
        """Append one line ``{"step", "time", **metrics}`` and send the metrics to W&B."""
        record = {"step": int(step), "time": round(time.time(), 3)}
        record.update({str(k): _plain(v) for k, v in metrics.items() if k not in record})
        _append_jsonl(self.run_dir.metrics_path, record)
        values = {k: v for k, v in record.items() if k not in ("step", "time")}
        self._wandb("log", lambda: self.run.log(values, step=int(step)))

    def log_samples(self, rows: list[dict], step: int) -> None:
        """Sample translations (source, reference, hypothesis, ...) as a table."""
        if not rows:
            return
        columns = list(SAMPLE_COLUMNS)
        for row in rows:
            columns.extend(k for k in row if k not in columns)
        for row in rows:
            _append_jsonl(self.run_dir.samples_path,
                          {"step": int(step), **{k: _plain(v) for k, v in row.items()}})
        if self.run is None:
            return

        def send() -> None:
            import wandb

            data = [[_plain(row.get(c)) for c in columns] for row in rows]
            table = wandb.Table(columns=columns, data=data)
            self.run.log({"samples": table}, step=int(step))

        self._wandb("log_samples", send)

    # images (attention heatmaps) ------------------------------------------------
    @property
    def active(self) -> bool:
        """Whether W&B is logging (work done only for W&B can be skipped otherwise)."""
        return self.run is not None

    def log_images(self, key: str, images: list, step: int, captions: list[str]) -> None:
        """PIL images under ``key`` at ``step``, one caption each; W&B only (a picture has
        no place in ``metrics.jsonl``)."""
        if not images or self.run is None:
            return

        def send() -> None:
            import wandb

            pictures = [wandb.Image(image, caption=caption)
                        for image, caption in zip(images, captions, strict=True)]
            self.run.log({key: pictures}, step=int(step))

        self._wandb("log_images", send)

    def summary(self, metrics: dict) -> None:
        """Final scores (e.g. test BLEU): W&B run summary and ``summary.json``."""
        values = {str(k): _plain(v) for k, v in metrics.items()}
        current: dict = {}
        if self.run_dir.summary_path.is_file():
            try:
                current = json.loads(self.run_dir.summary_path.read_text(encoding="utf-8"))
            except ValueError:
                current = {}
        current.update(values)
        atomic_write_text(self.run_dir.summary_path,
                           json.dumps(current, ensure_ascii=False, indent=1) + "\n")
        self._wandb("summary", lambda: self.run.summary.update(values))

    def finish(self, exit_code: int = 0) -> None:
        """Close the W&B run; when offline, print the command that uploads it later."""
        if self._finished:
            return
        self._finished = True
        if self.run is None:
            return
        run = self.run
        sync_dir = getattr(run.settings, "sync_dir", None) or str(Path(run.dir).parent)
        self._wandb("finish", lambda: run.finish(exit_code=exit_code))
        self.run = None
        if self.mode == "offline":
            self.sync_command = f"wandb sync {shlex.quote(str(sync_dir))}"
            print(f"wandb: offline run saved; upload it with: {self.sync_command}",
                  file=sys.stderr)

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.finish(exit_code=0 if exc_type is None else 1)
