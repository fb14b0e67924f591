"""Peer figures for the benchmarks, and whether this host is the one they were measured on.

``../shared/peers/*.json`` each hold one side-by-side measurement: the host (CPU flags, the
fp32 2048³ GEMM rate on N threads), the protocol, and one block of figures per toolkit. The
same OpenNMT-py ran 2.1x faster on an AMX host than on an AVX2 host two days earlier, so a
ratio against figures from another kind of host says little: the benchmarks print ratios only
when :func:`host_match` accepts this host, and otherwise the absolute figures and "peer
figures are from another host".

The rule (:func:`host_match`, a pure function so it is unit-tested without timing anything):

* CPU flags: over the recorded flags plus :data:`KNOWN_FLAGS` (the vector/matrix extensions
  that decide the GEMM kernels), the host has exactly the recorded ones. A host *with* AMX
  does not match a record listing only AVX2, nor one without AMX a record listing it.
* GEMM rate: the fp32 2048³ rate on the recorded thread count lies within the recorded range
  widened by ``tolerance`` (±20%) on both sides: a loaded or throttled host of the right
  kind does not pass, and neither does a much faster one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEERS = ROOT.parent / "shared" / "peers"
# Peers files this project measured itself (``python -m bench peer_opennmt``), for hosts that
# ../shared/peers has no record of; read beside it.
MEASURED_PEERS = Path(__file__).resolve().parent / "peers"

# Flags whose presence changes which GEMM kernels run (and so the peers' and our speed).
KNOWN_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8")
META_KEYS = ("measured", "host", "protocol")
# The figures a toolkit's block holds: written by bench/peer_opennmt.py, read by the benchmarks.
GREEDY_KEY = "greedy_decode_only_sent_per_s_batch64"
BEAM5_KEY = "beam5_decode_only_sent_per_s_batch64"
WHOLE_KEY = "whole_command_beam5_test2016_s"  # seconds, lower is better
TRAIN_KEY = "train_tgt_tokens_per_s"
BLEU_CHRF_BEAM5_KEY = "test2016_bleu_chrf_beam5"  # [BLEU, chrF]
BLEU_CHRF_GREEDY_KEY = "test2016_bleu_chrf_greedy"
TOLERANCE = 0.2
OTHER_HOST = "peer figures are from another host"


class PeerFileError(ValueError):
    """A peers file that cannot be used (the message names it)."""


@dataclass
class PeerRecord:
    """One peers file: the host it was measured on and each toolkit's figures."""

    path: Path
    measured: str
    host: dict
    protocol: str
    toolkits: dict[str, dict] = field(default_factory=dict)


@dataclass
class HostMatch:
    ok: bool
    reason: str  # why not, or what matched


