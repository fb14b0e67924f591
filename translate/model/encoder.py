"""Bidirectional LSTM encoder over packed sequences, with a bridge to the decoder state.

Packing means padding never enters the recurrence: a sentence gets the same states alone or
inside a batch of longer ones, and the backward direction starts at its real last token. The
caller does not need to sort the batch (``enforce_sorted=False``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from translate.model.dropout import Dropout


class Encoder(nn.Module):
    """Embeddings → dropout → multi-layer bi-LSTM; bridge from final states to decoder init.

    Bridge: the final (h, c) of each encoder layer, forward and backward concatenated
    ``[2H]``, go through ``tanh(Linear)`` (one for h, one for c, shared over layers) to the
    decoder size. If the layer counts differ, the last encoder layer's states initialise
    every decoder layer (the top layer is the most abstract summary of the source).
    """

    def __init__(
        self,
        embedding: nn.Embedding,
        hidden: int,
        layers: int,
        dropout: float,
        dec_hidden: int,
        dec_layers: int,
        *,
        fast_dropout: bool = True,
    ) -> None:
        super().__init__()
        self.embedding = embedding
        self.hidden = hidden
        self.layers = layers
        self.dec_layers = dec_layers
        self.emb_dropout = Dropout(dropout, fast_dropout)
        self.rnn = nn.LSTM(
            embedding.embedding_dim,
            hidden,
            num_layers=layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.bridge_h = nn.Linear(2 * hidden, dec_hidden)
        self.bridge_c = nn.Linear(2 * hidden, dec_hidden)

    @property
    def output_dim(self) -> int:
        return 2 * self.hidden

    def forward(self, src: Tensor, src_lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """src ``[B, S]``, src_lengths ``[B]`` (any device, all >= 1).

        Returns states ``[B, S, 2H]`` (zeros on padding) and the decoder's initial
        ``(h, c)``, each ``[dec_layers, B, dec_hidden]``.
        """
        lengths = src_lengths.detach().to("cpu", torch.int64)
        if lengths.numel() and int(lengths.min()) < 1:
            raise ValueError("every source sentence needs at least one token (got length 0)")
        emb = self.emb_dropout(self.embedding(src))
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=False)
        out, (h_n, c_n) = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        return states, (self._bridge(h_n, self.bridge_h), self._bridge(c_n, self.bridge_c))

    def _bridge(self, final: Tensor, proj: nn.Linear) -> Tensor:
        # final: [layers * 2, B, H] in (layer, direction) order -> [layers, B, 2H]
        batch = final.size(1)
        final = final.view(self.layers, 2, batch, self.hidden)
        final = torch.cat([final[:, 0], final[:, 1]], dim=-1)
        if self.layers != self.dec_layers:
            final = final[-1:].expand(self.dec_layers, batch, 2 * self.hidden)
        return torch.tanh(proj(final)).contiguous()
