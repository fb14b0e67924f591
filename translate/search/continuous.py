"""Continuous batching: one decoding batch that sentences join and leave between steps.

A static batch (:func:`~translate.search.decoding.decode_ids`) decodes until its longest
sentence ends, while sentences that arrive meanwhile wait for the next batch. A
:class:`ContinuousSearch` instead keeps one running batch: :meth:`~ContinuousSearch.add`
encodes new sentences and joins their encoder states to the batch's (sources padded to the
longest), :meth:`~ContinuousSearch.step` advances every sentence by one token and hands back
the sentences that finished, whose rows leave the batch at once. A caller that adds waiting
sentences before each step keeps the batch full, and a short sentence never waits for a long
one.

Each sentence is searched exactly as :func:`~translate.search.beam.beam_search` /
:func:`~translate.search.beam.greedy_search` search it alone (the same one-step API calls,
the same candidate selection, length rules, n-gram blocking, early stopping and scores), only
at its own step count: every sentence keeps its own step, length limit, ``n_best``, finished
hypotheses and left-aligned history. Beam search keeps ``beam_size`` rows per sentence from
the start (the start beam and ``beam_size - 1`` dead copies scored -inf), so the batch's
rows group evenly over sentences for attention; the dead copies never win a candidate a live
beam offers, so the first step picks what the single start beam picks. With fp32 weights the
outputs are those of each sentence decoded alone (scores to float rounding: the row count
changes which kernels the products use). bf16 and int8 are batch-dependent whatever the
batching (bf16 products round differently per kernel, int8 quantizes activations per batch),
as :class:`~translate.inference.translator.Translator`'s static batches are.

With a vocabulary shortlist (``shortlist``), each sentence is decoded over its own, the one
it would have alone (:mod:`translate.search.own_shortlists`), never over its batch's union as
a static batch is. A sentence that asks for it (``Sentence.attention``) gets each
hypothesis' attention, as the static searches give it with ``attention=True``
(:mod:`translate.search.kept_attention`); the others keep none.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from translate.config import InferenceConfig
from translate.data.batching import collate, source_split
from translate.runtime import autocast
from translate.search.beam import (
    Hypothesis,
    _log_probs,
    _mask_specials,
    _max_lengths,
    length_penalty,
)
from translate.search.domain_choice import DomainChoice
from translate.search.kept_attention import KeptAttention
from translate.search.ops import row_topk
from translate.search.own_shortlists import OwnShortlists

__all__ = ["ContinuousSearch", "Finished", "Sentence", "join"]


@dataclass(eq=False)
class Sentence:
    """One source to decode: the caller's ``key``, its piece ids, how many hypotheses to
    return, (domain-conditioned models) its :class:`DomainChoice` and row for it, and
    whether to fill its hypotheses' ``attention``."""

    key: object
    ids: Sequence[int]
    n_best: int = 1
    choice: DomainChoice | None = None
    row: int = 0  # the sentence's row for DomainChoice.given
    attention: bool = False


@dataclass(eq=False)
class Finished:
    """A sentence's search result: best first, as the static searches return it, with its
    tagger probabilities and conditioning weights (``[L]`` float32, None when absent)."""

    key: object
    hypotheses: list[Hypothesis]
    domain_probs: Tensor | None = None
    domain_weights: Tensor | None = None


def join(parts: list, length: int | None = None):
    """Encoder outputs (``length``: their source positions) or decoder states as one: their
    ``cat``, or member by member for a wrapper of several models (``members``)."""
    first = parts[0]
    kind = type(first)
    if hasattr(kind, "cat"):
        return kind.cat(parts, length) if length is not None else kind.cat(parts)
    if hasattr(first, "members"):
        return kind(tuple(join(list(m), length) for m in zip(*(p.members for p in parts),
                                                              strict=True)))
    raise TypeError(f"{kind.__name__} cannot join a running batch (no cat)")


