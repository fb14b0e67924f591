"""The documentation cannot rot: every command it shows runs against the real parsers.

README.md and docs/*.md are read as a user reads them. Every shell command in a fenced code
block that starts ``python -m translate.X``, ``translate-X`` (a console script),
``torchrun ... -m translate.X`` or ``python -m bench NAME`` must name a module that exists,
use only ``--flags`` its argparse parser accepts (and a listed choice where the flag has
choices), point ``--config`` at a config that loads, and ``--set`` only keys that the config
dataclasses have, with values of their type. docs/configuration.md must list exactly the
fields of the dataclasses, with their defaults. Relative links must resolve; the front page
stays short; no process words. Nothing here trains or translates: the whole file runs in a
few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib
import importlib.util
import re
import shlex
import subprocess
import sys
import tomllib
import types
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import pytest
import yaml

from translate import config as config_mod
from translate.config.parse import ConfigError, _convert, parse_yaml
from translate.config.sections import Config

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
CHANGELOG = ROOT / "CHANGELOG.md"
CONFIG_DOC = DOCS / "configuration.md"
BENCH_DOC = DOCS / "benchmarks.md"
README_MAX_LINES = 220

# Code blocks in these languages hold no shell commands.
NOT_SHELL = {"python", "py", "yaml", "yml", "json", "jsonl", "toml", "ini", "text", "http"}
SEPARATORS = {"&&", "||", "|", ";", "&", "(", ")"}


def _doc_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --------------------------------------------------------------------------- reading docs


def _fenced_blocks(text: str) -> list[tuple[str, int, list[str]]]:
    """(language, first line number, lines) of every fenced code block."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*(```|~~~)\s*([\w+-]*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(2).lower(), number + 1, []
        elif fence and lang is not None:
            blocks.append((lang, start, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return blocks


def _logical_lines(lines: list[str], start: int) -> list[tuple[int, str]]:
    """Lines with their backslash continuations joined, each with its line number."""
    out, pending, first = [], "", start
    for offset, line in enumerate(lines):
        if not pending:
            first = start + offset
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    if pending:
        out.append((first, pending))
    return out


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # an unbalanced quote in an example's output: plain split
        return line.split("#")[0].split()


@dataclasses.dataclass
class Command:
    where: str  # file:line
    kind: str  # "translate" or "bench"
    target: str  # module (translate.infer) or bench name (infer)
    args: list[str]

    def __str__(self) -> str:
        return f"{self.where}: {self.target} {' '.join(self.args)}"


@functools.cache
def _console_scripts() -> dict[str, str]:
    """``translate-infer`` -> ``translate.infer`` (the module of its entry point)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts = project["project"].get("scripts", {})
    return {name: target.split(":")[0] for name, target in scripts.items()}


def _parse_segment(tokens: list[str], where: str) -> Command | None:
    while tokens and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", tokens[0]):
        tokens = tokens[1:]  # VAR=value before the command
    if not tokens:
        return None
    head = tokens[0]
    rest: list[str] | None = None
    if re.fullmatch(r"(.*/)?python3?(\.\d+)?", head) and tokens[1:2] == ["-m"] and len(tokens) > 2:
        module, rest = tokens[2], tokens[3:]
    elif Path(head).name == "torchrun" and "-m" in tokens:
        i = tokens.index("-m")
        if i + 1 >= len(tokens):
            return None
        module, rest = tokens[i + 1], tokens[i + 2:]
    elif head.startswith("translate-"):
        module = _console_scripts().get(head, f"<no console script {head}>")
        rest = tokens[1:]
        if module.endswith(".__main__"):
            module = module[: -len(".__main__")]
        if not module.startswith("translate"):
            return Command(where, "translate", module, rest)
    else:
        return None
    if module == "translate" or module.startswith("translate."):
        return Command(where, "translate", module, rest)
    if module == "bench":
        if not rest:
            return Command(where, "bench", "", [])
        return Command(where, "bench", rest[0], rest[1:])
    return None


def _commands_in(path: Path) -> list[Command]:
    found = []
    for lang, start, body in _fenced_blocks(path.read_text(encoding="utf-8")):
        if lang in NOT_SHELL:
            continue
        for number, line in _logical_lines(body, start):
            tokens = _tokens(line)
            segment: list[str] = []
            for token in [*tokens, ";"]:
                if token in SEPARATORS:
                    cmd = _parse_segment(segment, f"{_rel(path)}:{number}")
                    if cmd:
                        found.append(cmd)
                    segment = []
                else:
                    segment.append(token)
    return found


@functools.cache
def _all_commands() -> tuple[Command, ...]:
    return tuple(cmd for path in _doc_files() for cmd in _commands_in(path))


# --------------------------------------------------------------------------- parsers


class _Captured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser captured")
        self.parser = parser


def _capture(self, *args, **kwargs):
    raise _Captured(self)


def _command_module(module: str) -> str:
    """``translate.serve`` (a package) runs ``translate.serve.__main__``."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        raise AssertionError(f"no module {module}")
    if spec.submodule_search_locations is not None:
        if importlib.util.find_spec(f"{module}.__main__") is None:
            raise AssertionError(f"{module} is a package without __main__")
        return f"{module}.__main__"
    return module


@functools.cache
def _parser(module: str) -> argparse.ArgumentParser:
    """The argparse parser a ``python -m module`` command builds, without running it."""
    mod = importlib.import_module(_command_module(module))
    if hasattr(mod, "build_parser"):
        return mod.build_parser()
    entry = getattr(mod, "parse_args", None) or getattr(mod, "main", None)
    assert entry is not None, f"{module}: no build_parser, parse_args or main"
    with mock.patch.object(argparse.ArgumentParser, "parse_args", _capture):
        try:
            entry(["--help"])
        except _Captured as captured:
            return captured.parser
    raise AssertionError(f"{module}: its entry point built no argparse parser")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    options = dict(parser._option_string_actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                options.update(_options(sub))
    return options


def _placeholder(value: str) -> bool:
    """RUN_DIR, N, <run>, ...: a name standing for the reader's own value."""
    return (re.fullmatch(r"[A-Z][A-Z0-9_]*", value) is not None or "<" in value
            or "..." in value or value.startswith("$"))


# translate.train's config overrides as a W&B sweep agent writes them: --a.b=v or a.b=v.
SWEEP_OVERRIDE = re.compile(r"(?:--)?([a-z_]+(?:\.[\w\[\]-]+)+)=(.*)")


def _sweep_overrides(cmd: Command) -> list[str]:
    if cmd.target != "translate.train":
        return []
    found = []
    for i, arg in enumerate(cmd.args):
        after_option = i > 0 and cmd.args[i - 1].startswith("-") and "=" not in cmd.args[i - 1]
        if (m := SWEEP_OVERRIDE.fullmatch(arg)) and not after_option:  # not --set's value
            found.append(f"{m.group(1)}={m.group(2)}")
    return found


def _flag_problems(cmd: Command, options: dict[str, argparse.Action]) -> list[str]:
    problems = []
    args = [a.strip("[]") for a in cmd.args]
    for i, arg in enumerate(args):
        if not arg.startswith("--") or arg == "--":
            continue
        if cmd.target == "translate.train" and SWEEP_OVERRIDE.fullmatch(cmd.args[i]):
            continue  # checked as a --set by _set_problems
        flag, _, inline = arg.partition("=")
        action = options.get(flag)
        if action is None:
            problems.append(f"{cmd}: {flag} is not an option of {cmd.target}")
            continue
        value = inline or (args[i + 1] if i + 1 < len(args) else "")
        if action.choices and action.nargs in (None, "?") and value and not value.startswith("-"):
            for alternative in value.split("|"):
                if not _placeholder(alternative) and alternative not in {
                        str(c) for c in action.choices}:
                    problems.append(f"{cmd}: {flag} {alternative}: not one of "
                                    f"{sorted(map(str, action.choices))}")
    return problems


def _values_of(cmd: Command, flag: str) -> list[str]:
    args = [a.strip("[]") for a in cmd.args]
    values = []
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.startswith(flag + "="):
            values.append(arg[len(flag) + 1:])
    return values


# --------------------------------------------------------------------------- config keys


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (types.UnionType, typing.Union):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _key_type(dotted: str) -> Any:
    """The annotation of a ``--set`` key such as ``data.train[0].prefix``; KeyError names the
    first part that does not exist."""
    node: Any = Config
    for part in dotted.split("."):
        name, *indices = part.replace("]", "").split("[")
        if typing.get_origin(_strip_optional(node)) is dict:
            node = typing.get_args(_strip_optional(node))[1]
            continue
        cls = _strip_optional(node)
        if not dataclasses.is_dataclass(cls):
            raise KeyError(f"{dotted}: {name!r} is below a value, not a section")
        hints = typing.get_type_hints(cls)
        if name not in hints:
            raise KeyError(f"{dotted}: no key {name!r} in {cls.__name__}")
        node = hints[name]
        for _ in indices:
            if typing.get_origin(_strip_optional(node)) is not list:
                raise KeyError(f"{dotted}: {name} is not a list")
            node = typing.get_args(_strip_optional(node))[0]
    return node


def _set_problems(cmd: Command) -> list[str]:
    problems = []
    for assignment in _values_of(cmd, "--set") + _sweep_overrides(cmd):
        key, eq, text = assignment.partition("=")
        if not eq:
            problems.append(f"{cmd}: --set {assignment}: expected KEY=VALUE")
            continue
        try:
            tp = _key_type(key)
        except KeyError as err:
            problems.append(f"{cmd}: --set {err.args[0]}")
            continue
        if _placeholder(text):
            continue
        value = parse_yaml(text, key)
        if isinstance(value, str):
            try:
                value = float(value)  # YAML 1.1 reads 5e-4 as a string, as --set does not
            except ValueError:
                pass
        try:
            _convert(value, tp, key)
        except ConfigError as err:
            problems.append(f"{cmd}: --set {err}")
    return problems


def _config_problems(cmd: Command) -> list[str]:
    problems = []
    for path in _values_of(cmd, "--config"):
        if _placeholder(path):
            continue
        resolved = config_mod.resolve_path(ROOT / path) if not Path(path).is_absolute() else path
        if not Path(resolved).is_file():
            resolved = config_mod.resolve_path(path)
        if not Path(resolved).is_file():
            problems.append(f"{cmd}: --config {path}: no such file")
            continue
        try:
            config_mod.load(resolved)
        except ConfigError as err:
            problems.append(f"{cmd}: --config {path}: {err}")
    return problems


# --------------------------------------------------------------------------- (a) commands


def test_the_docs_show_commands():
    """The extraction itself works: the commands a newcomer runs are found."""
    targets = {cmd.target for cmd in _all_commands()}
    assert {"translate.train", "translate.infer", "translate.evaluate", "translate.data",
            "translate.serve", "translate.distill"} <= targets, targets
    readme = [c for c in _all_commands() if c.where.startswith("README.md")]
    assert any(c.target == "translate.train" and "--config" in c.args for c in readme)


def test_extraction_on_a_sample():
    sample = ("WANDB_MODE=disabled python -m translate.infer --model RUN --beam 5 \\\n"
              "    --format jsonl | head && translate-train --resume runs/x  # note\n"
              "torchrun --standalone --nproc_per_node=2 -m translate.train --config C\n"
              "python -m bench infer --model RUN\n.venv/bin/python -m pytest -q\n")
    lines = _logical_lines(sample.splitlines(), 1)
    cmds = []
    for number, line in lines:
        segment: list[str] = []
        for token in [*_tokens(line), ";"]:
            if token in SEPARATORS:
                cmd = _parse_segment(segment, f"x:{number}")
                cmds.append(cmd) if cmd else None
                segment = []
            else:
                segment.append(token)
    assert [(c.target, c.args) for c in cmds] == [
        ("translate.infer", ["--model", "RUN", "--beam", "5", "--format", "jsonl"]),
        ("translate.train", ["--resume", "runs/x"]),
        ("translate.train", ["--config", "C"]),
        ("infer", ["--model", "RUN"]),
    ]


def test_every_documented_command_exists_and_takes_its_flags():
    problems = []
    for cmd in _all_commands():
        if cmd.kind != "translate":
            continue
        try:
            options = _options(_parser(cmd.target))
        except AssertionError as err:
            problems.append(f"{cmd}: {err}")
            continue
        problems += _flag_problems(cmd, options)
    assert not problems, "\n".join(problems)


def test_flag_check_catches_a_wrong_flag_and_choice():
    cmd = Command("x:1", "translate", "translate.infer",
                  ["--model", "RUN", "--beam-size", "5", "--format", "xml", "--shortlist",
                   "on|off"])
    problems = _flag_problems(cmd, _options(_parser("translate.infer")))
    assert len(problems) == 2, problems
    assert "--beam-size is not an option" in problems[0] and "xml" in problems[1]


def test_every_documented_config_and_set_key_exists():
    problems = []
    for cmd in _all_commands():
        if cmd.kind == "translate":
            problems += _config_problems(cmd) + _set_problems(cmd)
    assert not problems, "\n".join(problems)


def test_set_check_catches_a_wrong_key_and_value():
    cmd = Command("x:1", "translate", "translate.train",
                  ["--set", "training.learning_rate=1e-3", "--set", "training.lr=fast",
                   "--set", "data.train[0].prefix=/data/x", "--set", "model.tagger.enabled=N",
                   "--set", "data.sampling.weights.legal=2"])
    problems = _set_problems(cmd)
    assert len(problems) == 2, problems
    assert "learning_rate" in problems[0] and "training.lr" in problems[1]
    sweep = Command("x:1", "translate", "translate.train",
                    ["--config", "C", "--training.lr=5e-4", "model.dropout=high",
                     "--training.lr_max=1"])
    problems = _set_problems(sweep)
    assert len(problems) == 2 and "model.dropout" in problems[0], problems
    assert "lr_max" in problems[1] and not _flag_problems(sweep, _options(_parser(
        "translate.train")))
    bad = Command("x:2", "translate", "translate.train", ["--config", "configs/nope.yaml"])
    assert _config_problems(bad)


@functools.cache
def _bench_names() -> frozenset[str]:
    """The benchmark names docs/benchmarks.md lists (its table of ``python -m bench NAME``)."""
    text = BENCH_DOC.read_text(encoding="utf-8")
    return frozenset(re.findall(r"^\|\s*`([a-z_]+)`\s*\|", text, re.M))


def test_bench_commands_use_listed_names():
    names = _bench_names()
    assert len(names) >= 10, names
    used = [c for c in _all_commands() if c.kind == "bench"]
    assert used, "the docs show no python -m bench command"
    unknown = [str(c) for c in used if c.target not in names]
    assert not unknown, "not listed in docs/benchmarks.md:\n" + "\n".join(unknown)


def _bench_help(name_and_sub: tuple[str, ...]) -> str:
    proc = subprocess.run([sys.executable, "-m", "bench", *name_and_sub, "--help"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, f"python -m bench {' '.join(name_and_sub)} --help: " \
                                 f"{proc.stderr[-600:]}"
    return proc.stdout


def test_bench_commands_exist_and_take_their_flags():
    if not (ROOT / "bench" / "__main__.py").is_file():
        pytest.skip("bench/__main__.py does not exist yet: python -m bench NAME is not "
                    "runnable, so its flags cannot be checked")
    used = [c for c in _all_commands() if c.kind == "bench"]
    missing = [str(c) for c in used if not (ROOT / "bench" / f"{c.target}.py").is_file()]
    assert not missing, "no bench/NAME.py:\n" + "\n".join(missing)
    names = sorted({c.target for c in used} | set(_bench_names()))
    with ThreadPoolExecutor(4) as pool:
        helps = dict(zip(names, pool.map(lambda n: _bench_help((n,)), names), strict=True))
    problems = []
    for cmd in used:
        text = helps[cmd.target]
        subs = re.search(r"\{([\w,]+)\}", text)
        positional = next((a for a in cmd.args if not a.startswith("-")), None)
        if subs and positional in subs.group(1).split(","):
            text = _bench_help((cmd.target, positional))
        flags = set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", text))
        for arg in cmd.args:
            flag = arg.strip("[]").partition("=")[0]
            if flag.startswith("--") and flag not in flags:
                problems.append(f"{cmd}: {flag} is not an option of python -m bench "
                                f"{cmd.target}")
    assert not problems, "\n".join(problems)


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == ("python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]' && "
                  ".venv/bin/python -m pytest -q")
    blocks = [line for lang, _, body in _fenced_blocks(README.read_text(encoding="utf-8"))
              for line in body]
    assert ci in blocks


# --------------------------------------------------------------------------- (b) reference


def _type_text(tp: Any) -> str:
    """How docs/configuration.md spells a field's type."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(tp))
    if origin in (types.UnionType, typing.Union):
        return " or ".join(_type_text(a) for a in typing.get_args(tp))
    if origin is list:
        return f"list of {_type_text(typing.get_args(tp)[0])}"
    if origin is dict:
        key, value = typing.get_args(tp)
        return f"mapping {_type_text(key)} to {_type_text(value)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return _item_name(tp)
    return tp.__name__


def _item_name(cls: type) -> str:
    return cls.__name__.removesuffix("Config").lower()


def config_fields() -> dict[str, tuple[str, Any]]:
    """Every field a config file can set, as ``section.key`` -> (type text, default).

    Sections nested in sections are walked (``data.cleaning.max_chars``); a list of
    dataclasses (``data.train``) is one field, and its items' fields are listed once under the
    item's name (``source.kind``)."""
    out: dict[str, tuple[str, Any]] = {}

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                walk(tp, f"{prefix}{f.name}.")
                continue
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            out[f"{prefix}{f.name}"] = (_type_text(tp), default)
            if typing.get_origin(tp) is list and dataclasses.is_dataclass(typing.get_args(tp)[0]):
                item = typing.get_args(tp)[0]
                if not any(k.startswith(_item_name(item) + ".") for k in out):
                    walk(item, _item_name(item) + ".")

    walk(Config, "")
    return out


def documented_fields(text: str) -> dict[str, tuple[str, str]]:
    """``key`` -> (type cell, default cell) from the reference's table rows."""
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\|\s*`([a-z_]+(?:\.[a-z_]+)+)`\s*\|([^|]*)\|([^|]*)\|", line)
        if m:
            assert m.group(1) not in rows, f"{m.group(1)} listed twice"
            rows[m.group(1)] = (m.group(2).strip(), m.group(3).strip())
    return rows


def _cell_value(cell: str) -> Any:
    value = yaml.safe_load(cell.strip().strip("`"))
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _reference_problems(text: str) -> list[str]:
    expected, documented = config_fields(), documented_fields(text)
    problems = [f"missing from docs/configuration.md: {k}" for k in expected
                if k not in documented]
    problems += [f"docs/configuration.md lists {k}, which no config dataclass has"
                 for k in documented if k not in expected]
    for key in expected.keys() & documented.keys():
        tp, default = expected[key]
        doc_tp, doc_default = documented[key]
        if doc_tp.replace("`", "") != tp:
            problems.append(f"{key}: type is {tp!r}, docs say {doc_tp!r}")
        if _cell_value(doc_default) != default:
            problems.append(f"{key}: default is {default!r}, docs say {doc_default!r}")
    return problems


def test_configuration_reference_lists_every_field_with_its_default():
    problems = _reference_problems(CONFIG_DOC.read_text(encoding="utf-8"))
    assert not problems, "\n".join(problems)


def test_reference_check_catches_drift():
    text = CONFIG_DOC.read_text(encoding="utf-8")
    assert "| `training.lr` |" in text
    dropped = "\n".join(line for line in text.splitlines() if "`training.lr`" not in line)
    assert "missing from docs/configuration.md: training.lr" in _reference_problems(dropped)
    extra = text + "\n| `training.learning_rate` | float | `0.001` | no such key |\n"
    assert any("training.learning_rate" in p for p in _reference_problems(extra))
    wrong = re.sub(r"(\| `training\.lr` \| float \| )`[^`]*`", r"\1`0.5`", text)
    assert any(p.startswith("training.lr: default") for p in _reference_problems(wrong))
    assert len(config_fields()) > 100


# --------------------------------------------------------------------------- (c) links, size


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    assert "## Demo" in lines


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"`|\*\*?|_(?=\w)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    for _, _, body in _fenced_blocks(text):
        for line in body:
            text = text.replace(line, "", 1)
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.*)$", text, re.M)}


def _link_problems(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    problems = []
    for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto:
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{_rel(path)}: link to {target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{_rel(path)}: link to {target}: no such heading")
    return problems


def test_relative_links_resolve():
    problems = [p for path in _doc_files() for p in _link_problems(path)]
    assert not problems, "\n".join(problems)


def test_link_check_catches_a_dead_link(tmp_path):
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A title\n", encoding="utf-8")
    page.write_text("[ok](there.md#a-title) [web](https://x.org) [bad](gone.md) "
                    "[anchor](there.md#nope) `[code](nothing.md)`\n", encoding="utf-8")
    with mock.patch(f"{__name__}.ROOT", tmp_path):
        problems = _link_problems(page)
    assert len(problems) == 2, problems


def test_readme_links_the_docs_pages():
    text = README.read_text(encoding="utf-8")
    index = (DOCS / "README.md").read_text(encoding="utf-8")
    for page in sorted(DOCS.glob("*.md")):
        if page.name != "README.md":
            assert f"({page.name}" in index or f"(./{page.name}" in index, \
                f"docs/README.md does not link {page.name}"
    assert "(docs/README.md)" in text


# --------------------------------------------------------------------------- (d) wording

PROCESS_WORDS = [re.compile(r"\bsessions?\b", re.I), re.compile(r"\bissues?\s+#?\d+", re.I),
                 re.compile(r"\bthis round\b", re.I)]


def test_no_process_words():
    problems = []
    for path in [*_doc_files(), CHANGELOG]:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for pattern in PROCESS_WORDS:
                if m := pattern.search(line):
                    problems.append(f"{_rel(path)}:{number}: {m.group(0)!r}: {line.strip()}")
    assert not problems, "\n".join(problems)
