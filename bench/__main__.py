"""``python -m bench NAME [args]``: run one benchmark; ``python -m bench`` lists them."""

from __future__ import annotations

import ast
import importlib
import pkgutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROG = "python -m bench"


def benchmarks() -> dict[str, str]:
    """Every benchmark module's name and the first line of its docstring, read without
    importing it (some import torch at the top)."""
    out = {}
    for info in sorted(pkgutil.iter_modules([str(HERE)]), key=lambda m: m.name):
        if info.name.startswith("_") or info.ispkg:
            continue
        source = (HERE / f"{info.name}.py").read_text(encoding="utf-8")
        doc = ast.get_docstring(ast.parse(source)) or ""
        out[info.name] = doc.strip().splitlines()[0] if doc.strip() else ""
    return out


def usage() -> str:
    found = benchmarks()
    width = max(map(len, found), default=0)
    lines = [f"usage: {PROG} NAME [args]   (from the repository root)", "",
             f"Benchmarks ({PROG} NAME --help for one's options and what it measures):"]
    lines += [f"  {name:<{width}}  {line}" for name, line in found.items()]
    lines += ["", "Figures measured with them: docs/benchmarks.md."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in benchmarks():
        print(f"{PROG}: no benchmark {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{name}")
    # Each benchmark parses sys.argv[1:]; its usage lines name the command as typed.
    sys.argv = [f"{PROG} {name}", *rest]
    result = module.main()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
