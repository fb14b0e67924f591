"""Corpus loading: sources -> cleaned, labelled, cached train/valid/test splits."""

from __future__ import annotations

from translate.data.corpus import Corpus, format_report, load_corpus
from translate.data.schema import DataError
from translate.data.sources import load_source

__all__ = ["Corpus", "DataError", "format_report", "load_corpus", "load_source"]
