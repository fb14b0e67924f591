"""The full model: embeddings, encoder, attentional decoder, generator, optional tagger and
optional domain conditioning (:mod:`translate.model.conditioning`).

The step API (:meth:`Seq2Seq.encode`, :meth:`Seq2Seq.init_decoder_state`,
:meth:`Seq2Seq.decode_step`) is what search uses; :meth:`Seq2Seq.forward` is teacher forcing
for training. Both run the same math, so a step-by-step decode reproduces ``forward``.
A conditioned model's search adds :meth:`Seq2Seq.condition` between ``encode`` and the rest:
the domain mixture rides in the encoder output into the decoder state, so search code never
sees it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from translate.config import ModelConfig
from translate.masks import lengths_to_mask
from translate.model.conditioning import DomainMixer
from translate.model.decoder import Decoder, DecoderState
from translate.model.encoder import Encoder
from translate.model.tagger import DomainTagger


@dataclass
class ModelOutput:
    logits: Tensor  # [B, T, V]
    domain_logits: Tensor | None  # [B, L], None without a tagger


@dataclass
class EncoderOutput:
    """Everything decoding needs about the source, per sentence along dim 0 (dim 1 for h/c).

    states ``[B, S, 2*enc_hidden]`` (zeros on padding); mask ``[B, S]`` bool (True = real);
    init_h / init_c ``[dec_layers, B, dec_hidden]``; proj_keys: the attention's key
    projection ``[B, S, dec_hidden]`` computed once per sentence (None for dot attention).
    Domain pooling is not stored: it has learned parameters and lives in the tagger
    (:meth:`Seq2Seq.tag`). domain: the domain mixture ``[B, dim]`` set by
    :meth:`Seq2Seq.condition` (None: unconditioned, or unknown on a conditioned model).
    """

    states: Tensor
    mask: Tensor
    init_h: Tensor
    init_c: Tensor
    proj_keys: Tensor | None = None
    domain: Tensor | None = None

    def index_select(self, idx: Tensor) -> EncoderOutput:
        """Repeat / reorder / drop sentences (beam search); idx on the states' device."""
        return EncoderOutput(
            states=self.states.index_select(0, idx),
            mask=self.mask.index_select(0, idx),
            init_h=self.init_h.index_select(1, idx),
            init_c=self.init_c.index_select(1, idx),
            proj_keys=None if self.proj_keys is None else self.proj_keys.index_select(0, idx),
            domain=None if self.domain is None else self.domain.index_select(0, idx),
        )

    @staticmethod
    def cat(parts: list[EncoderOutput], length: int) -> EncoderOutput:
        """Sentences of several outputs as one, their sources padded (with zeros, masked)
        or cut to ``length`` positions: continuous batching
        (:mod:`translate.search.continuous`) joins new sentences to a running batch and
        drops the padding of sentences that left. Cutting takes padding only: ``length``
        must cover every real position."""
        def fit(x: Tensor) -> Tensor:
            if x.size(1) >= length:
                return x[:, :length]
            pad = x.new_zeros((x.size(0), length - x.size(1), *x.shape[2:]))
            return torch.cat([x, pad], dim=1)

        def join(name: str, dim: int = 0, source: bool = False) -> Tensor | None:
            values = [getattr(p, name) for p in parts]
            if values[0] is None:
                return None
            return torch.cat([fit(v) for v in values] if source else values, dim=dim)

        return EncoderOutput(
            states=join("states", source=True), mask=join("mask", source=True),
            init_h=join("init_h", dim=1), init_c=join("init_c", dim=1),
            proj_keys=join("proj_keys", source=True), domain=join("domain"),
        )


class Generator(nn.Module):
    """Output projection h~ → vocabulary logits, optionally tied to the target embedding.

    With tying, an extra bias-free linear maps the decoder size to the embedding size first
    when they differ. ``shift`` (a domain-conditioned model's output shift, broadcastable to
    the query) is added to the query the projection sees.
    """

    def __init__(self, hidden: int, vocab: int, tied: nn.Embedding | None = None) -> None:
        super().__init__()
        out_in = hidden
        self.pre: nn.Module = nn.Identity()
        if tied is not None and tied.embedding_dim != hidden:
            self.pre = nn.Linear(hidden, tied.embedding_dim, bias=False)
            out_in = tied.embedding_dim
        self.proj = nn.Linear(out_in, vocab)
        if tied is not None:
            if tied.num_embeddings != vocab:
                raise ValueError("tie_output needs the target embedding to have vocab rows")
            self.proj.weight = tied.weight

    @property
    def query_dim(self) -> int:
        """Size of the vector :attr:`proj` multiplies (the decoder's or the embedding's)."""
        return self.proj.in_features

    def query(self, hidden: Tensor, shift: Tensor | None = None) -> Tensor:
        """What the output projection multiplies: ``pre(hidden)``, plus ``shift`` if given."""
        q = self.pre(hidden)
        return q if shift is None else q + shift

    def forward(self, hidden: Tensor, shift: Tensor | None = None) -> Tensor:
        return self.proj(self.query(hidden, shift))