def load_peers(directory: Path = DEFAULT_PEERS) -> list[PeerRecord]:
    """Every ``*.json`` under ``directory`` (none when the directory does not exist)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            host = raw["host"]
            flags, rate = host["cpu_flags"], host["fp32_gemm_2048_gflops_2_threads"]
        except (ValueError, KeyError, TypeError) as err:
            raise PeerFileError(f"{path}: not a peers file ({err!r})") from None
        if not isinstance(flags, list) or not isinstance(rate, list) or len(rate) != 2:
            raise PeerFileError(f"{path}: host.cpu_flags must be a list and "
                                "host.fp32_gemm_2048_gflops_2_threads a [low, high] pair")
        toolkits = {k: v for k, v in raw.items() if k not in META_KEYS and isinstance(v, dict)}
        records.append(PeerRecord(path, str(raw.get("measured", "")), host,
                                  str(raw.get("protocol", "")), toolkits))
    return records


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The flags of the first CPU listed (all cores of one VM report the same)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def host_match(recorded: dict, flags: set[str], gemm_gflops: float,
               tolerance: float = TOLERANCE) -> HostMatch:
    """Whether a host with ``flags`` and this GEMM rate is the recorded kind of host."""
    wanted = set(recorded["cpu_flags"])
    compared = wanted | set(KNOWN_FLAGS)
    missing, extra = sorted(wanted - flags), sorted((flags & compared) - wanted)
    if missing or extra:
        parts = ([f"lacks {', '.join(missing)}"] if missing else []) + (
            [f"has {', '.join(extra)} (not recorded)"] if extra else [])
        return HostMatch(False, f"CPU flags differ: this host {'; '.join(parts)}")
    low, high = recorded["fp32_gemm_2048_gflops_2_threads"]
    lo, hi = low * (1 - tolerance), high * (1 + tolerance)
    if not (math.isfinite(gemm_gflops) and lo <= gemm_gflops <= hi):
        return HostMatch(False, f"fp32 GEMM {gemm_gflops:.0f} GFLOP/s outside the recorded "
                                f"{low:g}-{high:g} ±{tolerance:.0%} ({lo:.0f}-{hi:.0f})")
    return HostMatch(True, f"same CPU flags, fp32 GEMM {gemm_gflops:.0f} GFLOP/s within "
                           f"{lo:.0f}-{hi:.0f}")


def best(value: float | list[float], higher_is_better: bool = True,
         pick: int | None = None) -> float:
    """A figure recorded once or over several runs: the peer's best run. ``pick`` takes one
    element of a list that is a tuple of different figures (``[BLEU, chrF]``), not runs."""
    if pick is not None:
        return value[pick]
    values = value if isinstance(value, list) else [value]
    return max(values) if higher_is_better else min(values)


def probe_host(threads: int = 2) -> tuple[set[str], float]:
    """This host's flags and its best-of-5 fp32 2048³ GEMM rate on ``threads`` CPU threads
    (the record's setting), restoring torch's thread count afterwards."""
    import torch

    from bench._common import gemm_peak_gflops

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rate = gemm_peak_gflops(torch.device("cpu"))
    finally:
        torch.set_num_threads(before)
    return cpu_flags(), rate


@dataclass
class PeerView:
    """What a benchmark reports about the peers: the record, whether this host matches it,
    and the figures by toolkit (absolute, always printed)."""

    record: PeerRecord | None
    match: HostMatch
    gemm_gflops: float | None = None

    def figure(self, key: str, higher_is_better: bool = True,
               pick: int | None = None) -> dict[str, float]:
        """Each toolkit's best value of ``key`` (toolkits without it are left out)."""
        if self.record is None:
            return {}
        return {name: best(fig[key], higher_is_better, pick)
                for name, fig in self.record.toolkits.items() if key in fig}

    def difference(self, ours: float, key: str, pick: int | None = None) -> float | None:
        """``ours`` minus the best peer's ``key`` (e.g. BLEU points); None unless the host
        matches (BLEU after a fixed wall-clock budget depends on the host's speed too)."""
        figures = self.figure(key, pick=pick)
        if not self.match.ok or not figures or ours is None:
            return None
        return round(ours - max(figures.values()), 2)

    def ratio(self, ours: float, key: str, higher_is_better: bool = True) -> float | None:
        """``ours`` against the best peer's ``key`` (>1 = we are better); None unless the host
        matches, so no ratio against another host's figures is ever printed."""
        figures = self.figure(key, higher_is_better)
        if not self.match.ok or not figures or not ours:
            return None
        if higher_is_better:
            return round(ours / max(figures.values()), 3)
        return round(min(figures.values()) / ours, 3)

    def summary(self) -> dict:
        """For the benchmark's JSON output."""
        if self.record is None:
            return {"file": None, "host_match": False, "reason": self.match.reason}
        return {"file": str(self.record.path), "measured": self.record.measured,
                "host_match": self.match.ok, "reason": self.match.reason,
                "this_host_gemm_gflops": self.gemm_gflops,
                "recorded_host": self.record.host, "figures": self.record.toolkits}

    def line(self) -> str:
        """One human line: whether ratios are printed, and why."""
        if self.record is None:
            return f"peers: {self.match.reason}"
        if self.match.ok:
            return f"peers ({self.record.path.name}): same host ({self.match.reason})"
        return f"peers ({self.record.path.name}): {OTHER_HOST} ({self.match.reason})"


def add_peers_argument(parser) -> None:
    """``--peers DIR`` (repeatable) for a benchmark's argument parser; see :func:`peer_view`."""
    parser.add_argument("--peers", type=Path, action="append",
                        help="a directory of peers files, repeatable (default ../shared/peers "
                             "and bench/peers, from python -m bench peer_opennmt)")


def peer_view(directories: Path | Sequence[Path] | None = None,
              device: str = "cpu") -> PeerView:
    """The newest peers file measured on this kind of host, else the newest one (marked as
    from another host), from ``directories`` (default: ../shared/peers and the project's
    own). Probes the GEMM rate once, on the records' thread count; a run on another device
    than the CPU never matches (the peers' figures are CPU figures)."""
    if directories is None:
        directories = (DEFAULT_PEERS, MEASURED_PEERS)
    elif isinstance(directories, Path):
        directories = (directories,)
    records = sorted((r for d in directories for r in load_peers(d)),
                     key=lambda r: (r.measured, r.path.name))
    if not records:
        where = ", ".join(str(d) for d in directories)
        return PeerView(None, HostMatch(False, f"no peer figures in {where}"))
    if device != "cpu":
        return PeerView(records[-1], HostMatch(False, f"the peers ran on the CPU, this on "
                                                      f"{device}"))
    flags, rate = probe_host(int(records[-1].host.get("threads", 2)))
    matches = [(r, host_match(r.host, flags, rate)) for r in records]
    record, match = next(((r, m) for r, m in reversed(matches) if m.ok), matches[-1])
    return PeerView(record, match, round(rate, 1))
