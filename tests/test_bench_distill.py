"""``python -m bench distill``: which training jobs share the cores, and how the three targets
are read off the decoding rows. Pure functions: nothing is trained or timed."""

from __future__ import annotations

from bench.distill import targets, waves


def test_no_more_jobs_at_once_than_the_cores_hold() -> None:
    jobs = ["student", "student_refs", "baseline"]
    # 2 cores, one thread each: the two models the targets compare first, the extra one after
    assert waves(jobs, cores=2, threads=1) == [["student", "baseline"], ["student_refs"]]
    assert waves(jobs, cores=4, threads=1) == [["student", "baseline", "student_refs"]]
    assert waves(jobs, cores=4, threads=2) == [["student", "baseline"], ["student_refs"]]
    assert waves(jobs, cores=2, threads=2) == [["student"], ["baseline"], ["student_refs"]]
    assert waves(["student"], cores=1, threads=4) == [["student"]]
    assert waves([], cores=2, threads=1) == []


def _row(model: str, beam: int, precision: str, bleu: float, speed: float) -> dict:
    return {"model": model, "beam": beam, "precision": precision, "bleu": bleu,
            "sentences_per_s": speed}


def test_targets_compare_fp32_and_each_model_at_its_fastest_precision() -> None:
    rows = [_row("teacher", 5, "fp32", 31.0, 70.0), _row("teacher", 5, "int8", 30.9, 200.0),
            _row("student", 1, "fp32", 30.6, 700.0), _row("student", 1, "int8", 30.2, 1500.0),
            _row("baseline", 1, "fp32", 28.0, 600.0), _row("baseline", 1, "int8", 28.1, 1000.0),
            _row("teacher", 1, "fp32", 30.8, 220.0)]
    out = targets(rows)
    fp32 = out["fp32"]
    assert fp32["speedup"] == 10.0 and fp32["bleu_vs_teacher"] == -0.4
    assert fp32["bleu_vs_baseline"] == 2.6
    assert fp32["met"] == {"speedup>=4": True, "bleu_vs_teacher>=-0.5": True,
                           "bleu_vs_baseline>=2": True}
    fastest = out["fastest"]  # int8 on both sides: 7.5x, and 0.7 BLEU below the teacher
    assert fastest["teacher_beam5"]["precision"] == "int8"
    assert fastest["speedup"] == 7.5 and fastest["bleu_vs_teacher"] == -0.7
    assert fastest["met"]["bleu_vs_teacher>=-0.5"] is False
    assert fastest["bleu_vs_baseline"] == 2.1 and fastest["met"]["bleu_vs_baseline>=2"]
