"""Which training rows an epoch holds: temperature / weighted sampling over domains.

A corpus of 46k Tatoeba pairs and 1.5k legal pairs, trained on as it is, spends 3% of its
updates on legal text. fairseq and OpenNMT-py users balance such corpora by sampling domain
``i`` with probability ``p_i ∝ n_i ** (1 / T)``; :class:`DomainSampler` does the same over
the domain labels of the training rows, optionally scaled by per-domain weights.

Each epoch draws exactly ``round(p_i * N)`` rows of domain ``i`` (``N`` = the split's size,
largest remainders rounded up): whole copies of the domain while it is upsampled, then a
random subset without replacement, so a downsampled domain shows distinct pairs and the
proportions are exact rather than multinomial noise. The draw depends on ``(seed, epoch)``
only, which is what lets :class:`translate.data.batching.BatchSampler` rebuild an epoch on
resume. A row with several labels belongs to its rarest domain (the one it helps most).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from translate.config import ConfigError, SamplingConfig
from translate.data.epoch_plan import index_dtype

NO_DOMAIN = ""  # the group of rows without a label

# Mixed into the seed so the rows drawn are independent of the batch shuffle of the epoch.
_STREAM = 0x5A4D


def is_active(cfg: SamplingConfig) -> bool:
    """False when sampling would just reproduce the corpus (the default): no resampling."""
    return cfg.temperature != 1.0 or bool(cfg.weights)


def row_groups(domains: Sequence[Sequence[str]]) -> list[str]:
    """Each row's sampling domain: its rarest label (ties by name), ``NO_DOMAIN`` if none."""
    counts = Counter(label for row in domains for label in row)
    return [min(row, key=lambda lab: (counts[lab], lab)) if row else NO_DOMAIN
            for row in domains]


def domain_probabilities(sizes: dict[str, int], cfg: SamplingConfig) -> dict[str, float]:
    """``p_i ∝ (w_i * n_i) ** (1 / T)``; weights name domains that must exist."""
    unknown = sorted(set(cfg.weights) - set(sizes))
    if unknown:
        known = ", ".join(sorted(d for d in sizes if d != NO_DOMAIN)) or "none"
        raise ConfigError(f"data.sampling.weights.{unknown[0]}: no training pair has this "
                          f"domain (the training domains are: {known})")
    raw = {d: (cfg.weights.get(d, 1.0) * n) ** (1.0 / cfg.temperature)
           for d, n in sorted(sizes.items()) if n > 0}
    total = sum(raw.values())
    return {d: v / total for d, v in raw.items()}


def _quotas(probs: dict[str, float], total: int) -> dict[str, int]:
    """Integer rows per domain summing to ``total`` (largest remainder method)."""
    exact = {d: p * total for d, p in probs.items()}
    quota = {d: int(np.floor(x)) for d, x in exact.items()}
    left = total - sum(quota.values())
    for d in sorted(exact, key=lambda d: (quota[d] - exact[d], d))[:left]:
        quota[d] += 1
    return quota


class DomainSampler:
    """The row indices of every epoch under a :class:`SamplingConfig` (see module doc)."""

    def __init__(self, domains: Sequence[Sequence[str]], cfg: SamplingConfig,
                 seed: int = 0) -> None:
        groups = row_groups(domains)
        names = sorted(set(groups))
        index = {d: i for i, d in enumerate(names)}
        code = np.fromiter((index[g] for g in groups), dtype=np.int32, count=len(groups))
        # Each domain's rows in ascending order, as one array split in views (int32 while
        # the split allows: no Python list of row numbers at millions of pairs).
        by_domain = np.argsort(code, kind="stable").astype(index_dtype(len(groups)))
        cuts = np.cumsum(np.bincount(code, minlength=len(names)))[:-1]
        self.members = dict(zip(names, np.split(by_domain, cuts), strict=True))
        sizes = {d: len(rows) for d, rows in self.members.items()}
        self.probs = domain_probabilities(sizes, cfg)
        self.quotas = _quotas(self.probs, len(groups))
        self.seed = seed

    def rows(self, epoch: int) -> np.ndarray:
        """The rows of ``epoch`` (with repeats when a domain is upsampled), domain by domain;
        the batch sampler orders and shuffles them."""
        rng = np.random.default_rng([self.seed, epoch, _STREAM])
        out = []
        for d, quota in self.quotas.items():
            members = self.members[d]
            copies, rest = divmod(quota, len(members))
            out += [members] * copies
            out.append(np.sort(rng.choice(members, size=rest, replace=False)))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)

    def describe(self) -> str:
        """One line for the training log: each domain's share of an epoch and its factor."""
        parts = [f"{d or '(none)'} {100 * self.probs[d]:.1f}% "
                 f"(x{self.quotas[d] / len(self.members[d]):.2f})" for d in self.quotas]
        return "sampling per epoch: " + ", ".join(parts)
