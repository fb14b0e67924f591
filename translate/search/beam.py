"""Greedy and beam search over a Seq2Seq, batched over sentences and beams.

Both searches talk to the model only through ``encode``, ``init_decoder_state``, ``decode_step``
and the ``index_select`` methods of the encoder output and decoder state, so they work for both
decoder modes (input feeding or not) and on any device.

Design points (each one fixes a known failure of naive decoders):

* Finished sentences are *removed* from the active batch (encoder output and decoder state are
  ``index_select``-ed down to the unfinished rows). Keeping them around wastes compute, and a
  decoder that keeps feeding finished rows is a classic source of batch-size-dependent output.
* Pad and bos are never generated: their log-probs are set to ``-inf`` every step.
* The maximum length ``int(max_len_a * src_len + max_len_b)`` is per sentence and counts output
  tokens without eos. At that step eos is *forced* (with its real log-prob), so every hypothesis
  is scored including its end-of-sentence probability. The maximum wins over ``min_len``.
* Lengths used for the GNMT penalty ``((5 + len) / 6) ** alpha`` count the eos token.
* Beam search finalises an eos candidate only if it ranks within the top ``beam_size`` of the
  ``2 * beam_size`` candidates (as fairseq does) and a sentence stops once it holds
  ``beam_size`` finished hypotheses, so beam 1 is exactly greedy decoding. It also stops early
  when its ``n_best``-th finished score beats the best score any active beam could still reach
  under the length penalty (log-probs only decrease, so that bound is exact).
* Per step there is one host/device synchronisation (deciding which sentences are done); all
  bookkeeping of finished hypotheses lives in device tensors and is read back once at the end.
* Attention (``attention=True`` only; the default search keeps none): greedy writes each
  step's weights into its sentence's row; beam search keeps every step's weights and the
  back-pointers (which row of the previous step each row continues) and, at the end, walks
  each chosen hypothesis back from the row that produced its eos, so a hypothesis gets the
  attention of its own history, never that of the beam that later took its slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from translate.search.ops import (
    backtrack_attention,
    block_repeated_ngrams,
    hypothesis_attention,
    row_topk,
)

__all__ = ["Hypothesis", "beam_search", "greedy_search", "length_penalty"]


@dataclass
class Hypothesis:
    """One output sequence.

    ``tokens`` has no bos/eos; ``score`` is the length-normalised log-prob used for ranking;
    ``log_prob`` is the raw sum of token log-probs (including the eos token).
    ``attention`` (only when the search was asked for it): float32 on the CPU,
    ``[len(tokens) + 1, src_len]``: row ``t`` is the attention over the source pieces (no
    padding; the source has no eos) when output ``t`` was chosen, the last row the step that
    chose eos. Each row sums to 1.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attention: Tensor | None = None


