"""Attentional LSTM decoder (Luong) with two teacher-forcing modes.

- input feeding: the previous attentional vector h~ is concatenated to the next input
  embedding, so attention decisions can inform the next step. This forces a Python loop
  over target positions.
- parallel (no input feeding): the LSTM runs over the whole target in one (cuDNN-able) call,
  attention for every step is one batched product, and h~ / the output projection are applied
  to all steps at once — much faster, slightly weaker.

Both modes share the step math in :meth:`Decoder.step`, so step-wise decoding (search)
reproduces teacher-forced training exactly.

The LSTM is one ``nn.LSTM`` whatever runs it, so checkpoints never depend on the path. By
default (``fused_rnn``) the step-wise recurrence runs through a hand-fused cell on that
module's weights (:meth:`Decoder._cell_params`), and input-feeding teacher forcing through
one autograd node (:class:`~translate.model.feed_rnn.FeedRecurrence`). With
``fused_rnn=False`` (config ``model.fused_decoder_rnn: false``) the ``nn.LSTM`` itself is
called one step at a time: the plain reference the tests compare the fused paths against.

With ``domain_dim`` > 0 (domain conditioning) layer 0's input is ``[embedding; domain;
input feed]``; see :class:`Decoder` for why the domain enters there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from translate.model.attention import Attention, AttentionKind
from translate.model.dropout import Dropout, dropout_mask
from translate.model.feed_rnn import FeedRecurrence


@dataclass
class DecoderState:
    """Recurrent state between steps: h, c ``[layers, N, H]``; input_feed ``[N, H]`` or None;
    domain: the sentence's domain mixture ``[N, domain_dim]`` (None without conditioning)."""

    h: Tensor
    c: Tensor
    input_feed: Tensor | None = None
    domain: Tensor | None = None

    def index_select(self, idx: Tensor) -> DecoderState:
        """Pick / repeat / reorder hypotheses (beam search) along the batch dimension."""
        return DecoderState(
            h=self.h.index_select(1, idx),
            c=self.c.index_select(1, idx),
            input_feed=None if self.input_feed is None else self.input_feed.index_select(0, idx),
            domain=None if self.domain is None else self.domain.index_select(0, idx),
        )

    @staticmethod
    def cat(parts: list[DecoderState]) -> DecoderState:
        """Hypotheses of several states as one, in order (continuous batching)."""
        def join(name: str, dim: int) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values, dim=dim)

        return DecoderState(h=join("h", 1), c=join("c", 1), input_feed=join("input_feed", 0),
                            domain=join("domain", 0))


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    """The dtype autocast casts matrix products to on ``device`` now; None when it is off."""
    if not torch.is_autocast_enabled(device.type):
        return None
    return torch.get_autocast_dtype(device.type)


def _cast_params(params: list[tuple[Tensor, Tensor, Tensor | None]],
                 dtype: torch.dtype | None) -> list[tuple[Tensor, Tensor, Tensor | None]]:
    """The step weights in autocast's dtype, cast once instead of by every step's ``addmm``
    (autocast caches casts of parameters only, and these are concatenations of them)."""
    if dtype is None:
        return params
    return [tuple(None if t is None else t.to(dtype) for t in group) for group in params]


