"""Text written one line per input (infer's output, a run's valid/test hypotheses) stays one
line for every reader: a hypothesis may hold a break character the model learnt from its
training text."""

from __future__ import annotations

from translate.data.linebreaks import one_line


def test_every_break_that_a_reader_splits_on_becomes_a_space() -> None:
    breaks = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    text = "a" + "b".join(breaks) + "z"
    assert len(text.splitlines()) == len(breaks) + 1  # what str.splitlines would count
    assert one_line(text).splitlines() == [one_line(text)]
    assert one_line(text) == "a" + "b".join(" " * len(breaks)) + "z"
    assert one_line("Datei\tnicht gefunden") == "Datei\tnicht gefunden"  # tabs are not breaks