def length_penalty(length: int | float | Tensor, alpha: float) -> float | Tensor:
    """GNMT length penalty ``((5 + length) / 6) ** alpha`` (Wu et al. 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def _max_lengths(src_lengths: Tensor, max_len_a: float, max_len_b: float) -> list[int]:
    # Plain Python floats so the rounding is identical on every device and batch split.
    return [max(0, int(max_len_a * n + max_len_b)) for n in src_lengths.tolist()]


def _mask_specials(lprobs: Tensor, *, bos_id: int, pad_id: int) -> None:
    lprobs[:, pad_id] = -math.inf
    lprobs[:, bos_id] = -math.inf


def _apply_length_rules(
    lprobs: Tensor, step: int, max_lens: Tensor | None, *, eos_id: int, min_len: int
) -> None:
    """Block eos before ``min_len``; force eos (keeping its real log-prob) at the max length.

    ``max_lens`` is per row of ``lprobs`` (already expanded over beams), or None when the
    caller knows (from its host-side copy of the limits) that no row reaches its maximum at
    this step: forcing rewrites the whole ``[N, V]`` matrix, so it only runs when needed.
    """
    if max_lens is None:
        if step < min_len:
            lprobs[:, eos_id] = -math.inf
        return
    eos_lp = lprobs[:, eos_id].clone()
    if step < min_len:
        lprobs[:, eos_id] = -math.inf
    forced = (max_lens <= step).unsqueeze(1)  # [N, 1]
    lprobs.masked_fill_(forced, -math.inf)
    lprobs[:, eos_id] = torch.where(forced.squeeze(1), eos_lp, lprobs[:, eos_id])


def _start(model: nn.Module, src: Tensor, src_lengths: Tensor, enc, max_len_a: float,
           max_len_b: float) -> tuple[object, object, list[int], int]:
    """Encoder output (computed unless given), initial decoder state and length limits."""
    max_lens = _max_lengths(src_lengths, max_len_a, max_len_b)
    if enc is None:
        enc = model.encode(src, src_lengths)
    return enc, model.init_decoder_state(enc), max_lens, max(max_lens) + 1


def _log_probs(model: nn.Module, prev: Tensor, state, enc,
               attn_out: list[Tensor] | None = None) -> tuple[Tensor, object]:
    """Float32 log-probs ``[N, V]`` of the next token and the new decoder state.

    ``attn_out``: when given, the step's attention ``[N, S]`` (float32) is appended to it
    (the model computes it anyway; search keeps it only when asked).

    On CPU the log-softmax overwrites the logits (a fresh tensor from the generator): no
    second ``[N, V]`` matrix, and the fastest way to normalise there (faster than into a new
    tensor or any ``logsumexp`` formulation; docs/benchmarks.md). The row kernel reads each
    element before writing it, so the result is bit-identical to the out-of-place one (a test
    checks that); other devices keep the out-of-place call.
    """
    logits, state, weights = model.decode_step(prev, state, enc)
    if attn_out is not None:
        attn_out.append(weights.float())
    logits = logits.float()
    if logits.device.type == "cpu":
        return torch.log_softmax(logits, dim=-1, out=logits), state
    return torch.log_softmax(logits, dim=-1), state


class EvalMode:
    """Run the search with dropout off, restoring the caller's train/eval mode afterwards,
    and with fresh per-step weights: a decoder's cached step weights may predate an optimiser
    update it could not detect (:meth:`translate.model.decoder.Decoder.forget_step_cache`)."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.was_training = model, model.training

    def __enter__(self) -> None:
        self.model.eval()
        forget = getattr(self.model, "forget_step_cache", None)  # a Seq2Seq or a wrapper
        if forget is not None:
            forget()

    def __exit__(self, *exc) -> None:
        self.model.train(self.was_training)


# --------------------------------------------------------------------------- greedy