@dataclass
class _Rows:
    """The running batch: per sentence (dim 0) or per row (``width`` rows per sentence)."""

    enc: object
    state: object
    prev: Tensor  # [R] the last token of each row
    scores: Tensor  # [B, width] beam scores (greedy: [B, 1] running log-prob)
    history: Tensor  # [R, L] tokens so far, left-aligned (pad after each row's step)
    steps: Tensor  # [B] tokens each sentence has so far
    max_lens: Tensor  # [B]
    n_best: Tensor  # [B]
    bound: Tensor | None = None  # [B] beam: the most lenient length penalty
    fin_tokens: Tensor | None = None  # beam: [B, 2k + 1, L] finished hypotheses' tokens
    fin_norm: Tensor | None = None  # [B, 2k + 1]
    fin_raw: Tensor | None = None
    fin_len: Tensor | None = None
    fin_count: Tensor | None = None  # [B]
    sentence_fields: tuple[str, ...] = field(default=(
        "scores", "steps", "max_lens", "n_best", "bound", "fin_tokens", "fin_norm",
        "fin_raw", "fin_len", "fin_count"), repr=False)


class ContinuousSearch:
    """Greedy or beam search (``opts.beam_size``; 1 without n-gram blocking is greedy, as
    :func:`~translate.search.decoding.decode_ids` decides) over a batch that changes
    between steps. It puts ``model`` in eval mode and owns it while it decodes; it is not
    thread-safe: one owner calls :meth:`add` and :meth:`step`."""

    def __init__(self, model: nn.Module, opts: InferenceConfig, special: dict[str, int],
                 device: torch.device, dtype: torch.dtype = torch.float32,
                 shortlist=None, vocab_size: int = 0) -> None:
        self.model, self.opts, self.device, self.dtype = model, opts, device, dtype
        self.bos, self.eos, self.pad = special["bos_id"], special["eos_id"], special["pad_id"]
        self.greedy = opts.beam_size == 1 and opts.no_repeat_ngram == 0
        self.width = 1 if self.greedy else opts.beam_size
        self.conditioned = bool(getattr(model, "conditioned", False))
        model.eval()
        # With a shortlist, each sentence is decoded over its own (own_shortlists.py).
        self.own = (OwnShortlists(model, shortlist, special, vocab_size, device)
                    if shortlist is not None else None)
        self.kept = KeptAttention(self.width, not self.greedy, device)
        self._rows: _Rows | None = None
        # Per sentence, in batch order, on the host: what the loop decides with.
        self._keys: list[object] = []
        self._src_lens: list[int] = []
        self._steps: list[int] = []
        self._limits: list[int] = []
        self._nbest: list[int] = []
        self._tags: list[Tensor | None] = []
        self._mixes: list[Tensor | None] = []

    _host_fields = ("_keys", "_src_lens", "_steps", "_limits", "_nbest", "_tags", "_mixes")

    def __len__(self) -> int:
        """Sentences in the running batch."""
        return len(self._keys)

    @property
    def pieces(self) -> int:
        """Source pieces in the running batch (what its memory grows with)."""
        return sum(self._src_lens)

    # ------------------------------------------------------------------ joining

    def add(self, sentences: Sequence[Sentence]) -> None:
        """Encode ``sentences`` together and join them to the running batch."""
        if not sentences:
            return
        rows = self._start(sentences)
        if self.own is not None:
            self.own.add([list(s.ids) for s in sentences])
        self.kept.add([s.attention for s in sentences], self._src_lens[-len(sentences):])
        if self._rows is None:
            forget = getattr(self.model, "forget_step_cache", None)
            if forget is not None:  # fresh step weights, as each static search starts with
                forget()
            self._rows = rows
        else:
            self._rows = self._join(self._rows, rows)

    def _start(self, sentences: Sequence[Sentence]) -> _Rows:
        """The new sentences' encoder output and first-step rows."""
        ids = [list(s.ids) for s in sentences]
        split = source_split(ids)
        batch = collate(split, range(len(ids)), self.pad, self.bos, self.eos).to(self.device)
        with torch.inference_mode(), autocast(self.device, self.dtype):
            enc = self.model.encode(batch.src, batch.src_lengths, batch.src_mask)
            logits = self.model.tag(enc)
            tags = None if logits is None else torch.sigmoid(logits.float()).cpu()
            mixes = None
            if self.conditioned:
                mixes = self._weights(sentences, tags)
                enc = self.model.condition(enc, mixes.to(self.device))
            state = self.model.init_decoder_state(enc)
        n, k = len(sentences), self.width
        limits = _max_lengths(batch.src_lengths, self.opts.max_len_a, self.opts.max_len_b)
        self._keys += [s.key for s in sentences]
        self._src_lens += batch.src_lengths.tolist()
        self._steps += [0] * n
        self._limits += limits
        self._nbest += [s.n_best for s in sentences]
        self._tags += [None] * n if tags is None else list(tags)
        self._mixes += [None] * n if mixes is None else list(mixes)
        dev, long = self.device, torch.long
        max_lens = torch.tensor(limits, dtype=long, device=dev)
        width = max(limits) + 1
        rows = _Rows(
            enc=enc, state=state,
            prev=torch.full((n * k,), self.bos, dtype=long, device=dev),
            scores=torch.zeros((n, k), dtype=torch.float32, device=dev),
            history=torch.full((n * k, width), self.pad, dtype=long, device=dev),
            steps=torch.zeros(n, dtype=long, device=dev), max_lens=max_lens,
            n_best=torch.tensor([s.n_best for s in sentences], dtype=long, device=dev))
        if self.greedy:
            return rows
        rows.scores[:, 1:] = -math.inf  # one live start beam, k - 1 dead copies
        rows.state = rows.state.index_select(
            torch.arange(n, device=dev).repeat_interleave(k))
        cap = 2 * k
        rows.fin_tokens = torch.full((n, cap + 1, width), self.pad, dtype=long, device=dev)
        rows.fin_norm = torch.full((n, cap + 1), -math.inf, dtype=torch.float32, device=dev)
        rows.fin_raw = rows.fin_norm.clone()
        rows.fin_len = torch.zeros((n, cap + 1), dtype=long, device=dev)
        rows.fin_count = torch.zeros(n, dtype=long, device=dev)
        if self.opts.alpha >= 0:
            rows.bound = length_penalty(max_lens.float() + 1.0, self.opts.alpha)
        return rows

    def _weights(self, sentences: Sequence[Sentence], tags: Tensor | None) -> Tensor:
        """Each sentence's label weights from its own :class:`DomainChoice`."""
        n_labels = self.model.n_labels
        out = torch.zeros(len(sentences), n_labels)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(sentences):
            groups[id(s.choice)].append(i)
        for members in groups.values():
            choice = sentences[members[0]].choice or DomainChoice.predicted()
            probs = None if tags is None else tags[members]
            out[members] = choice.weights([sentences[i].row for i in members], probs, n_labels)
        return out

    def _join(self, old: _Rows, new: _Rows) -> _Rows:
        length = max(self._src_lens)
        width = max(old.history.size(1), new.history.size(1))
        out = _Rows(enc=join([old.enc, new.enc], length), state=join([old.state, new.state]),
                    prev=torch.cat([old.prev, new.prev]),
                    history=torch.cat([_widen(old.history, width, self.pad),
                                       _widen(new.history, width, self.pad)]),
                    scores=old.scores, steps=old.steps, max_lens=old.max_lens,
                    n_best=old.n_best)
        for name in old.sentence_fields:
            a, b = getattr(old, name), getattr(new, name)
            if a is not None:
                if name == "fin_tokens":
                    a, b = _widen(a, width, self.pad), _widen(b, width, self.pad)
                setattr(out, name, torch.cat([a, b]))
        return out

    def drop(self, which: Callable[[object], bool]) -> None:
        """Remove the sentences whose key ``which`` accepts (e.g. their request went away)."""
        kept = [i for i, key in enumerate(self._keys) if not which(key)]
        if len(kept) == len(self._keys):
            return
        if kept:
            k, rows = self.width, self._rows
            keep = torch.tensor([i * k + j for i in kept for j in range(k)],
                                dtype=torch.long, device=self.device)
            rows.state = rows.state.index_select(keep)
            rows.prev, rows.history = rows.prev[keep], rows.history[keep]
        self._select(kept)

    def _select(self, kept: list[int]) -> None:
        """Only the sentences ``kept`` (batch positions) stay; their padding goes too.
        (Only the per-sentence fields: the caller selects the rows.)"""
        if kept and len(kept) == len(self._keys):  # positions are increasing: nobody leaves
            return
        for name in self._host_fields:
            values = getattr(self, name)
            setattr(self, name, [values[i] for i in kept])
        if self.own is not None:
            self.own.keep(kept)
        self.kept.keep(kept)
        rows = self._rows
        if not kept:
            self._rows = None
            return
        if len(kept) == rows.steps.size(0):
            return
        keep = torch.tensor(kept, dtype=torch.long, device=self.device)
        for name in rows.sentence_fields:
            if getattr(rows, name) is not None:
                setattr(rows, name, getattr(rows, name).index_select(0, keep))
        rows.enc = rows.enc.index_select(keep)
        length = max(self._src_lens)
        if length < rows.enc.mask.size(1):
            rows.enc = join([rows.enc], length)
        width = max(self._limits) + 1
        if width < rows.history.size(1):
            rows.history = rows.history[:, :width]
            if rows.fin_tokens is not None:
                rows.fin_tokens = rows.fin_tokens[:, :, :width]

    def _keep(self, kept: list[int]) -> None:
        """:meth:`_select` the sentences ``kept``, one step further on."""
        self._select(kept)
        self._steps = [s + 1 for s in self._steps]
        if self._rows is not None:
            self._rows.steps += 1

    def _retire(self, flags: list[bool], results) -> tuple[list[Finished], list[int]]:
        """The sentences ``flags`` marks done, with their ``results(positions)``, and the
        positions of the others."""
        done = [i for i, f in enumerate(flags) if f]
        kept = [i for i, f in enumerate(flags) if not f]
        if not done:
            return [], kept
        finished = [Finished(self._keys[i], hyps, self._tags[i], self._mixes[i])
                    for i, hyps in zip(done, results(done), strict=True)]
        return finished, kept

    # ------------------------------------------------------------------ stepping

    def step(self) -> list[Finished]:
        """Advance every sentence by one token; the sentences that finished, which have
        left the batch."""
        if self._rows is None:
            return []
        with torch.inference_mode(), autocast(self.device, self.dtype):
            return self._greedy_step() if self.greedy else self._beam_step()

    def _log_probs(self, rows: _Rows) -> tuple[Tensor, object, dict[str, int]]:
        """The step's log-probs and new decoder state, and where bos, eos and pad are in
        the log-probs' columns (the vocabulary, or the union of the shortlists). The step's
        attention is kept for the sentences that ask."""
        attn: list[Tensor] | None = [] if self.kept else None
        if self.own is None:
            lprobs, state = _log_probs(self.model, rows.prev, rows.state, rows.enc, attn)
            at = {"bos_id": self.bos, "eos_id": self.eos, "pad_id": self.pad}
        else:
            lprobs, state = self.own.log_probs(rows.prev, rows.state, rows.enc, self.width,
                                               attn)
            at = self.own.positions
        if attn:
            self.kept.record(attn[0])
        return lprobs, state, at

    def _columns(self, ids: Tensor) -> Tensor:
        """Column positions of the step's log-probs as vocabulary ids."""
        return ids if self.own is None else self.own.to_vocab(ids)

    def _rules(self, lprobs: Tensor, at: dict[str, int]) -> None:
        """Specials never; eos not before ``min_len``, forced (with its real log-prob) at
        each row's maximum: :func:`~translate.search.beam._apply_length_rules`, per row.
        ``at``: the specials' columns."""
        _mask_specials(lprobs, bos_id=at["bos_id"], pad_id=at["pad_id"])
        eos = at["eos_id"]
        min_len = self.opts.min_len
        block = any(s < min_len for s in self._steps)
        force = any(lim <= s for lim, s in zip(self._limits, self._steps, strict=True))
        if not (block or force):
            return
        rows = self._rows
        steps = rows.steps.repeat_interleave(self.width)
        eos_lp = lprobs[:, eos].clone()
        if block:
            lprobs[:, eos] = torch.where(steps < min_len, -math.inf, eos_lp)
        if force:
            forced = rows.max_lens.repeat_interleave(self.width) <= steps
            lprobs.masked_fill_(forced.unsqueeze(1), -math.inf)
            lprobs[:, eos] = torch.where(forced, eos_lp, lprobs[:, eos])

    def _penalty(self, offset: int) -> Tensor:
        """``length_penalty(step + offset)`` per sentence, as the static search computes it
        (in double precision on the host, divided in float32)."""
        return torch.tensor([length_penalty(s + offset, self.opts.alpha) for s in self._steps],
                            dtype=torch.float32, device=self.device)

    def _greedy_step(self) -> list[Finished]:
        """One step of :func:`~translate.search.beam.greedy_search` for every sentence."""
        rows = self._rows
        lprobs, state, at = self._log_probs(rows)
        self._rules(lprobs, at)
        best_lp, nxt = row_topk(lprobs, 1)
        rows.scores = rows.scores + best_lp
        nxt = self._columns(nxt.squeeze(1))
        rows.history[torch.arange(len(self), device=self.device), rows.steps] = nxt
        flags = (nxt == self.eos).tolist()  # the one host sync per step
        finished, kept = self._retire(flags, self._greedy_results)
        if finished and kept:
            keep = torch.tensor(kept, dtype=torch.long, device=self.device)
            state, nxt, rows.history = state.index_select(keep), nxt[keep], rows.history[keep]
        rows.state, rows.prev = state, nxt
        self._keep(kept)
        return finished

    def _greedy_results(self, done: list[int]) -> list[list[Hypothesis]]:
        idx = torch.tensor(done, dtype=torch.long, device=self.device)
        lps = self._rows.scores[idx, 0].tolist()
        tokens = self._rows.history[idx].tolist()
        lens = [self._steps[i] for i in done]
        return [[Hypothesis(t[:n], lp / length_penalty(n + 1, self.opts.alpha), lp,
                            self.kept.greedy(i))]
                for i, t, n, lp in zip(done, tokens, lens, lps, strict=True)]

    def _beam_step(self) -> list[Finished]:
        """One step of :func:`~translate.search.beam.beam_search` for every sentence."""
        rows, k, opts = self._rows, self.width, self.opts
        n, dev = len(self), self.device
        lprobs, state, at = self._log_probs(rows)
        self._rules(lprobs, at)
        if opts.no_repeat_ngram > 0 and max(self._steps) >= opts.no_repeat_ngram:
            history = rows.history if self.own is None else self.own.to_positions(rows.history)
            _block_ngrams(lprobs, history, rows.steps.repeat_interleave(k),
                          opts.no_repeat_ngram, at["pad_id"])
        # The static search's two stages (see beam_search); the dead start copies add -inf
        # candidates after the live beam's, which a stable sort keeps behind them.
        per_beam = min(2 * k, lprobs.size(1))
        tok_lp, tok_idx = row_topk(lprobs, per_beam)
        tok_idx = self._columns(tok_idx)
        sums = (rows.scores.view(-1, 1) + tok_lp).view(n, k * per_beam)
        sums, order = sums.sort(dim=1, descending=True, stable=True)
        cand_scores, order = sums[:, :2 * k], order[:, :2 * k]
        cand_beam = order // per_beam
        cand_tok = tok_idx.view(n, k * per_beam).gather(1, order)
        row_base = torch.arange(n, device=dev).unsqueeze(1) * k
        is_eos = (cand_tok == self.eos) & torch.isfinite(cand_scores)

        # Finalise eos candidates that rank within the top k (slot 2k: the trash slot).
        cap = 2 * k
        fin_mask = is_eos[:, :k]
        slot = rows.fin_count.unsqueeze(1) + fin_mask.long().cumsum(1) - 1
        slot = torch.where(fin_mask, slot.clamp(max=cap - 1), torch.full_like(slot, cap))
        sent = torch.arange(n, device=dev).unsqueeze(1).expand(-1, k)
        rows.fin_norm[sent, slot] = cand_scores[:, :k] / self._penalty(1).unsqueeze(1)
        rows.fin_raw[sent, slot] = cand_scores[:, :k]
        rows.fin_len[sent, slot] = rows.steps.unsqueeze(1).expand(-1, k)
        src_rows = (row_base + cand_beam[:, :k]).view(-1)
        rows.fin_tokens[sent, slot] = rows.history[src_rows].view(n, k, -1)
        rows.fin_count += fin_mask.sum(1)
        if self.kept:
            self.kept.finalise(slot, cand_beam[:, :k])

        # Continue with the k best non-eos candidates.
        rank = torch.arange(2 * k, device=dev).expand(n, -1)
        pick = torch.where(cand_tok == self.eos, rank + 2 * k, rank)
        pick = pick.topk(k, dim=1, largest=False).indices.sort(dim=1).values
        rows.scores = cand_scores.gather(1, pick)
        next_tok = cand_tok.gather(1, pick)
        parent = cand_beam.gather(1, pick)
        if self.kept:
            self.kept.continued(parent)
        parent = parent + row_base

        best_active = rows.scores.max(dim=1).values
        finals = rows.fin_norm[:, :cap]
        if len(set(self._nbest)) == 1:
            nth_fin = finals.topk(self._nbest[0], dim=1).values[:, -1]
        else:
            nth_fin = finals.sort(dim=1, descending=True).values.gather(
                1, rows.n_best.unsqueeze(1) - 1).squeeze(1)
        if opts.alpha >= 0:
            reachable = best_active / rows.bound
        else:
            reachable = best_active / self._penalty(2)
        done = ((rows.fin_count >= k) | (rows.max_lens <= rows.steps)
                | ~torch.isfinite(best_active) | (nth_fin >= reachable))
        flags = done.tolist()  # the one host sync per step
        finished, kept = self._retire(flags, self._beam_results)
        steps = rows.steps
        if finished and kept:
            keep = torch.tensor(kept, dtype=torch.long, device=dev)
            parent, next_tok, steps = parent[keep], next_tok[keep], steps[keep]
        parent, next_tok = parent.view(-1), next_tok.view(-1)
        rows.state = state.index_select(parent)
        rows.history = rows.history[parent]
        rows.history[torch.arange(parent.numel(), device=dev), steps.repeat_interleave(k)] = \
            next_tok
        rows.prev = next_tok
        self._keep(kept)
        return finished

    def _beam_results(self, done: list[int]) -> list[list[Hypothesis]]:
        """The finished sentences' ``n_best`` hypotheses, best first (beam_search's end)."""
        rows, cap = self._rows, 2 * self.width
        idx = torch.tensor(done, dtype=torch.long, device=self.device)
        n_best = [self._nbest[i] for i in done]
        finals = rows.fin_norm[idx]
        order = finals[:, :cap].argsort(dim=1, descending=True)[:, :max(n_best)]
        top_norm = finals.gather(1, order).tolist()
        top_raw = rows.fin_raw[idx].gather(1, order).tolist()
        top_len = rows.fin_len[idx].gather(1, order).tolist()
        tokens = rows.fin_tokens[idx]
        top_tok = tokens.gather(1, order.unsqueeze(2).expand(-1, -1, tokens.size(2))).tolist()
        slots = order.tolist()
        out = []
        for i, (sent, want) in enumerate(zip(done, n_best, strict=True)):
            live = [j for j in range(want) if math.isfinite(top_norm[i][j])]
            attn = self.kept.beam(sent, [slots[i][j] for j in live],
                                  [top_len[i][j] for j in live])
            hyps = [Hypothesis(top_tok[i][j][:top_len[i][j]], top_norm[i][j], top_raw[i][j], a)
                    for j, a in zip(live, attn, strict=True)]
            # Only when every continuation was banned, as in beam_search.
            out.append(hyps or [Hypothesis([], -math.inf, -math.inf, self.kept.empty(sent))])
        return out


