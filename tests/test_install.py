"""Install anywhere: a real wheel, installed without network into a fresh venv, finds its
configs and gettext domain map (package data) and runs ``translate.data`` from an unrelated
directory with no ``--config``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (cmd, proc.stdout[-1000:], proc.stderr[-2000:])
    return proc


def test_wheel_installs_and_runs_from_any_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", WANDB_MODE="disabled")
    # Build from a copy: an in-tree build would leave build/ and *.egg-info in the checkout.
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(ROOT / "pyproject.toml", src)
    shutil.copytree(ROOT / "translate", src / "translate",
                    ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
          "-w", str(tmp_path / "dist"), str(src)], tmp_path, env)
    wheel = next((tmp_path / "dist").glob("translate-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {"translate/config/presets/default.yaml", "translate/config/presets/multi30k.yaml",
            "translate/config/presets/multidomain.yaml",
            "translate/data/gettext_domains.tsv"} <= set(names)

    # A fresh venv without the checkout; the dependencies (torch, datasets...) come from this
    # interpreter's site-packages, added after the venv's own, so the wheel's copy wins.
    home = tmp_path / "venv"
    venv.create(home, with_pip=False)
    python = home / "bin" / "python"
    purelib = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                         "['purelib'])"], tmp_path, env).stdout.strip())
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)], tmp_path, env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(python), "-c", "import translate; print(translate.__file__)"],
                 elsewhere, env).stdout.strip()
    assert where.startswith(str(purelib)), where
    assert "usage: python -m translate.data" in _run(
        [str(python), "-m", "translate.data", "--help"], elsewhere, env).stdout
    # The console scripts are installed beside the interpreter and run the same commands.
    for name in ("translate-train", "translate-infer", "translate-evaluate", "translate-data"):
        usage = _run([str(home / "bin" / name), "--help"], elsewhere, env).stdout
        assert usage.startswith("usage: python -m translate."), (name, usage[:200])
    bad = subprocess.run([str(home / "bin" / "translate-train"), "--config", "nowhere.yaml"],
                         cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
    assert bad.stderr.startswith("translate.train: error: ") and "nowhere.yaml" in bad.stderr
    proc = _run([str(python), "-m", "translate.data", "--quiet"], elsewhere, env)
    assert "gettext:/usr/share/locale" in proc.stdout and "train " in proc.stdout
    # The README's configs/NAME.yaml falls back to the packaged copy.
    _run([str(python), "-c", "from translate import config; "
          "assert config.load('configs/multi30k.yaml').data.src_lang == 'de'"], elsewhere, env)
