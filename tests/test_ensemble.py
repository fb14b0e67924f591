"""Ensembles: several real tiny models decoded as one (Translator.load([A, B]), infer and
evaluate with several --model), and the shared tokenizer that makes them possible.

The second model differs from the shared tiny run in every way an ensemble allows: sizes,
layers, input feeding, domain conditioning; it reuses the first run's tokenizer.
"""

from __future__ import annotations

import filecmp
import http.client
import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import needs_cpu_bf16, tiny_config
from translate import config
from translate.config import ConfigError
from translate.data.tokenizer import Tokenizer, TokenizerError
from translate.evaluate import main as evaluate_main
from translate.infer import main as infer_main
from translate.inference.model_args import COMBINE_CHOICES
from translate.inference.run_loading import TranslatorError, members
from translate.inference.translator import Translator
from translate.runs.rundir import RunDir
from translate.search.beam import length_penalty
from translate.search.decoding import decode_ids
from translate.search.domain_choice import choose
from translate.search.ensemble import COMBINE, Ensemble


@pytest.fixture(scope="module")
def other_run(trained_run: Path, multi30k: Path, multidomain: Path, tmp_path_factory) -> Path:
    """Another shape on the same data with the shared run's tokenizer (tokenizer.reuse)."""
    from translate.training.trainer import Trainer

    root = tmp_path_factory.mktemp("other")
    raw = tiny_config(multi30k, multidomain, root / "run", trained_run.parent / "cache",
                      max_steps=120, valid_every=120, seed=11)
    raw["tokenizer"]["reuse"] = str(trained_run)
    raw["model"].update(emb_dim=48, enc_hidden=48, enc_layers=2, dec_hidden=96, dec_layers=2,
                        input_feeding=True,
                        domain_conditioning={"enabled": True, "dim": 8, "output": True})
    Trainer(config.from_dict(raw)).fit()
    return root / "run"


@pytest.fixture(scope="module")
def german(multi30k: Path) -> list[str]:
    lines = multi30k.joinpath("test_2016_flickr.de").read_text(encoding="utf-8").splitlines()
    return lines[:30] + ["", "   "] + lines[30:40]


@pytest.fixture(scope="module", autouse=True)
def _threads():
    torch.set_num_threads(2)


def _same(a, b, exact: bool = True) -> None:
    """Two lists of Translations agree: texts, n-best texts, and scores (exactly or close)."""
    assert [r.text for r in a] == [r.text for r in b]
    for x, y in zip(a, b, strict=True):
        assert [t for t, _ in x.nbest] == [t for t, _ in y.nbest]
        if exact:
            assert x.nbest == y.nbest and x.score == y.score
            assert x.domain_probs == y.domain_probs and x.domains == y.domains
        else:
            assert [s for _, s in x.nbest] == pytest.approx([s for _, s in y.nbest], abs=1e-4)


# --------------------------------------------------------------------------- tokenizer


def test_one_training_text_gives_one_tokenizer_wherever_it_is_written(multi30k, tmp_path):
    """sentencepiece records its output path; we drop it, so two runs of one config (any
    seed) write byte-identical files, and an older file with its path still compares equal."""
    lines = multi30k.joinpath("train.de").read_text(encoding="utf-8").splitlines()[:3000]
    cfg = config.from_dict({"data": {"train": [{"kind": "text", "prefix": "x"}]},
                            "tokenizer": {"vocab_size": 400}}).tokenizer
    a = Tokenizer.train(cfg, lines, lines, tmp_path / "a", log=lambda _: None)
    b = Tokenizer.train(cfg, lines, lines, tmp_path / "run-b" / "tok", log=lambda _: None)
    assert filecmp.cmp(tmp_path / "a" / "spm.model", tmp_path / "run-b" / "tok" / "spm.model",
                       shallow=False)
    assert a.differs_from(b) is None and a.fingerprint() == b.fingerprint()
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    proto = model_pb2.ModelProto()
    proto.ParseFromString((tmp_path / "a" / "spm.model").read_bytes())
    proto.trainer_spec.model_prefix = "/somewhere/else/spm"  # as files written before
    (tmp_path / "a" / "spm.model").write_bytes(proto.SerializeToString())
    assert Tokenizer.load(tmp_path / "a").differs_from(b) is None
    proto.pieces[10].score -= 1.0  # one score off: another tokenizer
    (tmp_path / "a" / "spm.model").write_bytes(proto.SerializeToString())
    assert Tokenizer.load(tmp_path / "a").differs_from(b) == (
        str(tmp_path / "a" / "spm.model"), str(tmp_path / "run-b" / "tok" / "spm.model"))


