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
        # translate.data itself is a lazy package (inference needs its batching and tokenizer);
        # what must not load is the corpus side, which imports datasets.
        "heavy = ('datasets', 'wandb', 'translate.training.trainer', 'translate.data.corpus', "
        "'translate.data.sources', "
        "'translate.training.prepare', 'translate.tracking.tracker',"
        " 'translate.training.validation')\n"
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


def _cli(module: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # PYTHONPATH so that a test run from another directory still imports this checkout.
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_every_cli_help_is_plain_text(tmp_path: Path) -> None:
    """The descriptions come from module docstrings; their reST markup stays out of --help."""
    for module in ("translate.train", "translate.data", "translate.infer"):
        proc = _cli(module, "--help", cwd=tmp_path)
        assert proc.returncode == 0 and proc.stderr == "", (module, proc.stderr)
        assert "usage: python -m " + module in proc.stdout
        for markup in ("``", ":class:", ":func:", ":mod:", "\\\\n"):
            assert markup not in proc.stdout, (module, markup)


def test_every_documented_user_error_is_one_line(trained_run: Path, tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.yaml")
    bad_yaml, latin1 = tmp_path / "bad.yaml", tmp_path / "latin1.yaml"
    bad_yaml.write_text("model: [1, 2\n", encoding="utf-8")
    latin1.write_bytes("model: {}\n# Übersetzung\n".encode("latin-1"))
    cases = [
        ("translate.train", ["--bogus"], "unrecognized arguments: --bogus"),
        ("translate.train", ["--config", missing], "missing.yaml: config file not found"),
        ("translate.train", ["--device", "gpu0"], "training.device: expected auto, cpu, cuda"),
        ("translate.train", ["--resume", str(tmp_path)], "not a run directory to resume"),
        ("translate.train", ["--config", str(bad_yaml)], f"{bad_yaml}: line 2, column 1: not "
         "valid YAML: expected ',' or ']', but got '<stream end>' (while parsing a flow "
         "sequence at line 1, column 8)"),
        ("translate.train", ["--config", str(latin1)], f"{latin1}: line 2: not UTF-8 text"),
        ("translate.train", ["--set", "model.emb_dim=[1,"], "--set model.emb_dim: line 1, "
         "column 4: not valid YAML"),
        ("translate.train", ["--set", "training.run_dir=/proc/run"],
         "/proc/run: cannot create the run directory"),
        ("translate.data", ["--config", missing], "missing.yaml: config file not found"),
        ("translate.data", ["--set", "data.src_lang=en", "--set", "data.tgt_lang=en"],
         "data.tgt_lang: expected a language other than data.src_lang"),
        ("translate.infer", ["--model", str(trained_run), "--input", missing],
         "--input " + missing + ": file not found"),
        ("translate.infer", ["--model", str(tmp_path)], str(tmp_path)),
        ("translate.infer", ["--model", str(trained_run), "--device", "gpu0"],
         "device 'gpu0': expected auto, cpu, cuda or cuda:N"),
        ("translate.infer", ["--beam", "two"], "argument --beam: invalid int value"),
        ("translate.infer", ["--threads", "-2"], "argument --threads: expected 0 or more, got -2"),
    ]
    import torch

    if not torch.cuda.is_available():  # train and infer agree on a GPU that is not there
        cases += [("translate.train", ["--device", "cuda:1", "--set",
                                       f"training.run_dir={tmp_path / 'run'}"],
                   "device 'cuda:1' was asked for, but no CUDA GPU is visible"),
                  ("translate.infer", ["--model", str(trained_run), "--device", "cuda:1"],
                   "device 'cuda:1' was asked for, but no CUDA GPU is visible")]
    for module, args, expected in cases:
        proc = _cli(module, *args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (module, args, proc.stderr[-2000:])
        assert len(lines) == 1 and "Traceback" not in proc.stderr, (module, args, proc.stderr)
        assert lines[0].startswith(f"{module}: error: ") or lines[0].startswith(
            f"python -m {module}: error: "), lines[0]
        assert expected in lines[0], (expected, lines[0])


def test_data_cli_runs_on_its_own_defaults_from_any_directory(tmp_path: Path) -> None:
    """No --config: the packaged configs/default.yaml (gettext catalogs of this machine)."""
    proc = _cli("translate.data", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "gettext:/usr/share/locale" in proc.stdout and "train " in proc.stdout
    assert (tmp_path / ".cache").is_dir()  # its cache went under the working directory
