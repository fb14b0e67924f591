"""Domain-conditioned translation: label dropout, model paths, the translator's domain choices
(predicted, forced, none) in every search mode, the ``--domain`` flag and the jsonl field,
and unconditioned models (every existing run) left exactly as they were."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from test_model import make_model, pad, sentences, teacher_forcing

from conftest import needs_cpu_bf16, tiny_config
from translate import config
from translate.config import ConfigError, DomainConditioningConfig
from translate.infer import main
from translate.inference.translator import Translator
from translate.model import build_model
from translate.model.conditioning import gold_mixture
from translate.search.beam import beam_search
from translate.search.decoding import decode_ids

ERROR = "python -m translate.infer: error:"
COND = DomainConditioningConfig(enabled=True, dim=8, label_dropout=0.0)
COND_OUT = DomainConditioningConfig(enabled=True, dim=8, label_dropout=0.0, output=True)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------- training side


def test_label_dropout_keeps_gold_labels_and_drops_the_right_fraction():
    g = torch.Generator().manual_seed(0)
    gold = (torch.rand(4000, 5, generator=g) < 0.3).float()
    gold[:3] = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 0, 0, 0]])
    normalised = gold / gold.sum(1, keepdim=True).clamp(min=1)
    assert torch.equal(normalised[:3], torch.tensor(
        [[1.0, 0, 0, 0, 0], [0, 0.5, 0.5, 0, 0], [0, 0, 0, 0, 0]]))  # unlabelled: unknown
    assert torch.equal(gold_mixture(gold, 0.0, training=True), normalised)
    assert torch.equal(gold_mixture(gold, 0.7, training=False), normalised)  # eval: no drop
    assert not gold_mixture(gold, 1.0, training=True).any()
    mix = gold_mixture(gold, 0.3, training=True, generator=torch.Generator().manual_seed(5))
    labelled = gold.sum(1) > 0
    dropped = ~mix.any(1) & labelled
    assert 0.27 < dropped.sum() / labelled.sum() < 0.33
    kept = mix.any(1)
    assert torch.equal(mix[kept], normalised[kept])  # a kept row is its gold labels, intact
    again = gold_mixture(gold, 0.3, training=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(mix, again)  # seeded


@pytest.mark.parametrize("input_feeding,cond", [(True, COND), (False, COND),
                                                (True, COND_OUT), (False, COND_OUT)],
                         ids=["feed", "parallel", "feed-output", "parallel-output"])
def test_conditioned_paths_agree_and_train_the_label_embeddings(input_feeding, cond):
    """Fused and plain teacher forcing and the step API give the same logits with a domain
    mixture (forced rows, a two-label row, an unknown row), and the same gradients reach
    the label embeddings through the fused recurrence and through nn.LSTM (and, with the
    output shift, the shift too; the packed real-position logits are the padded ones)."""
    models = [make_model(input_feeding=input_feeding, dropout=0.0, fused_decoder_rnn=fused,
                         domain_conditioning=cond) for fused in (True, False)]
    if cond.output:  # it starts at zero; give it values, so that the paths can differ
        with torch.no_grad():
            models[0].domain_mixer.out_shift.normal_(0.0, 0.5)
    models[1].load_state_dict(models[0].state_dict())
    src, lengths = pad(sentences(13, [4, 7, 2]))
    tgt_in, _ = teacher_forcing(sentences(14, [5, 3, 6]))
    gold = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    outs, grads = [], []
    for model in models:
        model.zero_grad()
        logits = model(src, lengths, tgt_in, domains=gold).logits
        (logits * torch.linspace(-1, 1, logits.size(-1))).sum().backward()
        outs.append(logits.detach())
        grads.append(model.domain_mixer.table.grad.clone())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grads[1], grads[0], atol=1e-5, rtol=1e-4)
    assert grads[0][:3].abs().sum(1).gt(0).all() and not grads[0][3].any()  # label 3 unused
    model = models[0]
    with torch.no_grad():
        unknown = model(src, lengths, tgt_in).logits  # no labels = zero mixture
        torch.testing.assert_close(unknown[2], outs[0][2], atol=1e-6, rtol=0)
        assert not torch.allclose(unknown[0], outs[0][0], atol=1e-4, rtol=0)
        enc = model.condition(model.encode(src, lengths), gold / gold.sum(1, keepdim=True)
                              .clamp(min=1))
        state, steps = model.init_decoder_state(enc), []
        for t in range(tgt_in.size(1)):
            step_logits, state, _ = model.decode_step(tgt_in[:, t], state, enc)
            steps.append(step_logits)
    torch.testing.assert_close(torch.stack(steps, 1), outs[0], atol=1e-5, rtol=1e-5)
    if cond.output:
        tgt_mask = torch.ones_like(tgt_in, dtype=torch.bool)
        tgt_mask[2, 2:] = False  # a padded sentence: the packed rows are its real positions
        with torch.no_grad():
            packed = model(src, lengths, tgt_in, tgt_mask=tgt_mask, domains=gold).logits
        torch.testing.assert_close(packed, outs[0][tgt_mask], atol=1e-6, rtol=0)
        assert model.domain_mixer.out_shift.grad.abs().sum() > 0


def test_output_shift_starts_at_zero_and_moves_only_the_output_layer():
    """A fresh output-conditioned model computes what the input-only model with the same
    parameters computes (the shift is zero); a non-zero shift changes the logits of
    labelled sentences only (the unknown domain's zero mixture shifts nothing)."""
    with_out = make_model(11, dropout=0.0, domain_conditioning=COND_OUT)
    without = make_model(11, dropout=0.0, domain_conditioning=COND)
    assert not with_out.domain_mixer.out_shift.any()
    assert set(with_out.state_dict()) - set(without.state_dict()) == {"domain_mixer.out_shift"}
    assert with_out.domain_mixer.out_shift.shape == (8, with_out.generator.query_dim)
    src, lengths = pad(sentences(13, [4, 7, 2]))
    tgt_in, _ = teacher_forcing(sentences(14, [5, 3, 6]))
    gold = torch.tensor([[1.0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]])
    with torch.no_grad():
        ref = without(src, lengths, tgt_in, domains=gold).logits
        assert torch.equal(with_out(src, lengths, tgt_in, domains=gold).logits, ref)
        with_out.domain_mixer.out_shift.normal_(0.0, 0.5)
        moved = with_out(src, lengths, tgt_in, domains=gold).logits
    assert not torch.allclose(moved[:2], ref[:2], atol=1e-3, rtol=0)
    assert torch.equal(moved[2], ref[2])


def test_config_switch_is_off_by_default_and_checked(multi30k, multidomain, tmp_path):
    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache")
    assert config.from_dict(raw).model.domain_conditioning.enabled is False
    bad = [({"tagger": {"enabled": False}}, "model.domain_conditioning.enabled: needs "
            "model.tagger.enabled: true"),
           ({"domain_conditioning": {"enabled": True, "dim": 0}},
            "model.domain_conditioning.dim: expected a positive integer, got 0"),
           ({"domain_conditioning": {"enabled": True, "label_dropout": 1.5}},
            "model.domain_conditioning.label_dropout: expected a probability in [0, 1]")]
    for change, message in bad:
        broken = copy.deepcopy(raw)
        broken["model"].update(change)
        broken["model"].setdefault("domain_conditioning", {"enabled": True})["enabled"] = True
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            config.from_dict(broken)


def test_a_model_without_labels_has_no_head_and_no_conditioning():
    torch.manual_seed(3)
    model = build_model(config.ModelConfig(), 50, 50, 3, n_labels=0)
    assert model.tagger is None and not model.conditioned and model.decoder.domain_dim == 0
    assert not any("domain" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="domain conditioning needs the tagger"):
        build_model(config.ModelConfig(domain_conditioning=COND), 50, 50, 3, n_labels=0)


# ---------------------------------------------------------------------------- unconditioned


def test_unconditioned_runs_load_and_decode_as_before(trained_run, multi30k):
    """A run trained without conditioning (as every run before it): same parameters, no
    conditioning field, and the translator's output is the search's output computed the way
    decoding did before conditioning existed (encode, beam search, tagger)."""
    tr = Translator.load(trained_run, device="cpu", shortlist=False)
    assert not tr.model.conditioned and tr.model.domain_mixer is None
    assert tr.model.decoder.rnn.input_size == tr.config.model.emb_dim  # no input feeding
    texts = multi30k.joinpath("val.de").read_text(encoding="utf-8").splitlines()[:12]
    out = tr.translate(texts, beam=3)
    assert all(r.conditioned_by is None and r.conditioning == {} for r in out)
    ids = tr.tokenizer.encode_src(texts)
    ref = []
    with torch.inference_mode():
        for sent in ids:  # one sentence at a time, plain search calls
            src, lengths = torch.tensor([sent]), torch.tensor([len(sent)])
            hyp = beam_search(tr.model, src, lengths, beam_size=3, n_best=1, alpha=0.6,
                              max_len_a=1.5, max_len_b=10, min_len=1, no_repeat_ngram=0,
                              **tr.special)[0][0]
            ref.append((tr.tokenizer.decode_tgt([hyp.tokens])[0], hyp.score))
    # Batched and one-by-one decoding take different GEMM kernels (oneDNN blocks by shape,
    # AMX hosts differently again), so a score (a sum of ~64 fp32 log-probs) may differ in
    # its last bits: relative tolerance of 64 steps x a few ulp, not an absolute one.
    rel = 64 * 4 * torch.finfo(torch.float32).eps
    assert [(r.text, r.score) for r in out] == [(t, pytest.approx(s, rel=rel)) for t, s in ref]
    with pytest.raises(ConfigError, match="^--domain captions: this model was trained without "
                                          r"domain conditioning"):
        tr.translate(texts[:1], domains=["captions"])
    assert tr.translate(texts[:2], domains="none")[0].text == out[0].text  # nothing to switch


# ---------------------------------------------------------------------------- conditioned run


@pytest.fixture(scope="module")
def cond_run(multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    """A tiny conditioned run on captions + general (label dropout 0.3, output shift on)."""
    from translate.training.trainer import Trainer

    root = tmp_path_factory.mktemp("conditioned")
    raw = tiny_config(multi30k, multidomain, root / "run", root / "cache", max_steps=150,
                      valid_every=150, valid_max_sentences=100)
    raw["data"]["test"] = []
    raw["model"]["domain_conditioning"] = {"enabled": True, "dim": 16, "label_dropout": 0.3,
                                           "output": True}
    Trainer(config.from_dict(raw)).fit()
    return root / "run"


@pytest.fixture(scope="module")
def mixed(multi30k: Path, multidomain: Path) -> list[str]:
    """Captions and Tatoeba sentences, interleaved."""
    caps = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    gen = multidomain.joinpath("general", "dev.de").read_text(encoding="utf-8").splitlines()
    return [s for pair in zip(caps[:8], gen[:8], strict=True) for s in pair]


def _zero_domain_input(tr: Translator) -> Translator:
    """A copy whose decoder ignores the domain: its input columns in the LSTM are zero, and
    so is the output shift."""
    other = copy.copy(tr)
    other.model = copy.deepcopy(tr.model)
    emb, dim = tr.config.model.emb_dim, tr.config.model.domain_conditioning.dim
    with torch.no_grad():
        other.model.decoder.rnn.weight_ih_l0[:, emb:emb + dim] = 0.0
        other.model.domain_mixer.out_shift.zero_()
    return other


MODES = {"greedy": ({}, {"beam": 1}), "beam": ({}, {"beam": 3}),
         "nbest": ({}, {"beam": 3, "n_best": 3}), "shortlist_off": ({"shortlist": False}, {}),
         # int8 quantizes activations with one range per batch, so a sentence's output
         # depends on its batch mates' domains: one sentence per batch compares like for like
         "int8": ({"quantize": True}, {"batch_size": 1}), "bf16": ({"precision": "bf16"}, {})}


@pytest.mark.parametrize("mode", [pytest.param(m, marks=needs_cpu_bf16) if m == "bf16" else m
                                  for m in MODES])
def test_forced_domains_change_outputs_and_none_is_a_zero_domain_input(cond_run, mixed, mode):
    load, opts = MODES[mode]
    tr = Translator.load(cond_run, device="cpu", **load)
    assert tr.model.conditioned and tr.labels == ["captions", "general"]
    assert tr.model.domain_mixer.out_shift.abs().sum() > 0  # training moved it off zero
    runs = {d: tr.translate(mixed, domains=d, **opts)
            for d in (None, "captions", "general", "none")}
    caps, gen = runs["captions"], runs["general"]
    assert all(r.conditioned_by == "forced" and r.conditioning == {"captions": 1.0}
               for r in caps)
    both = tr.translate(mixed[:2], domains=["captions", "general"], **opts)
    assert both[0].conditioning == {"captions": 0.5, "general": 0.5}
    assert all(r.conditioned_by == "none" and r.conditioning == {} for r in runs["none"])
    # the domain changes the model's scores everywhere, and the words of some outputs
    assert all(a.score != b.score for a, b in zip(caps, gen, strict=True))
    assert any(a.nbest != b.nbest for a, b in zip(caps, gen, strict=True))
    # predicted = the thresholded tags: a sentence tagged exactly {label} decodes as forced
    pred = runs[None]
    for forced, label in ((caps, "captions"), (gen, "general")):
        same = [i for i, r in enumerate(pred) if set(r.domains) == {label}]
        assert len(same) >= 4
        assert all(pred[i].conditioned_by == "predicted" and pred[i].conditioning == {label: 1.0}
                   for i in same)
        assert [pred[i].nbest for i in same] == [forced[i].nbest for i in same]
    # --domain none equals a decode whose decoder has the domain input zeroed (not for int8:
    # zeroed columns would change the weights' quantization scale)
    if mode == "int8":
        return
    zeroed = _zero_domain_input(tr).translate(mixed, **opts)
    assert [(r.nbest, r.score) for r in runs["none"]] == [(r.nbest, r.score) for r in zeroed]


def test_decode_ids_records_the_weights_it_used(cond_run, mixed):
    from translate.search.domain_choice import DomainChoice

    tr = Translator.load(cond_run, device="cpu", shortlist=False)
    ids = tr.tokenizer.encode_src(mixed)
    gold = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 8)
    opts = tr.options(beam=2)
    given = decode_ids(tr.model, ids, opts, special=tr.special, device=tr.device,
                       domains=DomainChoice.given(gold))
    assert torch.equal(given.domain_weights, gold)
    forced = tr.translate(mixed, beam=2, domains="general")
    rows = [i for i in range(16) if i % 2]
    assert [given.hypotheses[i][0].score for i in rows] == [
        pytest.approx(forced[i].score, abs=1e-6) for i in rows]


# ---------------------------------------------------------------------------- CLI


def _infer(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_domain_flag_and_jsonl_field(cond_run, mixed, tmp_path, capsys):
    src = tmp_path / "in.de"
    src.write_text("\n".join(mixed[:6]) + "\n", encoding="utf-8")
    base = ["--model", str(cond_run), "--input", str(src), "--format", "jsonl", "--beam", "2"]
    rows = {}
    for name, extra in (("predicted", []), ("captions", ["--domain", "captions"]),
                        ("general", ["--domain", "general"]), ("none", ["--domain", "none"]),
                        ("both", ["--domain", "captions", "--domain", "general"])):
        assert _infer(base + extra) == 0
        rows[name] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert len(rows[name]) == 6
    for row in rows["predicted"]:
        assert row["conditioning"] == {"by": "predicted",
                                       "weights": {k: 1 / len(row["domains"])
                                                   for k in row["domains"]}}
    assert rows["captions"][0]["conditioning"] == {"by": "forced", "weights": {"captions": 1.0}}
    assert rows["both"][0]["conditioning"] == {"by": "forced",
                                               "weights": {"captions": 0.5, "general": 0.5}}
    assert rows["none"][0]["conditioning"] == {"by": "none", "weights": {}}
    assert [r["score"] for r in rows["captions"]] != [r["score"] for r in rows["general"]]
    # tags are reported whatever the decoder was told
    assert [r["domain_probs"] for r in rows["none"]] == [r["domain_probs"] for r in
                                                         rows["captions"]]


@pytest.mark.parametrize(("flags", "expected"), [
    (["--domain", "legal"], "--domain legal: unknown label; this model knows captions, "
                            "general (or none)"),
    (["--domain", "none", "--domain", "general"], "--domain none cannot be combined with "
                                                  "labels (general)")])
def test_cli_domain_errors_are_one_line(cond_run, mixed, tmp_path, capsys, flags, expected):
    src = tmp_path / "in.de"
    src.write_text(mixed[0] + "\n", encoding="utf-8")
    assert _infer(["--model", str(cond_run), "--input", str(src), *flags]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"{ERROR} {expected}\n"


def test_conditioning_without_labelled_data_is_a_one_line_error(multi30k, multidomain, tmp_path):
    from translate.data import DataError
    from translate.training.trainer import Trainer

    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache")
    raw["data"]["train"] = [{"kind": "text", "prefix": str(multi30k / "train"),
                             "max_pairs": 200}]
    raw["data"]["valid"] = raw["data"]["test"] = []
    raw["model"]["domain_conditioning"] = {"enabled": True}
    with pytest.raises(DataError, match=r"^model\.domain_conditioning\.enabled: the training "
                                        "data has no domain labels to condition on"):
        Trainer(config.from_dict(raw))
