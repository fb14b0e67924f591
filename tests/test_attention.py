"""Attention you can see: ``Hypothesis.attention`` from greedy and beam search (checked
against teacher forcing), the Translator and ``infer --attention``, the heatmap renderer,
and the heatmaps a real offline W&B run logs at validation (read back from its files)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_cpu_bf16, tiny_config
from translate.infer import main as infer_main
from translate.inference.translator import Translator
from translate.search.attention_view import EOS_PIECE, validation_heatmaps
from translate.search.decoding import decode_ids
from translate.tracking.heatmap import PAD, render_heatmap
from translate.training.valid_sample import heatmap_rows

# fp32 row sums: a softmax over at most ~40 positions, summed in float32.
SUM_TOL = 1e-5
TF_TOL = 5e-5  # beam vs teacher-forced attention, fp32 (see the test)


@pytest.fixture(scope="module", autouse=True)
def _threads():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny model: one thread is fastest on a shared 2-core host
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def translator(trained_run: Path) -> Translator:
    return Translator.load(trained_run, device="cpu", shortlist=False)


@pytest.fixture(scope="module")
def german(multi30k: Path) -> list[str]:
    lines = multi30k.joinpath("val.de").read_text(encoding="utf-8").splitlines()
    return lines[:16]


def _decode(tr: Translator, src_ids, **opts) -> list:
    inf = dataclasses.replace(tr.config.inference, **opts)
    return decode_ids(tr.model, src_ids, inf, special=tr.special, device=tr.device,
                      attention=True).hypotheses


def _check_matrix(att: torch.Tensor, n_out: int, n_src: int, tol: float = SUM_TOL) -> None:
    assert att.shape == (n_out + 1, n_src)  # output pieces + eos, x source pieces
    assert att.dtype == torch.float32 and bool((att >= 0).all())
    # Summing to 1 over the real positions alone: no mass went to padding.
    assert torch.allclose(att.sum(1), torch.ones(n_out + 1), atol=tol)


def test_greedy_and_beam_matrices_cover_only_real_positions(translator, german):
    """One padded batch of sentences of different lengths (greedy, and beam with n-best):
    every matrix is [output + eos] x [that sentence's source pieces], rows sum to 1, and a
    sentence decoded alone (no padding at all) gets the same matrix."""
    src = translator.tokenizer.encode_src(german)
    lengths = sorted({len(s) for s in src})
    assert len(lengths) > 5  # one batch, much padding for the short ones
    for opts in (dict(beam_size=1), dict(beam_size=4, n_best=3)):
        batched = _decode(translator, src, batch_size=64, **opts)
        for ids, hyps in zip(src, batched, strict=True):
            assert len(hyps) == opts.get("n_best", 1)
            for h in hyps:
                _check_matrix(h.attention, len(h.tokens), len(ids))
        for i in (int(np.argmin([len(s) for s in src])), 3):
            (alone,) = _decode(translator, [src[i]], **opts)
            for a, b in zip(alone, batched[i], strict=True):
                assert a.tokens == b.tokens
                assert torch.allclose(a.attention, b.attention, atol=1e-5)
    # Asking for attention changes nothing else; not asking keeps none.
    inf = dataclasses.replace(translator.config.inference, beam_size=4, n_best=3)
    plain = decode_ids(translator.model, src, inf, special=translator.special,
                       device=translator.device).hypotheses
    with_att = _decode(translator, src, beam_size=4, n_best=3)
    assert [[(h.tokens, h.score) for h in n] for n in plain] == \
        [[(h.tokens, h.score) for h in n] for n in with_att]
    assert all(h.attention is None for n in plain for h in n)


def test_beam_attention_equals_teacher_forcing_of_each_hypothesis(translator, german):
    """Each n-best hypothesis' matrix is what the training forward pass attends when fed
    that very output: a beam that took over another's slot must not lend it its history.
    Tolerance: the step-wise LSTM cell and the whole-sequence nn.LSTM sum in different
    orders (fp32 rounding, ~1e-7 per product, compounded over 20+ recurrent steps), while
    the rows of another hypothesis' history differ by at least ten times ``TF_TOL``
    (checked here on the runner-up of each sentence)."""
    model, bos = translator.model, translator.tokenizer.bos_id
    src = translator.tokenizer.encode_src(german)
    hyps = _decode(translator, src, beam_size=5, n_best=5)
    worst, compared, gaps = 0.0, 0, []
    with torch.inference_mode():
        for ids, nbest in zip(src, hyps, strict=True):
            enc = model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))
            for h in nbest:
                _, forced = model.decode(torch.tensor([[bos, *h.tokens]]), enc)
                worst = max(worst, float((forced[0] - h.attention).abs().max()))
                compared += 1
            # what a borrowed history looks like: the runner-up's rows from where it parts
            # from the best output on
            a, b = nbest[0], nbest[1]
            part = next(i for i, (x, y) in enumerate(zip(a.tokens + [-1], b.tokens + [-2],
                                                         strict=False)) if x != y)
            rows = min(len(a.attention), len(b.attention))
            if part + 1 < rows:
                gaps.append(float((a.attention[part + 1:rows] - b.attention[part + 1:rows])
                                  .abs().max()))
    print(f"max |beam - teacher forced| = {worst:.2e} over {compared} hypotheses; "
          f"borrowed rows differ by {min(gaps):.2e} or more")
    assert compared == 5 * len(src) and len(gaps) >= len(src) // 2
    assert worst < TF_TOL < min(gaps) / 10, (worst, min(gaps))


def test_input_feeding_beam_attention_equals_teacher_forcing(translator, german):
    """The same check through the input-feeding decoder (step cell vs the fused
    teacher-forced recurrence), on a freshly initialised model of the run's vocabulary."""
    from translate.config import ModelConfig
    from translate.model import build_model

    torch.manual_seed(0)
    tok = translator.tokenizer
    model = build_model(ModelConfig(emb_dim=32, enc_hidden=32, dec_hidden=64, dropout=0.0,
                                    input_feeding=True, attention="general"),
                        tok.src_vocab_size, tok.tgt_vocab_size, tok.pad_id, 0).eval()
    src = tok.encode_src(german[:8])
    inf = dataclasses.replace(translator.config.inference, beam_size=4, n_best=4,
                              max_len_a=1.0, max_len_b=5)
    hyps = decode_ids(model, src, inf, special=translator.special,
                      device=torch.device("cpu"), attention=True).hypotheses
    with torch.inference_mode():
        for ids, nbest in zip(src, hyps, strict=True):
            enc = model.encode(torch.tensor([ids]), torch.tensor([len(ids)]))
            for h in nbest:
                _check_matrix(h.attention, len(h.tokens), len(ids))
                _, forced = model.decode(torch.tensor([[tok.bos_id, *h.tokens]]), enc)
                assert torch.allclose(forced[0], h.attention, atol=TF_TOL)


@pytest.mark.parametrize("mode", ["fp32", "shortlist", "int8",
                                  pytest.param("bf16", marks=needs_cpu_bf16)])
def test_translator_returns_named_matrices(trained_run, german, mode):
    """translate(attention=True) in every precision, with and without the shortlist:
    pieces name the rows and columns, rows sum to 1, the output is the one without
    attention, n-best entries carry their own matrix, a split input a block-diagonal one."""
    kwargs = {"fp32": dict(shortlist=False), "shortlist": dict(shortlist=True),
              "int8": dict(quantize=True), "bf16": dict(precision="bf16")}[mode]
    tr = Translator.load(trained_run, device="cpu", **kwargs)
    tok = tr.tokenizer
    long = " ".join(german[:8])  # past tokenizer.max_tokens: translated in parts
    inputs = german[:6] + [long, ""]
    out = tr.translate(inputs, beam=3, n_best=2, attention=True)
    assert [r.nbest for r in out] == [r.nbest for r in tr.translate(inputs, beam=3, n_best=2)]
    assert out[-1].attention is None and out[-2].warnings
    tol = 2e-2 if mode == "bf16" else SUM_TOL  # bf16 weights carry 8 bits of mantissa
    for text, r in zip(inputs[:-1], out[:-1], strict=True):
        view = r.attention
        assert view is r.nbest_attention[0] and len(r.nbest_attention) == len(r.nbest)
        assert view.weights.shape == (len(view.target_pieces), len(view.source_pieces))
        assert np.allclose(view.weights.sum(1), 1.0, atol=tol)
        parts = re.search(r"translated in (\d+) parts", r.warnings[0]) if r.warnings else None
        n_parts = int(parts.group(1)) if parts else 1
        assert (n_parts > 1) == (text == long)
        assert view.target_pieces.count(EOS_PIECE) == n_parts
        if text != long:
            assert view.source_pieces == tok.src_model.id_to_piece(tok.encode_src([text])[0])
            assert tok.tgt_model.decode_pieces(view.target_pieces[:-1]) == r.text
    parts = out[-2].attention
    assert out[-2].nbest_attention == [parts]
    assert "".join(parts.source_pieces) == "".join(tok.src_model.id_to_piece(
        tok.encode_src([long])[0]))
    ends = [i for i, p in enumerate(parts.target_pieces) if p == EOS_PIECE]
    # block-diagonal: the rows of the first part attend only to its own source pieces
    first = parts.weights[: ends[0] + 1]
    assert first[:, first.sum(0) > 0].shape[1] < parts.weights.shape[1]
    assert np.allclose(first.sum(1), 1.0, atol=tol)


def test_infer_jsonl_attention_and_text_refusal(trained_run, german, tmp_path, capsys):
    src = tmp_path / "in.de"
    src.write_text("\n".join(german[:4]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(SystemExit) as exc:
        infer_main(["--model", str(trained_run), "--input", str(src), "--output", str(out),
                    "--format", "jsonl", "--attention", "--beam", "3", "--n-best", "2"])
    assert exc.value.code == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 4
    for row in rows:
        for att in [row["attention"]] + [h["attention"] for h in row["nbest"]]:
            w = np.array(att["weights"])
            assert w.shape == (len(att["target_pieces"]), len(att["source_pieces"]))
            assert att["target_pieces"][-1] == EOS_PIECE
            assert np.allclose(w.sum(1), 1.0, atol=5e-4)  # 4 decimals per weight
            assert np.allclose(w * 1e4, np.round(w * 1e4), atol=1e-6)
        assert row["attention"] == row["nbest"][0]["attention"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        infer_main(["--model", str(trained_run), "--input", str(src), "--attention"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--attention needs --format jsonl" in err[0]


def test_heatmap_layout_and_colours(translator, german):
    (r,) = translator.translate(german[:1], attention=True)
    view = r.attention
    image = render_heatmap(view.weights, view.source_pieces, view.target_pieces, cell=16)
    left, top, cell = image.info["heatmap_grid"]
    rows, cols = view.weights.shape
    assert image.mode == "RGB"
    assert image.size == (left + cols * cell + PAD, top + rows * cell + PAD)
    assert left > PAD and top > PAD  # room for the labels
    pixels = np.asarray(image).astype(int)
    centres = pixels[top + cell // 2::cell, left + cell // 2::cell][:rows, :cols].sum(-1)
    # darker is more attention: each row's darkest cell is its largest weight
    assert (centres.argmin(1) == view.weights.argmax(1)).all()
    assert centres[view.weights < 1e-3].min() > 740  # near white
    with pytest.raises(ValueError, match="do not match"):
        render_heatmap(view.weights, view.source_pieces[1:], view.target_pieces)


def test_offline_wandb_run_logs_attention_heatmaps(multi30k, multidomain, tmp_path,
                                                    monkeypatch):
    """A tiny real training with W&B offline: at its one validation the heatmaps of
    ``logging.attention_samples`` validation sentences, one from each of its two dev sets,
    are in the run's media, the very images the trained model's attention renders to."""
    from translate import config
    from translate.training.trainer import Trainer

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache",
                      max_steps=6, valid_every=6, valid_max_sentences=8, max_tokens=600)
    for source in raw["data"]["train"]:
        source["max_pairs"] = 600
    for source in raw["data"]["valid"] + raw["data"]["test"]:
        source["max_pairs"] = 4
    raw["tokenizer"]["vocab_size"] = 400
    raw["logging"] = {"wandb": "offline", "attention_samples": 2}
    trainer = Trainer(config.from_dict(raw))
    trainer.fit()
    (folder,) = (tmp_path / "run" / "wandb").glob("offline-run-*")
    files = sorted(folder.glob("files/media/images/valid/attention_6_*.png"))
    assert len(files) == 2
    # The same model (one validation, so the best weights are the ones validated), the
    # same sentences: the logged pictures are exactly these renderings.
    rows = heatmap_rows(trainer.data.domains["valid"], 2)
    assert sorted(trainer.data.domains["valid"][i][0] for i in rows) == ["captions", "general"]
    src_ids = trainer.data.splits["valid"].src_ids
    images, captions = validation_heatmaps(
        trainer.model, [src_ids[i] for i in rows], trainer.data.tokenizer,
        trainer.cfg.inference, trainer.device, trainer.dtype, 6, rows)
    from PIL import Image

    logged = [np.asarray(Image.open(f).convert("RGB")) for f in files]
    expected = [np.asarray(im) for im in images]
    # One panel: every picture on a white canvas of the largest size (W&B warns otherwise),
    # each rendering at its top left, unchanged.
    height = max(e.shape[0] for e in expected)
    width = max(e.shape[1] for e in expected)
    assert {a.shape for a in logged} == {(height, width, 3)}
    # Two sources ~10 pieces apart in length: the widths differ on any CPU, so padding ran.
    assert len({e.shape for e in expected}) == 2

    def shows(a: np.ndarray, e: np.ndarray) -> bool:
        h, w = e.shape[:2]
        rest = np.concatenate([a[h:].reshape(-1, 3), a[:h, w:].reshape(-1, 3)])
        return np.array_equal(a[:h, :w], e) and bool((rest == 255).all())

    assert all(any(shows(a, e) for e in expected) for a in logged)
    assert [c.split(":")[0] for c in captions] == [f"step 6, valid sentence {i + 1}"
                                                   for i in rows]
