"""``python -m bench ensemble``: what is decoded, and how the ensemble's gain and cost are read
off the rows. Pure functions: nothing is loaded or timed."""

from __future__ import annotations

from bench.ensemble import summarise, variants


def test_members_ensembles_and_snapshots_are_decoded() -> None:
    todo = variants(["runs/a", "runs/b"], "runs/a", "last,best")
    assert todo["member1"] == {"run_dir": "runs/a"}
    assert todo["ensemble-prob"] == {"run_dir": ["runs/a", "runs/b"], "combine": "prob"}
    assert todo["ensemble-logprob"]["combine"] == "logprob"
    assert todo["snapshot2"] == {"run_dir": "runs/a", "checkpoint": "best"}
    assert todo["snapshot-ensemble"] == {"run_dir": "runs/a", "checkpoint": "last,best"}
    assert list(variants(["runs/a"], None, "last,best")) == ["member1"]  # nothing to combine


def _row(name: str, bleu: float, speed: float, beam: int = 5) -> dict:
    return {"name": name, "precision": "fp32", "beam": beam, "bleu": bleu,
            "sentences_per_s": speed}


def test_gain_over_the_best_member_and_speed_against_a_member() -> None:
    rows = [_row("member1", 35.0, 60.0), _row("member2", 33.0, 64.0),
            _row("ensemble-prob", 36.5, 31.0), _row("ensemble-logprob", 36.0, 31.0),
            _row("snapshot1", 34.0, 60.0), _row("snapshot2", 34.4, 60.0),
            _row("snapshot-ensemble", 34.9, 30.0), _row("member1", 34.0, 200.0, beam=1)]
    out = {s["name"]: s for s in summarise(rows) if s["beam"] == 5}
    assert out["ensemble-prob"]["bleu_gain"] == 1.5
    assert out["ensemble-prob"]["best_member_bleu"] == 35
    assert out["ensemble-prob"]["speed_vs_member"] == 0.5
    assert out["ensemble-logprob"]["bleu_gain"] == 1.0
    assert out["snapshot-ensemble"]["bleu_gain"] == 0.5
    assert out["snapshot-ensemble"]["speed_vs_member"] == 0.5
    assert set(out) == {"ensemble-prob", "ensemble-logprob", "snapshot-ensemble"}
