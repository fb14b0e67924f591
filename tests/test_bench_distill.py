"""``python -m bench distill``: which training jobs share the cores, and how the three targets
are read off the decoding rows (per seed, then their mean and spread). Pure functions:
nothing is trained or timed."""

from __future__ import annotations

import pytest

from bench.distill import parse_args, targets, waves


def test_no_more_jobs_at_once_than_the_cores_hold() -> None:
    jobs = ["student", "student_refs", "baseline"]
    # 2 cores, one thread each: the two models the targets compare first, the extra one after
    assert waves(jobs, cores=2, threads=1) == [["student", "baseline"], ["student_refs"]]
    assert waves(jobs, cores=4, threads=1) == [["student", "baseline", "student_refs"]]
    assert waves(jobs, cores=4, threads=2) == [["student", "baseline"], ["student_refs"]]
    assert waves(jobs, cores=2, threads=2) == [["student"], ["baseline"], ["student_refs"]]
    assert waves(["student"], cores=1, threads=4) == [["student"]]
    assert waves([], cores=2, threads=1) == []
    # two seeds: each seed's student and baseline train side by side, in the same minutes
    seeds = ["student-s1234", "baseline-s1234", "student-s7", "baseline-s7"]
    assert waves(seeds, cores=2, threads=1) == [seeds[:2], seeds[2:]]
    assert waves(["teacher1", "teacher2"], cores=2, threads=1) == [["teacher1", "teacher2"]]


def _row(model: str, beam: int, precision: str, bleu: float, speed: float,
         seed: int | None = None) -> dict:
    return {"model": model, "seed": seed, "beam": beam, "precision": precision, "bleu": bleu,
            "sentences_per_s": speed}


def test_targets_compare_fp32_and_each_model_at_its_fastest_precision() -> None:
    rows = [_row("teacher", 5, "fp32", 31.0, 70.0), _row("teacher", 5, "int8", 30.9, 200.0),
            _row("student", 1, "fp32", 30.6, 700.0), _row("student", 1, "int8", 30.2, 1500.0),
            _row("baseline", 1, "fp32", 28.0, 600.0), _row("baseline", 1, "int8", 28.1, 1000.0),
            _row("teacher", 1, "fp32", 30.8, 220.0)]
    out = targets(rows)
    fp32 = out["fp32"]
    assert fp32["speedup"] == 10.0 and fp32["bleu_vs_teacher"] == -0.4
    assert fp32["bleu_vs_baseline"] == 2.6 and fp32["bleu_vs_baseline_spread"] == 0
    assert fp32["met"] == {"speedup>=8": True, "bleu_vs_teacher>=-1": True,
                           "bleu_vs_baseline>=1": True}
    fastest = out["fastest"]  # int8 on both sides: 7.5x, and 0.7 BLEU below the teacher
    assert fastest["seeds"]["None"]["teacher_beam5"]["precision"] == "int8"
    assert fastest["speedup"] == 7.5 and fastest["bleu_vs_teacher"] == -0.7
    assert fastest["met"]["speedup>=8"] is False and fastest["met"]["bleu_vs_teacher>=-1"]
    assert fastest["bleu_vs_baseline"] == 2.1


def test_targets_over_two_seeds_are_the_mean_with_the_spread() -> None:
    teacher = [_row("teacher", 5, "fp32", 38.0, 40.0)]  # an ensemble teacher: one row
    seed_rows = [_row("student", 1, "fp32", 37.5, 400.0, 1234),
                 _row("baseline", 1, "fp32", 36.0, 420.0, 1234),
                 _row("student", 1, "fp32", 36.9, 360.0, 7),
                 _row("baseline", 1, "fp32", 36.4, 380.0, 7)]
    fp32 = targets(teacher + seed_rows)["fp32"]
    assert fp32["seeds"]["1234"]["bleu_vs_baseline"] == 1.5
    assert fp32["seeds"]["7"]["bleu_vs_baseline"] == 0.5
    assert fp32["bleu_vs_baseline"] == 1.0 and fp32["bleu_vs_baseline_spread"] == 1.0
    assert fp32["speedup"] == 9.5 and fp32["speedup_spread"] == 1.0
    assert fp32["bleu_vs_teacher"] == -0.8
    assert fp32["met"] == {"speedup>=8": True, "bleu_vs_teacher>=-1": True,
                           "bleu_vs_baseline>=1": True}


def test_teachers_and_seeds_repeat(tmp_path) -> None:
    args = parse_args(["--teacher", "a", "--teacher", "b", "--teacher-minutes", "30",
                       "--seed", "1234", "--seed", "7"])
    assert [str(t) for t in args.teacher] == ["a", "b"] and args.seed == [1234, 7]
    assert parse_args([]).seed == [1234]
    with pytest.raises(SystemExit):
        parse_args(["--baseline", "x", "--seed", "1", "--seed", "2"])
    with pytest.raises(SystemExit):
        parse_args(["--seed", "1", "--seed", "1"])


def test_baselines_pair_with_seeds_in_order(capsys) -> None:
    args = parse_args(["--seed", "1234", "--seed", "7", "--baseline", "b1", "--baseline", "b7"])
    assert [str(b) for b in args.baseline] == ["b1", "b7"] and args.seed == [1234, 7]
    with pytest.raises(SystemExit):
        parse_args(["--seed", "1234", "--seed", "7", "--baseline", "b1"])
    assert "one per --seed" in capsys.readouterr().err