def _widen(x: Tensor, width: int, pad: int) -> Tensor:
    """``x`` with its last dimension padded to ``width`` with ``pad``."""
    if x.size(-1) >= width:
        return x
    return torch.cat([x, x.new_full((*x.shape[:-1], width - x.size(-1)), pad)], dim=-1)


def _block_ngrams(lprobs: Tensor, history: Tensor, steps: Tensor, n: int, pad_id: int) -> None:
    """:func:`~translate.search.ops.block_repeated_ngrams` for rows at their own steps:
    row ``r``'s history is its first ``steps[r]`` tokens, and only n-grams inside them
    count."""
    width = history.size(1)
    if n <= 0 or width < n or int(steps.max()) < n:
        return
    grams = history.unfold(1, n, 1)  # [R, width - n + 1, n]
    start = (steps - (n - 1)).clamp(min=0).unsqueeze(1)
    prefix = history.gather(1, start + torch.arange(n - 1, device=history.device))
    match = (grams[:, :, :-1] == prefix.unsqueeze(1)).all(-1)
    inside = torch.arange(grams.size(1), device=history.device) <= (steps - n).unsqueeze(1)
    banned = torch.where(match & inside, grams[:, :, -1],
                         torch.full_like(grams[:, :, -1], pad_id))
    lprobs.scatter_(1, banned, -math.inf)
