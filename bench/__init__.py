"""The project's benchmarks, run from the repository root: ``python -m bench NAME [args]``.

``python -m bench`` lists them, one line each; ``python -m bench NAME --help`` gives a
benchmark's options. Each module's docstring says what it measures, how, and about how long
it takes; docs/benchmarks.md holds the figures measured with them. Modules whose names start
with an underscore are shared helpers, not benchmarks. This package is not installed with
``translate``: it needs the repository (its configs, and the data beside it).
"""
