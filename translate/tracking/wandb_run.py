"""The W&B side of tracking: whether W&B runs, one run (new or resumed), what is sent to it.

:class:`translate.tracking.tracker.Tracker` keeps the local logs and calls this module for W&B,
which owns the mode resolution and the ``wandb`` calls.

Mode resolution (:func:`resolve_mode`), from ``logging.wandb``:

- ``disabled`` / ``offline`` / ``online`` are honoured, except that the environment
  variable ``WANDB_MODE=disabled`` (or ``WANDB_DISABLED=true``) always turns W&B off: it is
  the kill switch test suites and clusters use.
- ``auto``: ``WANDB_MODE`` decides when set; otherwise ``online`` when an API key is
  configured (:func:`find_api_key`), else ``offline``.
- ``online`` without an API key becomes ``offline`` with a warning instead of a prompt;
  an online start that fails (e.g. no network, bounded by ``init_timeout``) also falls
  back to ``offline``.
 Every call goes through :meth:`WandbRun.call`, so a
failing W&B call (a full disk, a server error, a bad value) turns W&B off with one warning
and never stops training. ``wandb`` is imported only here and only once a run starts.

Resuming continues the same W&B run: the saved id is passed with ``resume="must"``. A
resumed training replays the steps between its checkpoint and the moment it was killed;
those steps were already sent, so :class:`WandbRun` drops anything at or below ``floor``
(the last step the previous process logged), which keeps the history free of duplicated
points and, because the replay is exact, free of gaps. Offline, each process writes its own
``offline-run-*-<id>`` folder (the resumed ones marked as such) and ``wandb sync`` given
all of them in start order uploads one continuous run.
"""

from __future__ import annotations

import configparser
import importlib.util
import logging
import netrc
import os
import secrets
import shlex
import string
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from translate.errors import TranslateError

# The tracking logger: tests and users filter on it; this module is tracking's W&B half.
log = logging.getLogger("translate.tracking.tracker")

DEFAULT_BASE_URL = "https://api.wandb.ai"

ENV_MODES = {
    "disabled": "disabled",
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "shared": "online",
}

class TrackingError(TranslateError, ValueError):
    """A tracking setting a person can fix (e.g. an invalid ``WANDB_MODE``)."""



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
    if raw not in ENV_MODES:
        raise TrackingError(
            f"environment variable WANDB_MODE={raw!r}: expected one of "
            + ", ".join(sorted(ENV_MODES))
        )
    return ENV_MODES[raw]


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


STEP_KEY = "train/step"  # the optimizer step, logged with every record: the x-axis of all
# (key or glob, summary): the summary keeps the best value, not the last. No key may match
# two globs: wandb's service picks one of them at random (the per-domain keys would lose
# their "max" now and then), so there is no catch-all ``valid/*``; a key matching no entry
# is still plotted against the optimizer step, the ``step`` every record is logged at.
LAYOUT: tuple[tuple[str, str | None], ...] = (
    ("valid/bleu/*", "max"), ("valid/chrf/*", "max"),  # per domain
    ("valid/f1/*", "max"), ("valid/ap/*", "max"),  # per label
    ("valid/bleu", "max"), ("valid/chrf", "max"), ("valid/best", "last"),
    ("valid/loss", "min"), ("valid/ppl", "min"), ("valid/tag_loss", "min"),
    ("valid/tag_micro_f1", "max"), ("valid/tag_macro_f1", "max"), ("valid/tag_mAP", "max"),
    ("train/loss", "min"), ("train/nll", "min"),
    ("train/*", None), ("test/*", None),
)


def new_run_id() -> str:
    """A W&B run id chosen here: every start attempt (online, then offline) uses the same.
    ``WANDB_RUN_ID`` wins, as in wandb itself: a sweep agent names the run it starts so, and
    a run under another id would be lost to its sweep (no score, no early termination)."""
    if os.environ.get("WANDB_RUN_ID", "").strip():
        return os.environ["WANDB_RUN_ID"].strip()
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(8))