def test_tokenizer_reuse_copies_another_runs_tokenizer(trained_run, other_run, multi30k,
                                                       multidomain, tmp_path):
    for f in RunDir(trained_run).tokenizer_dir.iterdir():
        assert filecmp.cmp(f, RunDir(other_run).tokenizer_dir / f.name, shallow=False)
    from translate.training.trainer import Trainer

    raw = tiny_config(multi30k, multidomain, tmp_path / "run", tmp_path / "cache",
                      max_steps=1)
    raw["tokenizer"].update(reuse=str(trained_run), vocab_size=2000)
    with pytest.raises(TokenizerError, match=r"tokenizer.reuse .*: its tokenizer was trained "
                                             r"with other settings .*vocab_size: trained 1000, "
                                             r"asked 2000"):
        Trainer(config.from_dict(raw)).fit()


# --------------------------------------------------------------------------- decoding


def test_ensemble_of_one_is_exactly_that_model(trained_run, german):
    for shortlist in (False, True):
        single = Translator.load(trained_run, device="cpu", shortlist=shortlist)
        ens = Translator.ensemble([single])
        assert isinstance(ens.model, Ensemble)
        for beam in (1, 3):
            _same(ens.translate(german, beam=beam, n_best=beam),
                  single.translate(german, beam=beam, n_best=beam))


@pytest.mark.parametrize("combine", COMBINE)
def test_a_model_with_itself_translates_as_the_model(trained_run, german, combine):
    single = Translator.load(trained_run, device="cpu", shortlist=False)
    twice = Translator.load(f"{trained_run},{trained_run}", device="cpu", shortlist=False,
                            combine=combine)
    assert len(twice.members) == 2 and twice.model.combine == combine
    _same(twice.translate(german, beam=3, n_best=2), single.translate(german, beam=3, n_best=2),
          exact=False)


@pytest.mark.parametrize("precision", ["fp32", "int8", pytest.param("bf16", marks=needs_cpu_bf16)])
@pytest.mark.parametrize("shortlist", [False, True])
def test_two_shapes_decode_together(trained_run, other_run, german, precision, shortlist):
    kw = {"quantize": precision == "int8", "shortlist": shortlist,
          "precision": "bf16" if precision == "bf16" else "fp32"}
    ens = Translator.load([trained_run, other_run], device="cpu", **kw)
    parts = [Translator.load(run, device="cpu", **kw) for run in (trained_run, other_run)]
    assert ens.quantized == (precision == "int8")
    assert ens.model.conditioned and not parts[0].model.conditioned
    if shortlist:  # the union of the members' shortlists
        sizes = ens.shortlist_sizes(german)
        for part in parts:
            assert all(s >= p for s, p in zip(sizes, part.shortlist_sizes(german), strict=True))
    for beam in (1, 3):
        out = ens.translate(german, beam=beam, n_best=beam)
        assert len(out) == len(german)
        for r, src in zip(out, german, strict=True):
            assert bool(r.text) == bool(src.strip())
            if src.strip():
                assert len(r.nbest) == beam and r.score <= 0
                assert r.scores_over == ("shortlist" if shortlist else "vocabulary")
                assert set(r.domain_probs) == {"captions", "general"}
        # most test2016 sentences come out as some member's output or close to it: the
        # ensemble translates, it does not scramble
        words = {w for r in parts[0].translate(german, beam=beam) for w in r.text.split()}
        hits = sum(w in words for r in out for w in r.text.split())
        assert hits >= 0.6 * sum(len(r.text.split()) for r in out)
    # search leaves the loaded members as it found them: in eval mode
    assert not any(m.training for m in ens.model.modules())


def _forced_score(models: list, weights: list[float], combine: str, ids: list[int],
                  tokens: list[int], mix: torch.Tensor, alpha: float, bos: int,
                  eos: int) -> float:
    """The ensemble's score of ``tokens`` for source ``ids`` as the docs define it, by
    teacher forcing each member over the whole vocabulary."""
    src = torch.tensor([ids])
    lengths = torch.tensor([len(ids)])
    target = tokens + [eos]
    steps = []
    with torch.inference_mode():
        for m in models:
            enc = m.condition(m.encode(src, lengths), mix)
            state, prev, lps = m.init_decoder_state(enc), bos, []
            for t in target:
                logits, state, _ = m.decode_step(torch.tensor([prev]), state, enc)
                lps.append(torch.log_softmax(logits.float(), -1)[0])
                prev = t
            steps.append(torch.stack(lps))
    lp = torch.stack(steps)  # [members, T, V]
    w = torch.tensor(weights).view(-1, 1, 1)
    if combine == "prob":
        step = torch.logsumexp(lp + w.log(), dim=0)
    else:
        step = torch.log_softmax((lp * w).sum(dim=0), dim=-1)
    total = step[torch.arange(len(target)), torch.tensor(target)].sum().item()
    return total / length_penalty(len(target), alpha)