class Seq2Seq(nn.Module):
    def __init__(
        self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int, pad_id: int, n_labels: int
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.pad_id = pad_id
        self.src_vocab = src_vocab
        self.tgt_vocab = tgt_vocab
        self.n_labels = n_labels
        self.src_embed = nn.Embedding(src_vocab, cfg.emb_dim, padding_idx=pad_id)
        if cfg.share_embeddings:
            if src_vocab != tgt_vocab:
                raise ValueError(
                    f"model.share_embeddings needs a joint vocabulary, got src_vocab={src_vocab}"
                    f" and tgt_vocab={tgt_vocab}"
                )
            self.tgt_embed = self.src_embed
        else:
            self.tgt_embed = nn.Embedding(tgt_vocab, cfg.emb_dim, padding_idx=pad_id)
        self.encoder = Encoder(
            self.src_embed, cfg.enc_hidden, cfg.enc_layers, cfg.dropout,
            cfg.dec_hidden, cfg.dec_layers, fast_dropout=cfg.fast_dropout,
        )
        cond = cfg.domain_conditioning
        self.decoder = Decoder(
            self.tgt_embed, cfg.dec_hidden, cfg.dec_layers, self.encoder.output_dim,
            cfg.attention, cfg.input_feeding, cfg.dropout,
            fused_rnn=cfg.fused_decoder_rnn, fast_dropout=cfg.fast_dropout,
            domain_dim=cond.dim if cond.enabled else 0,
        )
        self.generator = Generator(
            cfg.dec_hidden, tgt_vocab, self.tgt_embed if cfg.tie_output else None
        )
        self.tagger: DomainTagger | None = None
        if n_labels > 0 and cfg.tagger.enabled:
            self.tagger = DomainTagger(
                self.encoder.output_dim, cfg.tagger.hidden, n_labels, cfg.tagger.pooling,
                cfg.dropout,
            )
        # Registered last: without conditioning, parameters (and their initialisation
        # order) are exactly those of a model from before conditioning existed.
        self.domain_mixer: DomainMixer | None = None
        if cond.enabled:
            if self.tagger is None:
                raise ValueError("domain conditioning needs the tagger and at least one label")
            self.domain_mixer = DomainMixer(
                n_labels, cond.dim, cond.label_dropout,
                out_dim=self.generator.query_dim if cond.output else 0)

    @property
    def conditioned(self) -> bool:
        """Whether the decoder takes a domain mixture (:meth:`condition`)."""
        return self.domain_mixer is not None

    # ------------------------------------------------------------------ training

    def forward(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, src_mask: Tensor | None = None,
        tgt_mask: Tensor | None = None, domains: Tensor | None = None,
    ) -> ModelOutput:
        """Teacher forcing: logits ``[B, T, V]`` and domain logits ``[B, L]`` (or None).

        With ``tgt_mask`` (``[B, T]`` bool, True = real target) the logits are only those of
        the real positions, packed row-major into ``[N, V]`` (N = mask.sum()): the output
        projection — the largest GEMM of a step — then does no work for padding, and the
        loss gets exactly the rows it scores (``tgt_out[tgt_mask]`` are their targets).

        ``domains``: gold multi-hot labels ``[B, L]`` (None: unknown), used by a conditioned
        model only, as normalised mixtures with label dropout in training mode.
        """
        enc = self.encode(src, src_lengths, src_mask)
        if self.domain_mixer is not None:
            enc = self.condition(enc, self.domain_mixer.from_gold(domains, src.size(0),
                                                                  src.device))
        hidden, _ = self.decode(tgt_in, enc)
        shift = self.output_shift(enc.domain)  # [B, Q]: the same for every position
        if shift is not None:
            shift = shift.unsqueeze(1).expand(-1, hidden.size(1), -1)
        if tgt_mask is not None:
            hidden = hidden[tgt_mask]
            shift = None if shift is None else shift[tgt_mask]
        return ModelOutput(logits=self.generator(hidden, shift), domain_logits=self.tag(enc))

    def decode(self, tgt_in: Tensor, enc: EncoderOutput) -> tuple[Tensor, Tensor]:
        """Teacher-forced attentional vectors ``[B, T, dec_hidden]`` and attention ``[B, T, S]``.

        Apply ``self.generator`` to (a subset of) the vectors to get logits.
        """
        state = self.init_decoder_state(enc)
        return self.decoder(tgt_in, state, enc.states, enc.mask, enc.proj_keys)

    # ------------------------------------------------------------------ step API

    def forget_step_cache(self) -> None:
        """Search calls this before each batch: see
        :meth:`translate.model.decoder.Decoder.forget_step_cache`."""
        self.decoder.forget_step_cache()

    def encode(
        self, src: Tensor, src_lengths: Tensor, src_mask: Tensor | None = None
    ) -> EncoderOutput:
        """src ``[B, S]`` (any order, padded with anything), src_lengths ``[B]`` (CPU or not)."""
        states, (h, c) = self.encoder(src, src_lengths)
        mask = src_mask if src_mask is not None else lengths_to_mask(
            src_lengths, src.size(1), src.device
        )
        return EncoderOutput(
            states=states, mask=mask, init_h=h, init_c=c,
            proj_keys=self.decoder.attention.precompute(states),
        )

    def tag(self, enc: EncoderOutput) -> Tensor | None:
        """Domain logits ``[B, L]``; None when the model has no tagger."""
        if self.tagger is None:
            return None
        return self.tagger(enc.states, enc.mask)

    def condition(self, enc: EncoderOutput, weights: Tensor) -> EncoderOutput:
        """``enc`` with the domain mixture of label ``weights [B, L]`` (rows of zeros: unknown
        domain); unchanged for a model without conditioning."""
        if self.domain_mixer is None:
            return enc
        return dataclasses.replace(enc, domain=self.domain_mixer(weights))

    def output_shift(self, domain: Tensor | None) -> Tensor | None:
        """The generator's shift for domain mixtures ``domain [N, dim]`` (None: the model has
        no output conditioning, or the decoder state carries no mixture)."""
        if self.domain_mixer is None:
            return None
        return self.domain_mixer.shift(domain)

    def init_decoder_state(self, enc: EncoderOutput) -> DecoderState:
        return self.decoder.init_state(enc.init_h, enc.init_c, enc.domain)

    def decode_step(
        self, prev_tokens: Tensor, state: DecoderState, enc: EncoderOutput
    ) -> tuple[Tensor, DecoderState, Tensor]:
        """prev_tokens ``[N]`` → (logits ``[N, V]``, new state, attention ``[N, S]``)."""
        vec, state, weights = self.decoder.step(
            prev_tokens, state, enc.states, enc.mask, enc.proj_keys
        )
        return self.generator(vec, self.output_shift(state.domain)), state, weights


def _init_weights(model: Seq2Seq) -> None:
    """Uniform ±0.1 for recurrent/embedding weights, Xavier for linears, zero biases, LSTM
    forget-gate bias 1 (remember by default early in training), zero pad embedding."""
    for module in model.modules():
        if isinstance(module, nn.LSTM):
            for name, p in module.named_parameters():
                if name.startswith("weight"):
                    nn.init.uniform_(p, -0.1, 0.1)
                else:
                    nn.init.zeros_(p)
                    if name.startswith("bias_ih"):
                        h = module.hidden_size
                        p.data[h : 2 * h] = 1.0  # gate order i, f, g, o
        elif isinstance(module, nn.Linear):
            if module.weight is model.tgt_embed.weight:
                continue  # tied: initialised as an embedding
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, DomainMixer):
            module.reset_parameters()
        elif isinstance(module, nn.Embedding):
            nn.init.uniform_(module.weight, -0.1, 0.1)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()


def build_model(
    cfg: ModelConfig, src_vocab: int, tgt_vocab: int, pad_id: int, n_labels: int
) -> Seq2Seq:
    """Construct and initialise a model (no file I/O: sizes and labels come from the caller)."""
    model = Seq2Seq(cfg, src_vocab, tgt_vocab, pad_id, n_labels)
    _init_weights(model)
    return model