def greedy_search(
    model: nn.Module, src: Tensor, src_lengths: Tensor, *, bos_id: int, eos_id: int,
    pad_id: int, max_len_a: float, max_len_b: float, min_len: int = 1, alpha: float = 0.6,
    enc=None, attention: bool = False,
) -> list[list[Hypothesis]]:
    """Greedy decoding; returns one :class:`Hypothesis` per sentence (as a 1-element list).

    ``score`` is normalised with the same GNMT penalty as beam search (``alpha`` defaults to
    InferenceConfig's 0.6) so greedy and beam scores are comparable; ``alpha`` does not
    change the tokens. ``enc``: the batch's encoder output when the caller already has it
    (e.g. to tag domains too), so the encoder does not run twice. ``attention``: fill
    :attr:`Hypothesis.attention`.
    """
    with torch.inference_mode(), EvalMode(model):
        device = src.device
        batch = src.size(0)
        if batch == 0:
            return []
        enc, state, max_lens_list, n_steps = _start(model, src, src_lengths, enc, max_len_a,
                                                    max_len_b)

        out_tokens = torch.full((batch, n_steps), pad_id, dtype=torch.long, device=device)
        out_lp = torch.zeros(batch, dtype=torch.float32, device=device)
        out_len = torch.zeros(batch, dtype=torch.long, device=device)  # tokens without eos
        out_attn = (torch.zeros((batch, n_steps, src.size(1)), dtype=torch.float32,
                                device=device) if attention else None)
        step_attn: list[Tensor] | None = [] if attention else None

        active = torch.arange(batch, device=device)  # original sentence index of each row
        max_lens = torch.tensor(max_lens_list, dtype=torch.long, device=device)
        limits = list(max_lens_list)  # host copy of max_lens: which steps can force eos
        prev = torch.full((batch,), bos_id, dtype=torch.long, device=device)
        running_lp = torch.zeros(batch, dtype=torch.float32, device=device)

        for step in range(n_steps):
            lprobs, state = _log_probs(model, prev, state, enc, step_attn)
            if out_attn is not None:
                out_attn[active, step] = step_attn.pop()
            _mask_specials(lprobs, bos_id=bos_id, pad_id=pad_id)
            forcing = max_lens if step >= min(limits) else None
            _apply_length_rules(lprobs, step, forcing, eos_id=eos_id, min_len=min_len)
            best_lp, nxt = row_topk(lprobs, 1)  # same op as beam search's first stage
            best_lp, nxt = best_lp.squeeze(1), nxt.squeeze(1)
            running_lp = running_lp + best_lp
            out_tokens[active, step] = nxt
            done = nxt == eos_id
            flags = done.tolist()  # the one host sync per step
            if not any(flags):
                prev = nxt
                continue
            out_lp[active[done]] = running_lp[done]
            out_len[active[done]] = step
            kept = [i for i, finished in enumerate(flags) if not finished]
            if not kept:
                break
            limits = [limits[i] for i in kept]
            keep = torch.tensor(kept, dtype=torch.long, device=device)
            active, max_lens = active[keep], max_lens[keep]
            running_lp, prev = running_lp[keep], nxt[keep]
            enc = enc.index_select(keep)
            state = state.index_select(keep)

        tokens, lps, lens = out_tokens.tolist(), out_lp.tolist(), out_len.tolist()
        attn = None if out_attn is None else out_attn.cpu()
    src_lens = src_lengths.tolist()
    return [
        [Hypothesis(tokens[i][: lens[i]], lps[i] / length_penalty(lens[i] + 1, alpha), lps[i],
                    None if attn is None else
                    hypothesis_attention(attn, i, lens[i] + 1, src_lens[i]))]
        for i in range(batch)
    ]


# --------------------------------------------------------------------------- beam


