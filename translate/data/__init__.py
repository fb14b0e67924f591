"""Data: from raw parallel text to model-ready batches.

Owns sources (text, TSV/CSV/JSONL/Parquet, hub names, the gettext catalogs), cleaning, splits
and their caches, the sentencepiece tokenizer, encoding, memory-mapped splits, length
bucketing, collation (masks from lengths), epoch plans and domain sampling.

May import: ``translate.config``, ``translate.errors``, ``translate.masks``, ``translate.runtime``.
Never a model, a run directory or W&B.

The names below load lazily: ``translate.data.batching`` (which inference needs) must not pull
in ``datasets`` through this file, which takes a second or two to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Corpus": "translate.data.corpus",
    "format_report": "translate.data.corpus",
    "load_corpus": "translate.data.corpus",
    "DataError": "translate.data.schema",
    "load_source": "translate.data.sources",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'translate.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
