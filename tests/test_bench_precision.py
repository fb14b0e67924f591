"""The benchmarks' precision axis and CPU report: parsing, interleaved order, per-round
ratios, and the capability fields for given CPU flags. Pure functions: nothing is timed."""

from __future__ import annotations

import argparse

import pytest

from bench._common import (
    abba,
    base_precision,
    cpu_capability,
    cpu_line,
    parse_precisions,
    round_ratios,
)

CORE = {"avx512_f": True, "avx512_bw": True, "avx512_vl": True, "avx512_dq": True}
AMX = {"cpu_name": "Intel Xeon Platinum 8480+", "num_physical_cores": 2, "avx2": True,
       **CORE, "avx512_bf16": True, "amx_tile": True, "amx_bf16": True,
       "amx_int8": True}
ZEN4 = {"cpu_name": "AMD EPYC", "num_physical_cores": 2, "avx2": True, **CORE,
        "avx512_bf16": True, "avx512_vnni": True}
AVX2 = {"cpu_name": "Intel Xeon E5-2680 v4", "num_physical_cores": 4, "avx2": True}


def test_parse_precisions() -> None:
    assert parse_precisions("fp32") == ["fp32"]
    assert parse_precisions(" bf16, fp32 ,") == ["bf16", "fp32"]  # the order given
    for bad, why in (("fp32,int4", "unknown precision int4"), ("", "no precision"),
                     ("fp32,fp32", "listed twice")):
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            parse_precisions(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="choose from fp32, bf16"):
        parse_precisions("fp16", allowed=("fp32", "bf16"))


def test_abba_reverses_every_other_round() -> None:
    assert [abba("AB", r) for r in range(4)] == [["A", "B"], ["B", "A"]] * 2
    assert abba([("fp32", False), ("bf16", True)], 1) == [("bf16", True), ("fp32", False)]


def test_round_ratios_against_fp32_round_by_round() -> None:
    assert base_precision(["bf16", "fp32"]) == "fp32"
    assert base_precision(["bf16", "auto"]) == "bf16"  # no fp32: the first one given
    rates = {(0, "fp32"): 100.0, (0, "bf16"): 150.0, (1, "bf16"): 120.0, (1, "fp32"): 80.0,
             (2, "bf16"): 200.0}  # round 2 lacks its fp32 side: left out
    out = round_ratios(rates, ["bf16", "fp32"])
    assert out == {"bf16/fp32": {"per_round": [1.5, 1.5], "median": 1.5}}
    assert round_ratios({(0, "fp32"): 1.0}, ["fp32"]) == {}
    assert round_ratios({(0, "fp32"): 1.0}, ["fp32", "bf16"])["bf16/fp32"]["median"] is None


_F32, _BF16 = "float32", "bfloat16"


@pytest.mark.parametrize("caps,flags,unit,auto", [
    (AMX, ["avx2", "avx512_f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"], "amx",
     {"train": _F32, "beam": _BF16, "greedy": _F32}),
    (ZEN4, ["avx2", "avx512_f", "avx512_bf16", "avx512_vnni"], "avx512_bf16",
     {"train": _BF16, "beam": _BF16, "greedy": _BF16}),
    (AVX2, ["avx2"], None, {"train": _F32, "beam": _F32, "greedy": _F32}),
])
def test_cpu_capability_fields(caps, flags, unit, auto) -> None:
    cpu = cpu_capability(caps)
    assert cpu == {"model": caps["cpu_name"], "cores": caps["num_physical_cores"],
                   "flags": flags, "torch_cpu_capability": None, "bf16_unit": unit,
                   "auto_precision": auto}
    line = cpu_line(cpu)
    assert caps["cpu_name"] in line and f"native bf16: {unit or 'none'}" in line
    assert f"precision auto: train {auto['train']}, beam {auto['beam']}, " in line


def test_cpu_capability_of_this_host() -> None:
    cpu = cpu_capability()
    assert cpu["model"] and cpu["torch_cpu_capability"] in (
        "default", "DEFAULT", "AVX2", "AVX512", "ZVECTOR", "NO AVX", "SVE256")
    assert set(cpu["auto_precision"].values()) <= {"bfloat16", "float32"}
    assert set(cpu["auto_precision"]) == {"train", "beam", "greedy"}
    if cpu["bf16_unit"] is None:  # no native bf16: fp32 for every job
        assert set(cpu["auto_precision"].values()) == {"float32"}


def test_quality_comparison_round_by_round() -> None:
    from bench.quality import compare

    runs = [{"round": 0, "precision_asked": "fp32", "tokens_per_s": 1000.0, "test_bleu": 30.0},
            {"round": 0, "precision_asked": "bf16", "tokens_per_s": 1500.0, "test_bleu": 30.4},
            {"round": 1, "precision_asked": "bf16", "tokens_per_s": 1400.0, "test_bleu": 29.9},
            {"round": 1, "precision_asked": "fp32", "tokens_per_s": 1000.0, "test_bleu": 30.1}]
    assert compare(runs, ["fp32", "bf16"]) == {"bf16/fp32": {
        "tokens_per_s": {"per_round": [1.5, 1.4], "median": 1.45},
        "test_bleu_difference_per_round": [0.4, -0.2]}}