def beam_search(
    model: nn.Module, src: Tensor, src_lengths: Tensor, *, beam_size: int, n_best: int,
    alpha: float, max_len_a: float, max_len_b: float, min_len: int, no_repeat_ngram: int,
    bos_id: int, eos_id: int, pad_id: int, enc=None, attention: bool = False,
) -> list[list[Hypothesis]]:
    """Beam search; per sentence up to ``n_best`` hypotheses, best (highest score) first.

    ``no_repeat_ngram`` is the n-gram size that may not occur twice in an output (0 = off);
    ``enc`` and ``attention`` as in :func:`greedy_search`.
    """
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"n_best must be between 1 and beam_size={beam_size}, got {n_best}")
    k = beam_size
    with torch.inference_mode(), EvalMode(model):
        device = src.device
        batch = src.size(0)
        if batch == 0:
            return []
        enc, state, max_lens_list, n_steps = _start(model, src, src_lengths, enc, max_len_a,
                                                    max_len_b)
        # Finished hypotheses, kept on the device. A sentence stops once it has k of them, and
        # one step adds at most k, so 2k slots suffice; slot 2k is a write-only trash slot.
        cap = 2 * k
        fin_tokens = torch.full((batch, cap + 1, n_steps), pad_id, dtype=torch.long, device=device)
        fin_norm = torch.full((batch, cap + 1), -math.inf, dtype=torch.float32, device=device)
        fin_raw = torch.full((batch, cap + 1), -math.inf, dtype=torch.float32, device=device)
        fin_len = torch.zeros((batch, cap + 1), dtype=torch.long, device=device)
        fin_count = torch.zeros(batch, dtype=torch.long, device=device)
        # With attention: per step the weights of its rows, and its rows' back-pointers.
        step_attn: list[Tensor] | None = [] if attention else None
        if attention:
            parents: list[Tensor] = []
            fin_row = torch.zeros((batch, cap + 1), dtype=torch.long, device=device)

        sent = torch.arange(batch, device=device)  # original index of each active sentence
        max_lens = torch.tensor(max_lens_list, dtype=torch.long, device=device)
        limits = list(max_lens_list)  # host copy of max_lens: which steps can force eos
        # The first step runs on one row per sentence (its only live beam, bos) and picks the
        # k beams from it; the model batch then holds ``width = k`` rows per sentence. The
        # encoder output keeps one row per sentence throughout: attention groups a sentence's
        # consecutive beam rows over its keys, so they are never copied k times.
        width = 1
        scores = torch.zeros((batch, 1), dtype=torch.float32, device=device)
        history = torch.empty((batch, 0), dtype=torch.long, device=device)
        prev = torch.full((batch,), bos_id, dtype=torch.long, device=device)
        if alpha >= 0:
            bound_lp = length_penalty(max_lens.float() + 1.0, alpha)  # longest is most lenient

        for step in range(n_steps):
            n_act = sent.size(0)
            lprobs, state = _log_probs(model, prev, state, enc, step_attn)
            _mask_specials(lprobs, bos_id=bos_id, pad_id=pad_id)
            forcing = max_lens.repeat_interleave(width) if step >= min(limits) else None
            _apply_length_rules(lprobs, step, forcing, eos_id=eos_id, min_len=min_len)
            if no_repeat_ngram > 0:
                block_repeated_ngrams(lprobs, history, no_repeat_ngram, pad_id)

            # Two stages: the best 2k tokens of each beam by log-prob alone, then a *stable*
            # sort of the k * 2k sums. The overall top 2k is always among them, and within a
            # beam the order is decided before the float addition to the (large, negative)
            # beam score can round near-ties together, so beam 1 picks exactly what greedy's
            # topk picks. It also sorts k * 2k values instead of k * V.
            per_beam = min(2 * k, lprobs.size(1))
            tok_lp, tok_idx = row_topk(lprobs, per_beam)  # [n_act * width, per_beam]
            if width * per_beam < 2 * k:
                # First step with a vocabulary smaller than 2k: pad with dead (-inf)
                # candidates, the ones k - 1 dead copies of the start beam would offer.
                copies = -(-2 * k // per_beam)
                tok_idx = tok_idx.repeat(1, copies)
                tok_lp = torch.cat([tok_lp, tok_lp.new_full(
                    (tok_lp.size(0), (copies - 1) * per_beam), -math.inf)], dim=1)
            row_cands = tok_lp.size(1)
            sums = (scores.view(-1, 1) + tok_lp).view(n_act, width * row_cands)
            sums, order = sums.sort(dim=1, descending=True, stable=True)
            cand_scores, order = sums[:, : 2 * k], order[:, : 2 * k]
            cand_beam = order // row_cands
            cand_tok = tok_idx.view(n_act, width * row_cands).gather(1, order)
            row_base = torch.arange(n_act, device=device).unsqueeze(1) * width
            is_eos = (cand_tok == eos_id) & torch.isfinite(cand_scores)

            # Finalise eos candidates that rank within the top k.
            fin_mask = is_eos[:, :k]
            slot = fin_count[sent].unsqueeze(1) + fin_mask.long().cumsum(1) - 1
            slot = torch.where(fin_mask, slot.clamp(max=cap - 1), torch.full_like(slot, cap))
            rows = sent.unsqueeze(1).expand(-1, k)
            fin_norm[rows, slot] = cand_scores[:, :k] / length_penalty(step + 1, alpha)
            fin_raw[rows, slot] = cand_scores[:, :k]
            fin_len[rows, slot] = step
            if attention:
                fin_row[rows, slot] = row_base + cand_beam[:, :k]
            if step > 0:
                src_rows = row_base + cand_beam[:, :k]
                fin_tokens[rows, slot, :step] = history[src_rows.view(-1)].view(n_act, k, step)
            fin_count[sent] += fin_mask.sum(1)

            # Continue with the k best non-eos candidates (each beam has at most one eos
            # candidate, so at least k of the 2k are not eos).
            rank = torch.arange(2 * k, device=device).expand(n_act, -1)
            order = torch.where(cand_tok == eos_id, rank + 2 * k, rank)
            pick = order.topk(k, dim=1, largest=False).indices.sort(dim=1).values
            scores = cand_scores.gather(1, pick)
            next_tok = cand_tok.gather(1, pick)
            parent = cand_beam.gather(1, pick) + row_base

            # Which sentences are done: k finished, max length reached, no live beam, or the
            # n_best-th finished score already beats anything an active beam can still reach.
            best_active = scores.max(dim=1).values
            nth_fin = fin_norm[sent, :cap].topk(n_best, dim=1).values[:, -1]
            if alpha >= 0:
                reachable = best_active / bound_lp
            else:
                reachable = best_active / length_penalty(step + 2, alpha)
            done = (
                (fin_count[sent] >= k)
                | (max_lens <= step)
                | ~torch.isfinite(best_active)
                | (nth_fin >= reachable)
            )
            flags = done.tolist()  # the one host sync per step
            if any(flags):
                kept = [i for i, finished in enumerate(flags) if not finished]
                if not kept:
                    break
                limits = [limits[i] for i in kept]
                keep = torch.tensor(kept, dtype=torch.long, device=device)
                sent, max_lens, scores = sent[keep], max_lens[keep], scores[keep]
                next_tok, parent = next_tok[keep], parent[keep]
                if alpha >= 0:
                    bound_lp = bound_lp[keep]
                enc = enc.index_select(keep)  # one row per sentence: beams share its keys
            width = k
            parent = parent.view(-1)
            if attention:
                parents.append(parent)
            state = state.index_select(parent)
            history = torch.cat([history[parent], next_tok.view(-1, 1)], dim=1)
            prev = next_tok.view(-1)

        order = fin_norm[:, :cap].argsort(dim=1, descending=True)[:, :n_best]
        top_norm = fin_norm.gather(1, order).tolist()
        top_raw = fin_raw.gather(1, order).tolist()
        top_len = fin_len.gather(1, order).tolist()
        top_tok = fin_tokens.gather(1, order.unsqueeze(2).expand(-1, -1, n_steps)).tolist()
        attn = None
        if attention:
            attn = backtrack_attention(step_attn, parents, fin_row.gather(1, order).view(-1),
                              fin_len.gather(1, order).view(-1)).cpu()
    src_lens = src_lengths.tolist()

    results: list[list[Hypothesis]] = []
    for i in range(batch):
        hyps = [
            Hypothesis(top_tok[i][j][: top_len[i][j]], top_norm[i][j], top_raw[i][j],
                       None if attn is None else
                       hypothesis_attention(attn, i * n_best + j, top_len[i][j] + 1, src_lens[i]))
            for j in range(n_best)
            if math.isfinite(top_norm[i][j])
        ]
        # Only reachable when every continuation was banned (e.g. n-gram blocking on a tiny
        # vocabulary): return an empty output rather than nothing.
        empty = None if attn is None else torch.zeros(0, src_lens[i])
        results.append(hyps or [Hypothesis([], -math.inf, -math.inf, empty)])
    return results

