"""Model semantics: padding invariance, packed == unpacked, step API == forward, learning."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from translate.config import ModelConfig, TaggerConfig
from translate.model import DecoderState, EncoderOutput, ModelOutput, Seq2Seq, build_model
from translate.model.attention import Attention
from translate.training.loss import TranslationLoss, domain_loss

PAD, BOS, EOS = 3, 1, 2  # UNK = 0 is a real token and appears in the inputs below
VOCAB, LABELS = 23, 4
ATTENTIONS = ["dot", "general", "mlp"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def small_cfg(**kw) -> ModelConfig:
    base = dict(
        emb_dim=16, enc_hidden=12, enc_layers=2, dec_hidden=24, dec_layers=2, dropout=0.3,
        attention="general", input_feeding=True,
        tagger=TaggerConfig(enabled=True, pooling="mean", hidden=10),
    )
    base.update(kw)
    return ModelConfig(**base)


def make_model(seed: int = 0, n_labels: int = LABELS, **kw) -> Seq2Seq:
    torch.manual_seed(seed)
    return build_model(small_cfg(**kw), VOCAB, VOCAB, PAD, n_labels).eval()


def sentences(seed: int, lengths: list[int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        s = torch.randint(4, VOCAB, (n,), generator=g)
        s[0] = 0  # unk: must be treated as a real token, never as padding
        out.append(s)
    return out


def pad(seqs: list[torch.Tensor], value: int = PAD) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    batch = torch.full((len(seqs), int(lengths.max())), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        batch[i, : len(s)] = s
    return batch, lengths


def teacher_forcing(tgts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    tgt_in, _ = pad([torch.cat([torch.tensor([BOS]), t]) for t in tgts])
    tgt_out, _ = pad([torch.cat([t, torch.tensor([EOS])]) for t in tgts])
    return tgt_in, tgt_out


# ---------------------------------------------------------------------------- padding


@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_padding_never_changes_a_sentence(attention: str, input_feeding: bool) -> None:
    pooling = "attention" if input_feeding else "mean"
    model = make_model(
        attention=attention, input_feeding=input_feeding,
        tagger=TaggerConfig(enabled=True, pooling=pooling, hidden=10),
    )
    src_lens, tgt_lens = [2, 7, 4, 5], [5, 1, 8, 3]
    srcs, tgts = sentences(1, src_lens), sentences(2, tgt_lens)
    # Pad the source with a real token id: masks must come from lengths, not from ids.
    src, lengths = pad(srcs, value=5)
    tgt_in, tgt_out = teacher_forcing(tgts)
    loss_fn = TranslationLoss(PAD, label_smoothing=0.1)
    with torch.no_grad():
        enc = model.encode(src, lengths)
        hidden, attn = model.decode(tgt_in, enc)
        out = model(src, lengths, tgt_in)
        batch_loss = loss_fn(out.logits, tgt_out).loss
        alone_losses = []
        for i, (s, t) in enumerate(zip(srcs, tgts, strict=True)):
            n, m = len(s), len(t) + 1
            a_src, a_len = s.unsqueeze(0), torch.tensor([n])
            a_in, a_out = teacher_forcing([t])
            a_enc = model.encode(a_src, a_len)
            _, a_attn = model.decode(a_in, a_enc)
            a = model(a_src, a_len, a_in)
            alone_losses.append(loss_fn(a.logits, a_out).loss)

            torch.testing.assert_close(enc.states[i, :n], a_enc.states[0], atol=1e-5, rtol=0)
            assert torch.all(enc.states[i, n:] == 0)
            torch.testing.assert_close(enc.init_h[:, i], a_enc.init_h[:, 0], atol=1e-5, rtol=0)
            torch.testing.assert_close(attn[i, :m, :n], a_attn[0], atol=1e-5, rtol=0)
            assert torch.all(attn[i, :, n:] == 0), "padded source positions got attention"
            torch.testing.assert_close(out.logits[i, :m], a.logits[0], atol=1e-5, rtol=0)
            torch.testing.assert_close(
                out.domain_logits[i], a.domain_logits[0], atol=1e-5, rtol=0
            )
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:2]))
    torch.testing.assert_close(batch_loss, torch.stack(alone_losses).sum(), atol=1e-4, rtol=1e-5)


def test_caller_needs_no_sorting_and_lengths_may_be_any_int_tensor() -> None:
    model = make_model()
    srcs = sentences(3, [3, 6, 1])
    src, lengths = pad(srcs)
    with torch.no_grad():
        ref = model.encode(src, lengths)
        perm = torch.tensor([2, 0, 1])
        other = model.encode(src[perm], lengths[perm].to(torch.int32))
    torch.testing.assert_close(other.states, ref.states[perm], atol=1e-6, rtol=0)
    assert torch.equal(other.mask, ref.mask[perm])
    with pytest.raises(ValueError, match="at least one token"):
        model.encode(src, torch.tensor([3, 0, 1]))


def test_packed_encoder_matches_plain_lstm_on_unpadded_input() -> None:
    model = make_model()
    enc = model.encoder
    plain = nn.LSTM(16, 12, num_layers=2, batch_first=True, bidirectional=True)
    plain.load_state_dict(enc.rnn.state_dict())
    plain.eval()
    srcs = sentences(4, [6, 2, 4])
    src, lengths = pad(srcs)
    with torch.no_grad():
        out = model.encode(src, lengths)
        for i, s in enumerate(srcs):
            states, (h_n, _) = plain(model.src_embed(s.unsqueeze(0)))
            torch.testing.assert_close(out.states[i, : len(s)], states[0], atol=1e-6, rtol=0)
            # bridge: per layer, [forward; backward] final states -> tanh(Linear)
            final = h_n.view(2, 2, 1, 12)
            final = torch.cat([final[:, 0], final[:, 1]], dim=-1)
            expect = torch.tanh(enc.bridge_h(final))
            torch.testing.assert_close(out.init_h[:, i], expect[:, 0], atol=1e-6, rtol=0)


def test_bridge_with_different_layer_counts_uses_the_top_encoder_layer() -> None:
    model = make_model(enc_layers=1, dec_layers=3)
    src, lengths = pad(sentences(5, [4, 2]))
    tgt_in, _ = teacher_forcing(sentences(6, [3, 5]))
    with torch.no_grad():
        enc = model.encode(src, lengths)
        out = model(src, lengths, tgt_in)
    assert enc.init_h.shape == (3, 2, 24)
    torch.testing.assert_close(enc.init_h[0], enc.init_h[2])
    assert out.logits.shape == (2, 6, VOCAB)


# ---------------------------------------------------------------------------- shapes / options


@pytest.mark.parametrize("input_feeding", [True, False])
def test_both_decoder_modes_give_batch_time_vocab_logits(input_feeding: bool) -> None:
    model = make_model(input_feeding=input_feeding)
    src, lengths = pad(sentences(7, [5, 3, 6]))
    tgt_in, _ = teacher_forcing(sentences(8, [4, 7, 2]))
    out = model(src, lengths, tgt_in)
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (3, 8, VOCAB)
    assert out.domain_logits.shape == (3, LABELS)
    assert torch.isfinite(out.logits).all()


def test_tagger_absent_without_labels_or_when_disabled() -> None:
    src, lengths = pad(sentences(9, [3, 4]))
    tgt_in, _ = teacher_forcing(sentences(10, [2, 2]))
    for model in (
        make_model(n_labels=0),
        make_model(tagger=TaggerConfig(enabled=False)),
    ):
        assert model.tagger is None
        out = model(src, lengths, tgt_in)
        assert out.domain_logits is None
        assert model.tag(model.encode(src, lengths)) is None


def test_shared_and_tied_embeddings() -> None:
    model = make_model(share_embeddings=True, tie_output=True)
    assert model.src_embed is model.tgt_embed
    assert model.generator.proj.weight is model.tgt_embed.weight
    assert isinstance(model.generator.pre, nn.Linear)  # dec_hidden 24 -> emb_dim 16
    untied = make_model()
    n_shared = sum(p.numel() for p in model.parameters())
    n_plain = sum(p.numel() for p in untied.parameters())
    # saves the target embedding [V, 16] and the output matrix [V, 24], pays for 24->16
    assert n_plain - n_shared == VOCAB * 16 + VOCAB * 24 - 24 * 16
    src, lengths = pad(sentences(11, [3, 4]))
    tgt_in, _ = teacher_forcing(sentences(12, [2, 5]))
    assert model(src, lengths, tgt_in).logits.shape == (2, 6, VOCAB)
    with pytest.raises(ValueError, match="joint vocabulary"):
        build_model(small_cfg(share_embeddings=True), VOCAB, VOCAB + 1, PAD, 0)


def test_dot_attention_needs_matching_sizes() -> None:
    with pytest.raises(ValueError, match="dot attention"):
        build_model(small_cfg(attention="dot", dec_hidden=20), VOCAB, VOCAB, PAD, 0)


def test_initialisation() -> None:
    model = make_model()
    assert torch.all(model.src_embed.weight[PAD] == 0)
    assert torch.all(model.tgt_embed.weight[PAD] == 0)
    rnn = model.decoder.rnn
    h = rnn.hidden_size
    forget = rnn.bias_ih_l0[h : 2 * h] + rnn.bias_hh_l0[h : 2 * h]
    assert torch.all(forget == 1)
    assert torch.all(rnn.bias_ih_l0[:h] == 0)
    assert model.encoder.rnn.weight_hh_l0.abs().max() <= 0.1


# ---------------------------------------------------------------------------- attention


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_attention_single_query_matches_all_steps(kind: str) -> None:
    torch.manual_seed(0)
    att = Attention(kind, 8, 8)
    keys = torch.randn(3, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    query = torch.randn(3, 4, 8)
    ctx, w = att(query, keys, mask)
    assert ctx.shape == (3, 4, 8) and w.shape == (3, 4, 5)
    assert torch.all(w.masked_select(~mask.unsqueeze(1).expand_as(w)) == 0)
    torch.testing.assert_close(w.sum(-1), torch.ones(3, 4))
    proj = att.precompute(keys)
    for t in range(4):
        c1, w1 = att(query[:, t], keys, mask, proj)
        torch.testing.assert_close(c1, ctx[:, t], atol=1e-6, rtol=0)
        torch.testing.assert_close(w1, w[:, t], atol=1e-6, rtol=0)
    # a single real key gets all the weight, its context is that key
    torch.testing.assert_close(ctx[2], keys[2, :1].expand(4, 8), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ATTENTIONS)
def test_grouped_queries_share_their_sentence_keys(kind: str) -> None:
    """Beam search passes k consecutive query rows per sentence against un-repeated keys."""
    torch.manual_seed(1)
    att = Attention(kind, 8, 8)
    keys = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    query = torch.randn(6, 8)  # 3 hypotheses per sentence
    ctx, w = att(query, keys, mask)
    rows = torch.tensor([0, 0, 0, 1, 1, 1])
    ref_ctx, ref_w = att(query, keys[rows], mask[rows])  # keys repeated per hypothesis
    torch.testing.assert_close(ctx, ref_ctx, atol=1e-6, rtol=0)
    torch.testing.assert_close(w, ref_w, atol=1e-6, rtol=0)
    assert torch.all(w[3:, 3:] == 0)
    with pytest.raises(ValueError, match="5 query rows cannot be grouped over 2 sentences"):
        att(query[:5], keys, mask)


# ---------------------------------------------------------------------------- step API


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("input_feeding", [True, False])
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_step_api_reproduces_forward(attention: str, input_feeding: bool, fused: bool) -> None:
    model = make_model(attention=attention, input_feeding=input_feeding,
                       fused_decoder_rnn=fused)
    src, lengths = pad(sentences(13, [4, 7, 2]))
    tgt_in, _ = teacher_forcing(sentences(14, [5, 3, 6]))
    with torch.no_grad():
        ref = model(src, lengths, tgt_in).logits
        enc = model.encode(src, lengths)
        state = model.init_decoder_state(enc)
        assert isinstance(enc, EncoderOutput) and isinstance(state, DecoderState)
        assert (state.input_feed is not None) == input_feeding
        steps, attns = [], []
        for t in range(tgt_in.size(1)):
            logits, state, attn = model.decode_step(tgt_in[:, t], state, enc)
            steps.append(logits)
            attns.append(attn)
    torch.testing.assert_close(torch.stack(steps, 1), ref, atol=1e-5, rtol=1e-5)
    assert attns[0].shape == (3, 7)
    assert torch.all(attns[-1][2, 2:] == 0)


def test_fast_and_plain_paths_share_checkpoints_and_results() -> None:
    """The path switches change no parameter: a checkpoint written with either loads into the
    other (strict), and the loaded plain model computes what the fast one does (float32:
    the same products grouped differently, so 1e-5)."""
    fast = make_model(fused_decoder_rnn=True, fast_dropout=True)
    plain = make_model(seed=1, fused_decoder_rnn=False, fast_dropout=False)
    assert list(plain.state_dict()) == list(fast.state_dict())
    plain.load_state_dict(fast.state_dict())
    src, lengths = pad(sentences(21, [4, 7, 2]))
    tgt_in, _ = teacher_forcing(sentences(22, [5, 3, 6]))
    with torch.no_grad():
        a, b = fast(src, lengths, tgt_in), plain(src, lengths, tgt_in)
    torch.testing.assert_close(b.logits, a.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.domain_logits, a.domain_logits, atol=0, rtol=0)


@pytest.mark.parametrize("input_feeding", [True, False])
def test_index_select_repeats_and_reorders_hypotheses(input_feeding: bool) -> None:
    model = make_model(attention="mlp", input_feeding=input_feeding)
    src, lengths = pad(sentences(15, [4, 6]))
    tokens = torch.tensor([[0, 7, 9], [11, 0, 4]])
    with torch.no_grad():
        enc = model.encode(src, lengths)
        state = model.init_decoder_state(enc)
        ref = []
        for t in range(3):
            logits, state, _ = model.decode_step(tokens[:, t], state, enc)
            ref.append(logits)
        # beam-style: 3 copies per sentence, reordered after the first step
        idx = torch.tensor([1, 0, 1, 0, 0, 1])
        b_enc = model.encode(src, lengths).index_select(idx)
        b_state = model.init_decoder_state(model.encode(src, lengths)).index_select(idx)
        logits, b_state, _ = model.decode_step(tokens[idx, 0], b_state, b_enc)
        torch.testing.assert_close(logits, ref[0][idx], atol=1e-6, rtol=0)
        reorder = torch.tensor([5, 4, 3, 2, 1, 0])
        b_state, b_enc = b_state.index_select(reorder), b_enc.index_select(reorder)
        idx = idx[reorder]
        for t in (1, 2):
            logits, b_state, _ = model.decode_step(tokens[idx, t], b_state, b_enc)
            torch.testing.assert_close(logits, ref[t][idx], atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- training


def test_all_pad_target_row_is_ignored_without_nan() -> None:
    model = make_model(input_feeding=True).train()
    src, lengths = pad(sentences(16, [4, 3]))
    tgt_in, tgt_out = teacher_forcing(sentences(17, [3, 3]))
    tgt_out[1] = PAD  # a row with no real target token
    loss_fn = TranslationLoss(PAD, label_smoothing=0.1)
    torch.manual_seed(0)
    out = loss_fn(model(src, lengths, tgt_in).logits, tgt_out)
    assert out.ntokens == 4 and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        both = loss_fn(model(src, lengths, tgt_in).logits, tgt_out).loss
        first = loss_fn(model(src[:1, :4], lengths[:1], tgt_in[:1]).logits, tgt_out[:1]).loss
    torch.testing.assert_close(both, first, atol=1e-5, rtol=1e-5)


def test_training_learns_a_copy_task_and_the_domain_tags() -> None:
    """Real learning: copy the source, tag "contains token 5" / "contains unk"."""
    torch.manual_seed(0)
    model = build_model(
        small_cfg(dropout=0.0, input_feeding=False, emb_dim=32, enc_hidden=32, dec_hidden=64),
        VOCAB, VOCAB, PAD, 2,
    ).train()
    g = torch.Generator().manual_seed(1)
    lens = torch.randint(2, 7, (32,), generator=g).tolist()
    srcs = [torch.randint(4, 10, (n,), generator=g) for n in lens]
    for s in srcs[::3]:
        s[-1] = 0
    src, lengths = pad(srcs)
    tgt_in, tgt_out = teacher_forcing(srcs)
    labels = torch.stack(
        [torch.stack([(s == 5).any(), (s == 0).any()]).float() for s in srcs]
    )
    row_mask = torch.ones(len(srcs), dtype=torch.bool)
    row_mask[::4] = False  # unlabelled rows don't count
    loss_fn = TranslationLoss(PAD, label_smoothing=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        out = model(src, lengths, tgt_in)
        lo = loss_fn(out.logits, tgt_out)
        dl = domain_loss(out.domain_logits, labels, row_mask)
        opt.zero_grad()
        (lo.loss / lo.ntokens + dl).backward()
        opt.step()
        history.append((lo.nll.item() / lo.ntokens, dl.item()))
    (tok0, dom0), (tok1, dom1) = history[0], history[-1]
    assert tok0 > 2.5 and tok1 < 0.5 * tok0, history[::10]
    assert dom1 < 0.25 * dom0, history[::10]