@pytest.mark.parametrize("combine", COMBINE)
def test_nbest_scores_are_the_documented_weighted_average(trained_run, other_run, german,
                                                          combine):
    """Each n-best hypothesis' score is the sum, over its pieces and eos, of the combined
    step log-probabilities (weights 3:1 normalised to 0.75/0.25), over the GNMT penalty."""
    ens = Translator.load([trained_run, other_run], device="cpu", shortlist=False,
                          weights=[3, 1], combine=combine)
    assert ens.model.weights == [0.75, 0.25]
    assert ens.labels == ["captions", "general"]
    opts = ens.options(beam=3, n_best=3)
    ids = ens.tokenizer.encode_src(german[:6])
    choice = choose(["captions"], ens.labels, ens.thresholds, ens.model.conditioned)
    with torch.inference_mode():
        decoded = decode_ids(ens.model, ids, opts, special=ens.special, device=ens.device,
                             domains=choice)
    models = [m.model for m in ens.members]
    mix = torch.tensor([[1.0, 0.0]])  # --domain captions
    tok = ens.tokenizer
    for src, hyps in zip(ids, decoded.hypotheses, strict=True):
        assert len(hyps) == 3
        for h in hyps:
            assert _forced_score(models, [0.75, 0.25], combine, src, h.tokens, mix,
                                 opts.alpha, tok.bos_id, tok.eos_id) == pytest.approx(
                h.score, abs=1e-4)
    # the public results carry the same scores
    results = ens.translate(german[:6], beam=3, n_best=3, domains=["captions"])
    for r, hyps in zip(results, decoded.hypotheses, strict=True):
        assert r.conditioned_by == "forced" and r.conditioning == {"captions": 1.0}
        assert [s for _, s in r.nbest] == pytest.approx([h.score for h in hyps], abs=1e-6)


def test_domains_are_averaged_and_conditioning_reaches_the_conditioned_member(
        trained_run, other_run, german):
    a = Translator.load(trained_run, device="cpu", shortlist=False)
    b = Translator.load(other_run, device="cpu", shortlist=False)
    ens = Translator.ensemble([a, b], weights=[1, 3])
    assert ens.thresholds == pytest.approx([0.25 * x + 0.75 * y for x, y in
                                            zip(a.thresholds, b.thresholds, strict=True)])
    pa, pb, pe = (t.translate(german[:5], beam=1) for t in (a, b, ens))
    for x, y, e in zip(pa, pb, pe, strict=True):
        for label in ens.labels:
            assert e.domain_probs[label] == pytest.approx(
                0.25 * x.domain_probs[label] + 0.75 * y.domain_probs[label], abs=1e-5)
        assert e.conditioned_by == "predicted"
    # the forced domain changes the conditioned member's steps, so the ensemble's scores
    captions, general = (ens.translate(german[:8], beam=1, domains=[d]) for d in
                         ("captions", "general"))
    assert [r.score for r in captions] != [r.score for r in general]
    assert all(r.conditioning == {"general": 1.0} for r in general)


def test_snapshot_ensemble_of_one_runs_checkpoints(trained_run, german):
    run = RunDir(trained_run)
    assert run.best_path.is_file() and run.last_path.is_file()
    snap = Translator.load(trained_run, device="cpu", checkpoint="last,best")
    assert snap.checkpoint_paths == [run.last_path, run.best_path]
    out = snap.translate(german, beam=3)
    assert [bool(r.text) for r in out] == [bool(s.strip()) for s in german]


def test_member_lists_pair_runs_with_checkpoints(tmp_path):
    assert members("a,b") == [("a", "auto"), ("b", "auto")]
    assert members(["a", "b,c"], "best") == [("a", "best"), ("b", "best"), ("c", "best")]
    assert members("a", "last,best") == [("a", "last"), ("a", "best")]
    assert members(["a", "b"], ["last", "best"]) == [("a", "last"), ("b", "best")]
    odd = tmp_path / "x,y"
    odd.mkdir()
    assert members(str(odd)) == [(str(odd), "auto")]  # a folder whose name has a comma
    with pytest.raises(TranslatorError, match="3 checkpoints .* for 2 models"):
        members("a,b", "last,best,averaged")
    with pytest.raises(TranslatorError, match="an empty name"):
        members("a,,b")
    assert COMBINE_CHOICES == COMBINE


