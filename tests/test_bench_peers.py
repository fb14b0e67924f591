"""The benchmarks' host-match rule: a ratio to peer figures only on the recorded kind of host.

Pure functions over CPU flags and a GEMM rate, so nothing is timed here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench._peers import (
    MEASURED_PEERS,
    OTHER_HOST,
    HostMatch,
    PeerView,
    cpu_flags,
    host_match,
    load_peers,
)

ROOT = Path(__file__).resolve().parents[1]

PEERS = ROOT.parent / "shared" / "peers"
AMX_HOST = {"cpu_flags": ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8"],
            "fp32_gemm_2048_gflops_2_threads": [308.2, 334.1]}
COMMON = {"fpu", "sse4_2", "fma", "avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}


def test_matching_host() -> None:
    flags = COMMON | {"amx_bf16", "amx_int8", "amx_tile"}
    for rate in (320.0, 247.0, 400.0):  # inside 308.2-334.1 widened by 20%: 246.6-400.9
        assert host_match(AMX_HOST, flags, rate).ok, rate


def test_other_cpu_flags_do_not_match() -> None:
    no_amx = host_match(AMX_HOST, COMMON, 320.0)  # e.g. an AVX-512 EPYC without AMX
    assert not no_amx.ok and "lacks amx_bf16, amx_int8" in no_amx.reason
    avx2_record = {"cpu_flags": ["avx2"], "fp32_gemm_2048_gflops_2_threads": [150.0, 160.0]}
    amx = host_match(avx2_record, COMMON | {"amx_bf16", "amx_int8"}, 155.0)
    assert not amx.ok and "has amx_bf16, amx_int8, avx512_bf16, avx512f" in amx.reason


@pytest.mark.parametrize("rate", [150.0, 246.0, 402.0, 900.0, float("nan")])
def test_gemm_rate_far_off_does_not_match(rate: float) -> None:
    result = host_match(AMX_HOST, COMMON | {"amx_bf16", "amx_int8"}, rate)
    assert not result.ok and "outside the recorded 308.2-334.1" in result.reason


def test_ratios_only_for_a_matching_host(tmp_path: Path) -> None:
    record = load_peers(PEERS)[0] if PEERS.is_dir() else pytest.skip(f"no {PEERS}")
    key = "beam5_decode_only_sent_per_s_batch64"
    peer = max(fig[key] for fig in record.toolkits.values() if key in fig)
    peer = max(peer) if isinstance(peer, list) else peer
    same = PeerView(record, HostMatch(True, "same"))
    other = PeerView(record, HostMatch(False, "CPU flags differ"))
    assert same.ratio(2 * peer, key) == 2.0
    assert other.ratio(2 * peer, key) is None and OTHER_HOST in other.line()
    assert other.figure(key) == same.figure(key)  # absolute figures are always there
    # Seconds: lower is better, so the ratio is the peer's time over ours.
    secs = "whole_command_beam5_test2016_s"
    best = min(min(f[secs]) for f in record.toolkits.values() if secs in f)
    assert same.ratio(best / 2, secs, higher_is_better=False) == 2.0
    # [BLEU, chrF] is one figure each, not two runs.
    bleu = same.figure("test2016_bleu_chrf_beam5", pick=0)
    assert same.difference(max(bleu.values()) + 1, "test2016_bleu_chrf_beam5", pick=0) == 1.0
    assert other.difference(40.0, "test2016_bleu_chrf_beam5", pick=0) is None


def test_cpu_flags_read_the_first_flags_line(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f\n\nprocessor\t: 1\n"
                    "flags\t\t: fpu avx2 avx512f\n")
    assert cpu_flags(info) == {"fpu", "avx2", "avx512f"}
    assert cpu_flags(tmp_path / "missing") == set()


def test_the_projects_own_peers_files_load_and_match_only_their_kind_of_host():
    """bench/peers holds what ``python -m bench peer_opennmt`` measured: files the benchmarks
    read (the keys they look up are there) and that match only the host they describe."""
    from bench._peers import TRAIN_KEY, WHOLE_KEY
    from bench.infer import PEER_KEYS

    assert MEASURED_PEERS == ROOT / "bench" / "peers"

    records = load_peers(MEASURED_PEERS)
    assert records
    for record in records:
        figures = record.toolkits["opennmt-py 3.5.1"]
        assert {*PEER_KEYS.values(), WHOLE_KEY, TRAIN_KEY} <= figures.keys()
        low, high = record.host["fp32_gemm_2048_gflops_2_threads"]
        flags = set(record.host["cpu_flags"]) | {"fma", "sse4_2"}
        assert host_match(record.host, flags, (low + high) / 2).ok
        assert not host_match(record.host, flags | {"amx_bf16", "amx_int8"}, (low + high) / 2).ok
        assert not host_match(record.host, flags, 3 * high).ok
