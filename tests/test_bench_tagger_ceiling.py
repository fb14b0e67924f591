"""The tagger-ceiling benchmark's own logic: its confusion table and its one-line refusal
when scikit-learn (not a dependency of translate) is missing."""

from __future__ import annotations

import sys

import pytest

from bench import tagger_ceiling as bench_tagger_ceiling


def test_confusion_counts_each_gold_label_against_the_predicted_ones() -> None:
    predicted = [["news"], ["general"], [], ["news", "chat"]]
    gold = [["news"], ["subtitles"], ["subtitles"], ["chat", "general"]]
    table = bench_tagger_ceiling.confusion(predicted, gold)
    assert table == {"chat": {"chat": 1, "news": 1}, "general": {"chat": 1, "news": 1},
                     "news": {"news": 1}, "subtitles": {"(none)": 1, "general": 1}}


def test_without_scikit_learn_it_says_how_to_get_it(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.multiclass", None)  # import fails as if absent
    monkeypatch.setattr(sys, "argv", ["python -m bench tagger_ceiling"])
    with pytest.raises(SystemExit) as stop:
        bench_tagger_ceiling.main()
    assert "pip install scikit-learn" in str(stop.value)
    assert "does not depend on it" in str(stop.value)