class Decoder(nn.Module):
    """Embeddings → LSTM → attention → h~ = tanh(W[c; h]) → dropout.

    Returns attentional vectors h~; the output projection (generator) lives in the model so a
    trainer can project only the non-pad positions.

    Domain conditioning (``domain_dim`` > 0) feeds the sentence's domain mixture to layer 0
    at *every* step, not only into the initial state: an initial-state signal has to survive
    the recurrence and fades over a long output, while an input seen at each step conditions
    every prediction. It costs almost nothing: the mixture is constant over a sentence, so
    in teacher forcing its gate contribution is one ``[B, dim] x [dim, 4H]`` product added to
    the embeddings' (hoisted out of the time loop, fused recurrence included); the zero
    mixture ("unknown domain") adds exactly nothing to the gates.
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        hidden: int,
        layers: int,
        enc_dim: int,
        attention: AttentionKind,
        input_feeding: bool,
        dropout: float,
        *,
        fused_rnn: bool = True,
        fast_dropout: bool = True,
        domain_dim: int = 0,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.hidden = hidden
        self.layers = layers
        self.input_feeding = input_feeding
        self.fused_rnn = fused_rnn
        self.fast_dropout = fast_dropout
        self.domain_dim = domain_dim
        in_dim = embedding.embedding_dim + domain_dim + (hidden if input_feeding else 0)
        self.emb_dropout = Dropout(dropout, fast_dropout)
        self.rnn = nn.LSTM(
            in_dim, hidden, num_layers=layers, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.attention = Attention(attention, hidden, enc_dim)
        self.combine = nn.Linear(enc_dim + hidden, hidden, bias=False)
        self.out_dropout = Dropout(dropout, fast_dropout)
        self._step_cache: tuple[tuple, list] | None = None

    def init_state(self, h: Tensor, c: Tensor, domain: Tensor | None = None) -> DecoderState:
        """``domain [N, domain_dim]``: the mixture; None on a conditioned decoder = unknown."""
        feed = h.new_zeros(h.size(1), self.hidden) if self.input_feeding else None
        if self.domain_dim and domain is None:
            domain = h.new_zeros(h.size(1), self.domain_dim)
        return DecoderState(h=h, c=c, input_feed=feed, domain=domain if self.domain_dim else None)

    @staticmethod
    def _with_domain(x: Tensor, domain: Tensor | None) -> Tensor:
        """``[x; domain]`` along the last dim (domain broadcast over time for ``[B, T, E]``)."""
        if domain is None:
            return x
        if x.dim() == 3:
            domain = domain.unsqueeze(1).expand(-1, x.size(1), -1)
        return torch.cat([x, domain.to(x.dtype)], dim=-1)

    def _attend(
        self, rnn_out: Tensor, keys: Tensor, mask: Tensor, proj_keys: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        context, weights = self.attention(rnn_out, keys, mask, proj_keys)
        att_vec = torch.tanh(self.combine(torch.cat([context, rnn_out], dim=-1)))
        return self.out_dropout(att_vec), weights

    # ------------------------------------------------------------ input-feeding cell

    def _cell_params(self) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """Per layer ``(W_rec, bias, W_emb)`` from the ``nn.LSTM``'s own parameters.

        Without input feeding only the step API uses this (layer 0's ``W_emb`` is then all
        of ``W_ih`` and ``W_rec`` is just ``W_hh``).

        The input-feeding loop runs the LSTM one step at a time; calling ``nn.LSTM`` with
        a length-1 sequence costs two GEMMs + oneDNN set-up per layer and step, forward and
        backward. Instead each layer's gates are one ``addmm`` of ``[x; h]`` against
        ``W_rec = [W_ih | W_hh]`` (concatenated once per batch), and for layer 0 the part of
        ``W_ih`` that multiplies the *embedding* (``W_emb``; with conditioning also the
        domain's columns after it) is applied to all target positions up front in one large
        GEMM — only the input-feed and recurrent parts stay in the loop. Same parameters,
        same math (gate order i, f, g, o; inter-layer dropout on all but the top layer), so
        checkpoints and the step API are unchanged.
        """
        ext = self.embedding.embedding_dim + self.domain_dim  # inputs from outside the loop
        out = []
        for layer in range(self.layers):
            w_ih = getattr(self.rnn, f"weight_ih_l{layer}")
            w_hh = getattr(self.rnn, f"weight_hh_l{layer}")
            bias = getattr(self.rnn, f"bias_ih_l{layer}") + getattr(self.rnn, f"bias_hh_l{layer}")
            if layer == 0:
                w_rec = torch.cat([w_ih[:, ext:], w_hh], 1) if self.input_feeding else w_hh
                out.append((w_rec, bias, w_ih[:, :ext]))
            else:
                out.append((torch.cat([w_ih, w_hh], 1), bias, None))
        return out

    def forget_step_cache(self) -> None:
        """Drop the step weights cached by :meth:`_step_params` (they are rebuilt on the next
        step): the weights may have changed in ways the cache key cannot see."""
        self._step_cache = None

    def _step_params(self) -> list[tuple[Tensor, Tensor, Tensor | None]]:
        """:meth:`_cell_params`, cached between steps when no gradient is recorded.

        Search calls :meth:`step` once per target position; re-concatenating the weights
        each time copied every recurrent weight matrix per step. The cache key is every LSTM
        parameter's storage and version counter, so ``load_state_dict``, a device move or an
        ordinary in-place update invalidates it -- but not every optimiser step: fused
        AdamW (what the trainer runs) writes the parameters without bumping their version
        counters. So search also calls :meth:`forget_step_cache` before each batch
        (:class:`translate.search.beam.EvalMode`); without that, validation during training
        decoded with the recurrent weights of the first validation (under bf16 autocast,
        where every cached weight is a copy: the in-training BLEU fell while the loss fell).
        """
        if torch.is_grad_enabled():
            return self._cell_params()
        dtype = _autocast_dtype(self.rnn.weight_hh_l0.device)
        key = (dtype, *((p.data_ptr(), p._version) for p in self.rnn.parameters()))
        if self._step_cache is None or self._step_cache[0] != key:
            self._step_cache = (key, _cast_params(self._cell_params(), dtype))
        return self._step_cache[1]

    def _fusable(self, keys: Tensor) -> bool:
        """Whether teacher forcing can use :class:`FeedRecurrence` (fp32, Luong scores).

        Not under bf16/fp16 autocast: its buffers and ``out=`` products are fp32, and with
        native bf16 the plain loop's bf16 products beat running the fused loop in fp32
        inside autocast (interleaved on an avx512_bf16 CPU; docs/performance.md)."""
        return (
            self.attention.kind in ("dot", "general")
            and keys.dtype == torch.float32
            and not torch.is_autocast_enabled(keys.device.type)
        )

    def _dropout_mask(self, p: float, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
        """Scaled inverted-dropout mask (one RNG call for all steps), None when inactive."""
        if not self.training or p == 0.0:
            return None
        return dropout_mask(shape, p, like, fast=self.fast_dropout)

    def _fused_forward(
        self, pre0: Tensor, state: DecoderState, keys: Tensor, mask: Tensor,
        proj_keys: Tensor | None, params: list[tuple[Tensor, Tensor, Tensor | None]],
    ) -> tuple[Tensor, Tensor]:
        steps, batch = pre0.shape[:2]
        mid = None
        if self.layers > 1:
            mid = self._dropout_mask(
                self.rnn.dropout, (self.layers - 1, steps, batch, self.hidden), pre0
            )
        out = self._dropout_mask(self.out_dropout.p, (steps, batch, self.hidden), pre0)
        if self.attention.kind == "dot":
            score_keys = keys
        else:
            score_keys = proj_keys if proj_keys is not None else self.attention.precompute(keys)
        weights = [w for w, _, _ in params] + [b for _, b, _ in params[1:]]
        return FeedRecurrence.apply(
            pre0, state.h, state.c, state.input_feed, score_keys, keys, ~mask,
            self.combine.weight, mid, out, *weights,
        )

    @staticmethod
    def _lstm_cell(gates: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c

    def _feed_step(
        self,
        pre0: Tensor,
        feed: Tensor | None,
        hs: list[Tensor],
        cs: list[Tensor],
        params: list[tuple[Tensor, Tensor, Tensor | None]],
    ) -> Tensor:
        """One LSTM step; ``pre0`` = embedding part of layer 0's gates (+ bias); ``feed``
        the input feed (None without input feeding: layer 0 then sees only its ``h``).

        Updates ``hs`` / ``cs`` (lists of ``[N, H]``) in place; returns the top layer's output.
        """
        x = feed
        for layer, (w_rec, bias, _) in enumerate(params):
            inp = hs[layer] if x is None else torch.cat([x, hs[layer]], dim=-1)
            base = pre0 if layer == 0 else bias
            gates = torch.addmm(base, inp, w_rec.t())
            hs[layer], cs[layer] = self._lstm_cell(gates, cs[layer])
            x = hs[layer]
            if layer < self.layers - 1 and self.rnn.dropout > 0:
                x = nn.functional.dropout(x, self.rnn.dropout, self.training)
        return x

    # ------------------------------------------------------------------ API

    def step(
        self,
        prev_tokens: Tensor,
        state: DecoderState,
        keys: Tensor,
        mask: Tensor,
        proj_keys: Tensor | None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One step: prev_tokens ``[N]`` → (h~ ``[N, H]``, new state, attention ``[N, S]``)."""
        x = self._with_domain(self.emb_dropout(self.embedding(prev_tokens)), state.domain)
        # Plain path, or an LSTM replacement (e.g. dynamically quantized) with its own kernels.
        if not self.fused_rnn or not isinstance(self.rnn, nn.LSTM):
            return self._module_step(x, state, keys, mask, proj_keys)
        params = self._step_params()
        hs, cs = list(state.h.unbind(0)), list(state.c.unbind(0))
        pre0 = torch.addmm(params[0][1], x, params[0][2].t())
        out = self._feed_step(pre0, state.input_feed, hs, cs, params)
        att_vec, weights = self._attend(out, keys, mask, proj_keys)
        feed = att_vec if self.input_feeding else None
        new = DecoderState(torch.stack(hs), torch.stack(cs), feed, state.domain)
        return att_vec, new, weights

    def _module_step(
        self, x: Tensor, state: DecoderState, keys: Tensor, mask: Tensor,
        proj_keys: Tensor | None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """:meth:`step` through ``self.rnn`` itself (input ``[x; input feed]``, ``x`` the
        embedding with the domain already appended): the
        plain path, and the one for LSTM replacements without the float parameters
        :meth:`_cell_params` reads."""
        if self.input_feeding:
            x = torch.cat([x, state.input_feed], dim=-1)
        out, (h, c) = self.rnn(x.unsqueeze(1), (state.h, state.c))
        att_vec, weights = self._attend(out.squeeze(1), keys, mask, proj_keys)
        feed = att_vec if self.input_feeding else None
        return att_vec, DecoderState(h=h, c=c, input_feed=feed, domain=state.domain), weights

    def forward(
        self,
        tgt_in: Tensor,
        state: DecoderState,
        keys: Tensor,
        mask: Tensor,
        proj_keys: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing over ``tgt_in [B, T]`` → (h~ ``[B, T, H]``, attention ``[B, T, S]``).

        Target padding needs no mask: the decoder is causal, so padded positions never affect
        real ones, and the loss ignores them.
        """
        emb = self.emb_dropout(self.embedding(tgt_in))  # [B, T, E]
        if not self.input_feeding:
            out, _ = self.rnn(self._with_domain(emb, state.domain), (state.h, state.c))
            return self._attend(out, keys, mask, proj_keys)
        if tgt_in.size(1) == 0:
            b, s = tgt_in.size(0), keys.size(1)
            return keys.new_zeros(b, 0, self.hidden), keys.new_zeros(b, 0, s)
        if not self.fused_rnn:
            return self._plain_forward(emb, state, keys, mask, proj_keys)
        params = self._cell_params()
        # Embedding part of layer 0's gates for every step at once, time-major so that each
        # step's slice is contiguous: [T, B, 4H]; the domain's part once per sentence.
        w_in, emb_dim = params[0][2], emb.size(-1)
        pre0 = nn.functional.linear(emb.transpose(0, 1), w_in[:, :emb_dim], params[0][1])
        if state.domain is not None:
            pre0 = pre0 + nn.functional.linear(state.domain, w_in[:, emb_dim:]).unsqueeze(0)
        if self._fusable(keys):
            return self._fused_forward(pre0, state, keys, mask, proj_keys, params)
        # Under autocast: cast the weights once per batch, not in every step's addmm.
        params = _cast_params(params, _autocast_dtype(pre0.device))
        hs, cs = list(state.h.unbind(0)), list(state.c.unbind(0))
        feed = state.input_feed
        vecs, attns = [], []
        for t in range(tgt_in.size(1)):
            out = self._feed_step(pre0[t], feed, hs, cs, params)
            feed, weights = self._attend(out, keys, mask, proj_keys)
            vecs.append(feed)
            attns.append(weights)
        return torch.stack(vecs, dim=1), torch.stack(attns, dim=1)

    def _plain_forward(
        self, emb: Tensor, state: DecoderState, keys: Tensor, mask: Tensor,
        proj_keys: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """Input-feeding teacher forcing as the textbook loop: :meth:`_module_step` (the
        ``nn.LSTM`` on ``[embedding; previous h~]``, then attention) once per position."""
        vecs, attns = [], []
        for t in range(emb.size(1)):
            x = self._with_domain(emb[:, t], state.domain)
            vec, state, weights = self._module_step(x, state, keys, mask, proj_keys)
            vecs.append(vec)
            attns.append(weights)
        return torch.stack(vecs, dim=1), torch.stack(attns, dim=1)
