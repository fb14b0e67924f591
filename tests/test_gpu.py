"""CUDA paths: bf16 autocast and fp16 with a GradScaler, both decoder modes, resume on GPU.

Skipped where no GPU is visible; `scripts/gpu_check.sh` runs them on a lent GPU machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import sacrebleu
import torch

from conftest import tiny_config
from translate import config
from translate.runs.checkpoint import load_checkpoint
from translate.training.trainer import Trainer

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _gpu_config(multi30k: Path, multidomain: Path, run: Path, **overrides) -> dict:
    raw = tiny_config(multi30k, multidomain, run, run.parent / "cache", device="cuda",
                      max_steps=120, valid_every=60, num_threads=0)
    raw["model"].update(overrides)
    return raw


@pytest.mark.parametrize("input_feeding", [False, True])
def test_bf16_training_learns_in_both_decoder_modes(multi30k, multidomain, tmp_path,
                                                    input_feeding) -> None:
    raw = _gpu_config(multi30k, multidomain, tmp_path / "run", input_feeding=input_feeding)
    raw["training"]["precision"] = "bf16"
    summary = Trainer(config.from_dict(raw)).fit()
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    valid = [m["valid/loss"] for m in metrics if "valid/loss" in m]
    assert len(valid) == 2 and valid[1] < valid[0]
    hyps = (tmp_path / "run" / "test_hyps.txt").read_text(encoding="utf-8").split("\n")[:-1]
    refs = (multi30k / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    assert len(hyps) == 200  # tiny_config's test pairs, scored by sacrebleu as written
    assert summary["test_bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs[:200]]).score, 2)
    state = load_checkpoint(tmp_path / "run" / "last.pt", map_location="cpu")
    assert all(t.device.type == "cpu" for t in state["model"].values())


def test_fp16_uses_a_grad_scaler_and_resumes(multi30k, multidomain, tmp_path) -> None:
    raw = _gpu_config(multi30k, multidomain, tmp_path / "run")
    raw["training"].update(precision="fp16", max_steps=40, valid_every=20)
    Trainer(config.from_dict(raw)).fit()
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["scaler"]["scale"] > 0
    raw["training"]["max_steps"] = 60
    summary = Trainer(config.from_dict(raw), resume=True).fit()
    assert summary["step"] == 60


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_shortlist_decoding_on_cuda(trained_run: Path, multi30k: Path, precision: str) -> None:
    """Whole-vocabulary shortlist = the full search; a real one keeps outputs inside it."""
    from translate.config import InferenceConfig
    from translate.inference.translator import Translator
    from translate.search.decoding import decode_ids
    from translate.search.shortlist import Shortlist

    tr = Translator.load(trained_run, device="cuda", precision=precision)
    lines = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    src = tr.tokenizer.encode_src(lines[:32])
    tok = tr.tokenizer
    special = (tok.bos_id, tok.eos_id, tok.unk_id, tok.pad_id)
    opts = InferenceConfig(beam_size=3, n_best=3, batch_size=64)

    def decode(shortlist):
        return decode_ids(tr.model, src, opts, special=tr.special, device=tr.device,
                          dtype=tr.dtype, shortlist=shortlist).hypotheses

    assert decode(Shortlist(tr.lexicon, 0, tok.tgt_vocab_size, special)) == decode(None)
    real = Shortlist(tr.lexicon, 3, 20, special)
    allowed = set(real.select(src).tolist())
    for nbest in decode(real):
        assert [h.score for h in nbest] == sorted((h.score for h in nbest), reverse=True)
        assert all(set(h.tokens) <= allowed for h in nbest)
    assert {r.scores_over for r in tr.translate(lines[:4])} == {"shortlist"}