def test_refusals_are_one_line(trained_run, other_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(trained_run, copy)
    from sentencepiece import sentencepiece_model_pb2 as model_pb2

    spm_file = RunDir(copy).tokenizer_dir / "spm.model"
    proto = model_pb2.ModelProto()
    proto.ParseFromString(spm_file.read_bytes())
    proto.pieces[50].score += 0.5
    spm_file.write_bytes(proto.SerializeToString())
    with pytest.raises(TranslatorError) as err:
        Translator.load([trained_run, copy], device="cpu")
    message = str(err.value)
    assert "\n" not in message and "different sentencepiece models" in message
    assert str(RunDir(trained_run).tokenizer_dir / "spm.model") in message
    assert str(spm_file) in message
    with pytest.raises(ConfigError, match="--weights: 1 weights for 2 models"):
        Translator.load([trained_run, other_run], device="cpu", weights=[1])
    with pytest.raises(ConfigError, match="--weights: weights must be positive"):
        Translator.load([trained_run, other_run], device="cpu", weights=[1, -1])


# --------------------------------------------------------------------------- commands


def _run(main, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_infer_and_evaluate_take_several_models(trained_run, other_run, german, tmp_path,
                                                capsys):
    src = tmp_path / "in.de"
    src.write_text("\n".join(german) + "\n", encoding="utf-8")
    common = ["--input", str(src), "--format", "jsonl", "--beam", "3", "--n-best", "2",
              "--device", "cpu", "--weights", "2,1", "--combine", "logprob"]
    assert _run(infer_main, ["--model", str(trained_run), "--model", str(other_run),
                             *common]) == 0
    repeated = capsys.readouterr().out
    assert _run(infer_main, ["--model", f"{trained_run},{other_run}", *common]) == 0
    assert capsys.readouterr().out == repeated
    rows = [json.loads(line) for line in repeated.splitlines()]
    ens = Translator.load([trained_run, other_run], device="cpu", weights=[2, 1],
                          combine="logprob")
    expected = ens.translate(german, beam=3, n_best=2)
    assert len(rows) == len(german)
    for row, r in zip(rows, expected, strict=True):
        assert row["translation"] == r.text
        assert [h["translation"] for h in row["nbest"]] == [t for t, _ in r.nbest]
        assert set(row) >= {"translation", "score", "nbest", "domains", "domain_probs",
                            "scores_over"}
    assert _run(infer_main, ["--model", f"{trained_run},{other_run}", "--weights", "1",
                             "--input", str(src), "--device", "cpu"]) == 2
    assert "--weights: 1 weights for 2 models" in capsys.readouterr().err
    assert _run(evaluate_main, ["--model", str(trained_run), "--model", str(other_run),
                                "--format", "json", "--max-pairs", "40", "--beam", "2",
                                "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run"] == str(trained_run) and len(result["models"]) == 2
    assert result["combine"] == "logprob" and result["weights"] == [0.5, 0.5]
    assert result["pooled"]["n"] == 40


def _serve(models: str, log: Path) -> tuple[subprocess.Popen, int]:
    """``python -m translate.serve --model A,B`` on a free loopback port, once ready."""
    out = log.open("w")
    proc = subprocess.Popen([sys.executable, "-m", "translate.serve", "--model", models,
                             "--port", "0", "--threads", "1", "--shortlist", "off"],
                            stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    port = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        if port is None:
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
            port = int(found.group(1)) if found else None
        elif _http(port, "GET", "/ready")[0] == 200:
            return proc, port
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"the server did not become ready: {log.read_text()}")


def _http(port: int, method: str, path: str, payload: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        body = None if payload is None else json.dumps(payload).encode()
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
    except ConnectionError:
        return 0, {}
    finally:
        conn.close()
    return response.status, json.loads(data) if data.startswith(b"{") else {}


def test_serve_with_an_ensemble_answers_as_infer_does(trained_run, other_run, german,
                                                      tmp_path):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    models = f"{trained_run},{other_run}"
    batch = german[:4] + ["", "   "] + german[4:8]
    proc, port = _serve(models, tmp_path / "serve.log")
    try:
        status, body = _http(port, "POST", "/v1/translate", {"sentences": batch, "n_best": 2})
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, (tmp_path / "serve.log").read_text()
    assert status == 200, body
    src = tmp_path / "in.de"
    src.write_text("\n".join(batch) + "\n", encoding="utf-8")
    out = subprocess.run([sys.executable, "-m", "translate.infer", "--model", models,
                          "--input", str(src), "--format", "jsonl", "--n-best", "2",
                          "--shortlist", "off", "--threads", "1"],
                         capture_output=True, text=True, check=True).stdout
    want = [json.loads(line) for line in out.splitlines()]
    got = body["translations"]
    assert len(got) == len(want) == len(batch)
    for g, w in zip(got, want, strict=True):
        assert g["translation"] == w["translation"]
        assert [n["translation"] for n in g.get("nbest", [])] == [
            n["translation"] for n in w.get("nbest", [])]
        assert (g["score"] is None) == (w["score"] is None)
        if w["score"] is not None:
            assert g["score"] == pytest.approx(w["score"], abs=1e-4)
