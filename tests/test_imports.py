"""The package imports in one direction: no cycles, and every module imports on its own."""

from __future__ import annotations

import ast
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

import translate

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "translate"
MODULES = sorted(m.name for m in pkgutil.walk_packages(translate.__path__, "translate."))


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, known: set[str]) -> set[str]:
    """The translate modules ``path`` imports, at the top or inside a function (a lazy import
    still closes a cycle; it only hides it until that function runs)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # ``from translate.data import sources`` imports the submodule too
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in known and name != "translate"}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (as a path back to its start), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_cycle_finder_finds_a_lazy_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycles_between_modules():
    """Edges from a package to its own submodules (``data/__init__`` re-exporting
    ``data.corpus``) are how packages work; everything else must point one way."""
    known = set(MODULES)
    files = sorted(PACKAGE.rglob("*.py"))
    graph = {_module_name(p): _imports(p, known) for p in files}
    assert "translate.data.gettext_corpus" in graph["translate.data.sources"]
    assert _cycle({k: v for k, v in graph.items() if k != "translate"}) is None


def test_every_module_imports_alone_in_a_fresh_process():
    """Each module is imported in its own forked process in which no translate module was
    loaded before: an import that works only after another module was imported first fails
    here. The third-party libraries are loaded once, before forking, to keep this fast."""
    code = (
        "import os, sys, traceback\n"
        "import datasets, numpy, pyarrow, sacrebleu, sentencepiece, torch, tqdm, yaml\n"
        "assert not [m for m in sys.modules if m.startswith('translate')]\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            __import__(name)\n"
        "        except BaseException:\n"
        "            traceback.print_exc()\n"
        "            os._exit(1)\n"
        "        os._exit(0)\n"
        "    if os.waitpid(pid, 0)[1] != 0:\n"
        "        failed.append(name)\n"
        "print('failed:', failed)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, *MODULES], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "failed: []", proc.stderr[-3000:]
    assert len(MODULES) > 30


# Which translate packages each package may import (besides itself and the top-level leaves).
# The order is the flow of one batch: config -> data -> model -> runs -> tracking -> search ->
# training | inference -> serve | distill. The top-level leaves (errors, masks, tuning, cli,
# runtime) import at most config and each other; the command-line modules (train, infer,
# evaluate) sit above everything.
LEAVES = {"errors", "masks", "tuning", "cli", "runtime"}
COMMANDS = {"train", "infer", "evaluate"}
ALLOWED = {
    "config": set(),
    "data": {"config"},
    "model": {"config"},
    "runs": {"config"},
    "tracking": {"config", "runs"},
    "search": {"config", "data", "model", "tracking"},
    "training": {"config", "data", "model", "runs", "tracking", "search"},
    "inference": {"config", "data", "model", "runs", "tracking", "search"},
    "serve": {"config", "data", "model", "runs", "tracking", "search", "inference"},
    "distill": {"config", "data", "model", "runs", "tracking", "search", "inference",
                "training"},
}


def _unit(module: str) -> str:
    """``translate.data.batching`` -> ``data``; ``translate.runtime`` -> ``runtime``."""
    return module.split(".")[1]


def _layer_violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in sorted(graph.items()):
        if module == "translate":
            continue
        unit = _unit(module)
        if unit in COMMANDS:
            continue
        for target in sorted(targets):
            other = _unit(target)
            if other == unit:
                continue
            if unit in LEAVES:
                ok = other in LEAVES | {"config"}
            else:
                ok = other in LEAVES or other in ALLOWED.get(unit, set())
            if not ok:
                bad.append(f"{module} imports {target}")
    return bad


def test_layer_checker_catches_an_upward_import():
    graph = {"translate.model.seq2seq": {"translate.data.batching", "translate.masks"},
             "translate.search.beam": {"translate.model.seq2seq"},
             "translate.config.parse": {"translate.errors"}}
    assert _layer_violations(graph) == ["translate.model.seq2seq imports translate.data.batching"]


def test_packages_import_only_the_layers_below_them():
    """Every arrow between subpackages points down the flow (see ``ALLOWED``): the model never
    imports data or tracking, training and inference never import each other, and nothing
    imports a command-line module."""
    known = set(MODULES)
    graph = {_module_name(p): _imports(p, known) for p in sorted(PACKAGE.rglob("*.py"))}
    units = {_unit(m) for m in graph if m != "translate"}
    assert units <= set(ALLOWED) | LEAVES | COMMANDS, units - set(ALLOWED) - LEAVES - COMMANDS
    assert _layer_violations(graph) == []


def test_no_two_modules_share_a_name():
    """``translate/conditioning.py`` beside ``translate/model/conditioning.py`` was a trap for
    readers and for tracebacks: every module's file name is unique in the package."""
    seen: dict[str, Path] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("__init__.py", "__main__.py"):
            continue
        assert path.name not in seen, f"{path} and {seen[path.name]}"
        seen[path.name] = path
    assert len(seen) > 30


def test_short_import_of_the_python_api_is_lazy():
    """``from translate import Translator`` is the README's one line; a bare ``import
    translate`` still loads no third-party library (the command-line entry points tune the
    process before torch arrives), and the names resolve to the inference classes."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import translate\n"
        "loaded = sorted(m for m in set(sys.modules) - before if not m.startswith('translate'))\n"
        "heavy = [m for m in loaded if m.split('.')[0] in ('torch', 'numpy', 'datasets', "
        "'sentencepiece', 'wandb', 'yaml', 'sacrebleu', 'tqdm')]\n"
        "ours = sorted(m for m in sys.modules if m.startswith('translate'))\n"
        "from translate import Translation, Translator\n"
        "from translate.inference import translator\n"
        "print(heavy, ours, Translator is translator.Translator,\n"
        "      Translation is translator.Translation, 'torch' in sys.modules,\n"
        "      sorted(translate.__all__), 'Translator' in dir(translate))\n"
        "try:\n"
        "    translate.Translater\n"
        "except AttributeError as err:\n"
        "    print(err)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = proc.stdout.strip().splitlines()
    assert first == ("[] ['translate'] True True True ['Translation', 'Translator'] True")
    assert second == "module 'translate' has no attribute 'Translater'"
