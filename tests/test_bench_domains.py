"""The domain benchmark's own logic without a model: the ``wrong`` mode forces one label on
every sentence, and ``changed_vs_gold`` counts the sentences whose translation moved."""

from __future__ import annotations

from types import SimpleNamespace

from bench.domains import changed_vs, translate


class FakeTranslator:
    labels = ["it", "legal", "religion"]

    def __init__(self) -> None:
        self.calls: list = []

    def translate(self, src, beam=1, domains=None):
        self.calls.append((list(src), domains))
        return [SimpleNamespace(text=f"{s}|{domains}") for s in src]


def test_wrong_forces_one_label_and_gold_decodes_each_label_set_apart() -> None:
    tr = FakeTranslator()
    out = translate(tr, ["a", "b"], "wrong", [["it"], ["legal"]], beam=1, wrong="religion")
    assert [r.text for r in out] == ["a|['religion']", "b|['religion']"]
    tr.calls.clear()
    out = translate(tr, ["a", "b", "c"], "gold", [["it"], ["legal"], ["it"]], beam=1)
    assert [r.text for r in out] == ["a|['it']", "b|['legal']", "c|['it']"]
    assert len(tr.calls) == 2


def test_changed_vs_gold_pooled_and_per_domain() -> None:
    gold = [["it"], ["it"], ["legal", "it"], ["legal"]]
    assert changed_vs(["x", "y", "z", "w"], ["x", "Y", "Z", "w"], gold) == {
        "pooled": 0.5, "per_domain": {"it": round(2 / 3, 3), "legal": 0.5}}
