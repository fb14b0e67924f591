"""Attentional LSTM decoder (Luong) with two teacher-forcing modes.

- input feeding: the previous attentional vector h~ is concatenated to the next input
  embedding, so attention decisions can inform the next step. This forces a Python loop
  over target positions.
- parallel (no input feeding): the LSTM runs over the whole target in one (cuDNN-able) call,
  attention for every step is one batched product, and h~ / the output projection are applied
  to all steps at once — much faster, slightly weaker.

Both modes share the step math in :meth:`Decoder.step`, so step-wise decoding (search)
reproduces teacher-forced training exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from translate.model.attention import Attention, AttentionKind


@dataclass
class DecoderState:
    """Recurrent state between steps: h, c ``[layers, N, H]``; input_feed ``[N, H]`` or None."""

    h: Tensor
    c: Tensor
    input_feed: Tensor | None = None

    def index_select(self, idx: Tensor) -> DecoderState:
        """Pick / repeat / reorder hypotheses (beam search) along the batch dimension."""
        return DecoderState(
            h=self.h.index_select(1, idx),
            c=self.c.index_select(1, idx),
            input_feed=None if self.input_feed is None else self.input_feed.index_select(0, idx),
        )


class Decoder(nn.Module):
    """Embeddings → LSTM → attention → h~ = tanh(W[c; h]) → dropout.

    Returns attentional vectors h~; the output projection (generator) lives in the model so a
    trainer can project only the non-pad positions.
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
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.hidden = hidden
        self.layers = layers
        self.input_feeding = input_feeding
        in_dim = embedding.embedding_dim + (hidden if input_feeding else 0)
        self.emb_dropout = nn.Dropout(dropout)
        self.rnn = nn.LSTM(
            in_dim, hidden, num_layers=layers, batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.attention = Attention(attention, hidden, enc_dim)
        self.combine = nn.Linear(enc_dim + hidden, hidden, bias=False)
        self.out_dropout = nn.Dropout(dropout)

    def init_state(self, h: Tensor, c: Tensor) -> DecoderState:
        feed = h.new_zeros(h.size(1), self.hidden) if self.input_feeding else None
        return DecoderState(h=h, c=c, input_feed=feed)

    def _attend(
        self, rnn_out: Tensor, keys: Tensor, mask: Tensor, proj_keys: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        context, weights = self.attention(rnn_out, keys, mask, proj_keys)
        att_vec = torch.tanh(self.combine(torch.cat([context, rnn_out], dim=-1)))
        return self.out_dropout(att_vec), weights

    def step(
        self,
        prev_tokens: Tensor,
        state: DecoderState,
        keys: Tensor,
        mask: Tensor,
        proj_keys: Tensor | None,
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """One step: prev_tokens ``[N]`` → (h~ ``[N, H]``, new state, attention ``[N, S]``)."""
        x = self.emb_dropout(self.embedding(prev_tokens))  # [N, E]
        if self.input_feeding:
            x = torch.cat([x, state.input_feed], dim=-1)
        out, (h, c) = self.rnn(x.unsqueeze(1), (state.h, state.c))
        att_vec, weights = self._attend(out.squeeze(1), keys, mask, proj_keys)
        feed = att_vec if self.input_feeding else None
        return att_vec, DecoderState(h=h, c=c, input_feed=feed), weights

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
        if not self.input_feeding:
            emb = self.emb_dropout(self.embedding(tgt_in))
            out, _ = self.rnn(emb, (state.h, state.c))
            return self._attend(out, keys, mask, proj_keys)
        vecs, attns = [], []
        for t in range(tgt_in.size(1)):
            vec, state, weights = self.step(tgt_in[:, t], state, keys, mask, proj_keys)
            vecs.append(vec)
            attns.append(weights)
        if not vecs:  # T == 0
            b, s = tgt_in.size(0), keys.size(1)
            return keys.new_zeros(b, 0, self.hidden), keys.new_zeros(b, 0, s)
        return torch.stack(vecs, dim=1), torch.stack(attns, dim=1)