class WandbRun:
    """A started W&B run; ``floor``: steps up to it were logged by an earlier process.

    ``stepped``: a training run, whose records all carry the optimizer step (``train/step``)
    that the metric layout plots against; an evaluation run has no steps.
    """

    def __init__(self, run: Any, mode: str, floor: int = 0, stepped: bool = True) -> None:
        self.run = run
        self.mode = mode
        self.floor = floor
        self.stepped = stepped
        self.sync_command: str | None = None
        self._warned: set[str] = set()

    # lifecycle -------------------------------------------------------------------
    @classmethod
    def start(cls, *, project: str, entity: str | None, name: str | None, root: Path,
              config: dict, run_id: str, resume: bool, init_timeout: float, mode: str,
              job_type: str = "train", floor: int = 0) -> WandbRun | None:
        """Start (or resume) a run under ``root/wandb``; None when W&B cannot run at all.

        An online start that fails falls back to offline; a resumed online run that the
        server does not know (an offline run never synced) starts under the same id.
        """
        try:
            import wandb
        except ImportError:
            log.warning("wandb: not installed; logging locally only")
            return None
        raw = os.environ.get("WANDB_MODE")
        if raw is not None and raw not in ENV_MODES:
            # wandb itself crashes on e.g. WANDB_MODE="" or "OFFLINE" even when mode= is given
            if raw.strip():
                os.environ["WANDB_MODE"] = ENV_MODES[raw.strip().lower()]
            else:
                del os.environ["WANDB_MODE"]

        def init(mode: str, resume_as: str | None) -> Any:
            return wandb.init(
                project=project, entity=entity, name=name, dir=str(root), config=config,
                id=run_id, resume=resume_as, mode=mode, job_type=job_type,
                settings=wandb.Settings(silent=True, console="off", init_timeout=init_timeout),
            )

        attempts = [(mode, "must" if resume else None)]
        if mode == "online":
            if resume:
                attempts.append(("online", "allow"))
            attempts.append(("offline", "must" if resume else None))
        for i, (try_mode, resume_as) in enumerate(attempts):
            try:
                run = init(try_mode, resume_as)
                break
            except Exception as err:
                first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
                if i + 1 == len(attempts):
                    log.warning("wandb: could not start (%s); logging locally only", first)
                    return None
                log.warning("wandb: %s start failed (%s); trying %s", try_mode, first,
                            "offline" if attempts[i + 1][0] == "offline"
                            else "online without resume='must'")
                # the failed attempt still holds the run id inside wandb's service process
                wandb.teardown()
        if try_mode == "online":
            print(f"wandb: run {run.url}", file=sys.stderr)
        if resume and getattr(run, "starting_step", 0):
            floor = max(floor, int(run.starting_step) - 1)  # the server knows better
        wrapper = cls(run, try_mode, floor, stepped=job_type == "train")
        if wrapper.stepped:
            wrapper.call("define_metric", wrapper._layout)
        return wrapper

    def _layout(self) -> None:
        """Validation and training curves against the optimizer step; best-so-far summaries."""
        self.run.define_metric(STEP_KEY, hidden=True)
        for key, summary in LAYOUT:
            kwargs = {"summary": summary} if summary else {}
            self.run.define_metric(key, step_metric=STEP_KEY, **kwargs)

    def call(self, what: str, fn: Any) -> Any:
        """Run a wandb call; a failure turns W&B off for the rest of the run, not training."""
        if self.run is None:
            return None
        try:
            return fn()
        except Exception as err:
            log.warning("wandb: %s failed (%s); W&B logging stops, local logs continue",
                        what, err)
            self.run = None
            return None

    @property
    def active(self) -> bool:
        return self.run is not None

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; when offline, keep the command that uploads it (every segment)."""
        run, self.run = self.run, None
        if run is None:
            return
        sync_dir = Path(getattr(run.settings, "sync_dir", None) or Path(run.dir).parent)
        run_id = run.id
        try:
            run.finish(exit_code=exit_code)
        except Exception as err:
            log.warning("wandb: finish failed (%s)", err)
        if self.mode == "offline":
            segments = sorted(sync_dir.parent.glob(f"offline-run-*-{run_id}")) or [sync_dir]
            self.sync_command = "wandb sync " + " ".join(shlex.quote(str(p)) for p in segments)

    # logging ---------------------------------------------------------------------
    def log(self, values: dict, step: int) -> None:
        """Scalars (or media) at optimizer step ``step``; replayed steps are not sent twice."""
        if not self._replayed(step):
            self.call("log", lambda: self.run.log(self._stepped(values, step), step=int(step)))

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence],
              step: int | None = None) -> None:
        def send() -> None:
            import wandb

            table = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
            self._send({key: table}, step)

        self.call(f"table {key}", send)

    def images(self, key: str, images: Sequence[Any], step: int,
               captions: Sequence[str] | None = None) -> None:
        if importlib.util.find_spec("PIL") is None:  # wandb.Image needs pillow
            if "PIL" not in self._warned:
                self._warned.add("PIL")
                log.warning("wandb: images need pillow (pip install pillow); %s not logged",
                            key)
            return

        def send() -> None:
            import wandb

            caps = list(captions) if captions is not None else [None] * len(images)
            pictures = [wandb.Image(img, caption=c)
                        for img, c in zip(_same_size(images), caps, strict=True)]
            self._send({key: pictures}, step)

        self.call(f"images {key}", send)

    def chart(self, key: str, spec: str, columns: Sequence[str], rows: Sequence[Sequence],
              fields: dict[str, str], title: str, step: int) -> None:
        """A table with one of W&B's preset charts (the ones ``wandb.plot`` uses), built here
        so that no chart needs scikit-learn and all of them work offline."""
        def send() -> None:
            import wandb

            table = wandb.Table(columns=list(columns), data=[list(r) for r in rows])
            chart = wandb.plot_table(spec, table, fields, {"title": title})
            self._send({key: chart}, step)

        self.call(f"chart {key}", send)

    def _replayed(self, step: int) -> bool:
        """True for a step the interrupted process already sent (the resume replays it)."""
        return self.floor > 0 and step <= self.floor

    def _stepped(self, values: dict, step: int) -> dict:
        return {**values, STEP_KEY: int(step)} if self.stepped else values

    def _send(self, values: dict, step: int | None) -> None:
        if step is None:
            self.run.log(values)  # the run's current step
        elif not self._replayed(step):
            self.run.log(self._stepped(values, step), step=int(step))

    def summary(self, values: dict) -> None:
        self.call("summary", lambda: self.run.summary.update(values))

    def artifact(self, name: str, files: Sequence[tuple[Path, str]], aliases: Sequence[str],
                 metadata: dict) -> bool:
        """Log ``files`` (path, name inside the artifact; folders whole) as a model artifact."""
        def send() -> bool:
            import wandb

            art = wandb.Artifact(name, type="model", metadata=metadata)
            for path, arcname in files:
                if path.is_dir():
                    art.add_dir(str(path), name=arcname)
                else:
                    art.add_file(str(path), name=arcname)
            self.run.log_artifact(art, aliases=list(aliases))
            return True

        return bool(self.call(f"artifact {name}", send))

    def use_artifact(self, name: str) -> bool:
        """Link this run to ``name`` as an input; W&B cannot do it offline (skipped).

        A link that fails (e.g. the training run is still offline, never synced) only loses
        the link: unlike other calls it leaves the run going, since the scores matter more.
        """
        if self.run is None or self.mode != "online":
            log.info("wandb: offline run; the model artifact %s is recorded in the config, "
                     "not linked", name)
            return False
        try:
            self.run.use_artifact(name)
        except Exception as err:
            log.warning("wandb: could not link the model artifact %s (%s)", name, err)
            return False
        return True


def _same_size(images: Sequence[Any]) -> list[Any]:
    """``images`` on white canvases of the largest width and height among them.

    W&B shows a list of images under one key as one panel and warns ("Images sizes do not
    match") when their sizes differ; attention heatmaps differ with each sentence's length.
    Padding at the right and bottom keeps every cell where it was drawn."""
    import numpy as np
    from PIL import Image

    pictures = [img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img))
                for img in images]
    if len({p.size for p in pictures}) <= 1:
        return pictures
    width, height = max(p.width for p in pictures), max(p.height for p in pictures)
    padded = []
    for picture in pictures:
        canvas = Image.new(picture.mode, (width, height), "white")
        canvas.paste(picture, (0, 0))
        padded.append(canvas)
    return padded
