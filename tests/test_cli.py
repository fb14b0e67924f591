"""The command-line entry points: user errors in one line, and what `infer` does not load."""

from __future__ import annotations

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import yaml

import translate
from conftest import ROOT, tiny_config
from translate.errors import TranslateError


def test_every_error_class_of_the_package_is_a_user_error():
    """The CLIs catch one base class; an error class outside it would print a traceback."""
    found = set()
    for module_name in (m.name for m in pkgutil.walk_packages(translate.__path__, "translate.")):
        module = importlib.import_module(module_name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__.startswith("translate"):
                found.add(cls)
    names = {cls.__name__ for cls in found}
    assert {"ConfigError", "DataError", "CheckpointError", "RuntimeSetupError",
            "TokenizerError", "TrainingError", "TrackingError", "TranslatorError"} <= names
    assert [cls for cls in found if not issubclass(cls, TranslateError)] == []


def test_train_cli_reports_a_tracking_error_in_one_line(multi30k: Path, multidomain: Path,
                                                        tmp_path: Path) -> None:
    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache")
    raw["logging"]["wandb"] = "auto"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(raw), encoding="utf-8")
    env = {**os.environ, "WANDB_MODE": "sometimes"}
    proc = subprocess.run([sys.executable, "-m", "translate.train", "--config", str(cfg)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "translate.train: error: environment variable WANDB_MODE='sometimes': expected one "
        "of disabled, dryrun, offline, online, run, shared")
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache").exists()  # found before the corpus was built


def test_infer_loads_neither_the_training_stack_nor_datasets(trained_run, multi30k, tmp_path):
    src = tmp_path / "in.de"
    src.write_text("Ein Hund rennt.\n\nZwei Männer sitzen.\n", encoding="utf-8")
    code = (
        "import sys\n"
        "from translate.infer import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "heavy = ('datasets', 'wandb', 'translate.trainer', 'translate.data', "
        "'translate.prepare', 'translate.tracking', 'translate.validation')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, "--model", str(trained_run), "--input",
                           str(src), "--output", str(tmp_path / "out.en"), "--beam", "1",
                           "--device", "cpu"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out.en").read_text(encoding="utf-8").count("\n") == 3


def test_infer_quantize_flag_defaults_to_the_run_config():
    from translate.infer import build_parser

    parse = build_parser().parse_args
    assert parse([]).quantize is None  # Translator.load then reads inference.quantize
    assert parse(["--quantize"]).quantize is True
    assert parse(["--no-quantize"]).quantize is False
