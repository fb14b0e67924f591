"""OpenNMT-py on this host by the performance protocol, written as a peers file; ~25 minutes.

Ratios to a peer mean something only on the kind of host the peer was measured on
(``bench/_peers.py``): the same OpenNMT-py ran 2.1x faster on an AMX host than on an AVX2 one.
When ``../shared/peers`` holds no record for this host, this benchmark makes one, so that
``python -m bench infer`` / ``train`` / ``quality`` print same-host ratios (they read
``bench/peers`` and any ``--peers DIR``). It takes the training budget (``--minutes``, 20)
plus a few minutes of decoding.

The protocol is the one recorded in ``../shared/peers/*.json``: Multi30k de->en, one joint
sentencepiece unigram 8k (sentencepiece's defaults), ``brnn`` 2 layers x 256 per direction,
embeddings 256, a 2-layer 512 LSTM decoder with input feeding and general attention, dropout
0.3, label smoothing 0.1, Adam 1e-3, 2,000-token batches, a fixed wall-clock budget on the
CPU threads torch picks; then test2016 decoded at batch 64 (beam 5 and greedy; OpenNMT-py's
own "Average translation time", model load excluded) and the whole beam-5 command timed,
scored with sacreBLEU on detokenized output.

OpenNMT-py is not a dependency of ``translate``; install it beside, without its dependencies
(it pins an old torch; it runs on ours) -- a few of its imports are for features the protocol
does not use, and get empty stand-ins here when missing:

    pip install --no-deps --target /opt/onmt OpenNMT-py==3.5.1 'pyonmttok>=1.37,<2' \\
        configargparse six rapidfuzz
    python -m bench peer_opennmt --onmt /opt/onmt --work /tmp/onmt \\
        --out bench/peers/opennmt-py-$(date +%F).json [--minutes 20] [--rounds 2]
    python -m bench infer --model runs/multi30k

OpenNMT-py checkpoints pickle Python objects; loading the ones this script just trained needs
``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in its processes (never in ours).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import sentencepiece as spm

from bench._peers import (
    BEAM5_KEY,
    BLEU_CHRF_BEAM5_KEY,
    BLEU_CHRF_GREEDY_KEY,
    GREEDY_KEY,
    KNOWN_FLAGS,
    TRAIN_KEY,
    WHOLE_KEY,
    probe_host,
)
from translate.tracking.metrics import bleu_chrf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
TOOLKIT = "opennmt-py 3.5.1"
STUBS = ("spacy", "ahocorasick", "fasttext", "ctranslate2")
PROTOCOL = ("Multi30k de->en, one joint sentencepiece unigram 8k, emb 256, 2-layer bi-LSTM "
            "256/dir, 2-layer LSTM 512 decoder, input feeding, Luong general attention, dropout "
            "0.3, label smoothing 0.1, Adam 1e-3, ~2000-token batches, {minutes:g} minutes on "
            "{threads} cores; beam 5 at batch 64; detokenized sacreBLEU against raw references")
CONFIG = """\
save_data: {work}/data
src_vocab: {work}/vocab
share_vocab: true
src_vocab_size: 8100
tgt_vocab_size: 8100
data:
  corpus_1: {{path_src: {work}/train.de, path_tgt: {work}/train.en}}
  valid: {{path_src: {work}/val.de, path_tgt: {work}/val.en}}
src_seq_length: 200
tgt_seq_length: 200
encoder_type: brnn
decoder_type: rnn
rnn_type: LSTM
enc_layers: 2
dec_layers: 2
enc_hid_size: 512
dec_hid_size: 512
word_vec_size: 256
global_attention: general
input_feed: 1
dropout: [0.3]
label_smoothing: 0.1
optim: adam
learning_rate: 0.001
batch_type: tokens
batch_size: 2000
valid_batch_size: 64
bucket_size: 32768
train_steps: 1000000
valid_steps: 1000000
save_checkpoint_steps: 50
keep_checkpoint: 2
report_every: 50
save_model: {work}/model
seed: 1234
"""


def _env(onmt: Path, stubs: Path) -> dict:
    path = os.pathsep.join([str(onmt), str(stubs), os.environ.get("PYTHONPATH", "")])
    return dict(os.environ, PYTHONPATH=path.rstrip(os.pathsep),
                TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1")


def _stubs(work: Path, onmt: Path) -> Path:
    """Empty modules for OpenNMT-py imports the protocol never uses, where not installed."""
    stubs = work / "stubs"
    stubs.mkdir(parents=True, exist_ok=True)
    for name in STUBS:
        if importlib.util.find_spec(name) is None and not (onmt / name).exists():
            (stubs / f"{name}.py").write_text('"""Import-only stand-in."""\n')
    return stubs


def prepare(data: Path, work: Path, limit: int = 0) -> spm.SentencePieceProcessor:
    """Train the joint 8k unigram model as an OpenNMT-py user would (sentencepiece's
    defaults: its NFKC normalization turns the odd Unicode space into a plain one, which
    OpenNMT-py's whitespace-split vocabulary needs) and write every split as pieces."""
    read = {(split, lang): (data / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            for split in ("train", "val", "test_2016_flickr") for lang in ("de", "en")}
    if not (work / "spm.model").is_file():  # a decode-only run keeps the model's own pieces
        joint = work / "spm_train.txt"
        joint.write_text("\n".join(read["train", "de"] + read["train", "en"]) + "\n",
                         encoding="utf-8")
        spm.SentencePieceTrainer.train(input=str(joint), model_prefix=str(work / "spm"),
                                       vocab_size=8000, model_type="unigram", minloglevel=2)
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm.model"))
    for (split, lang), lines in read.items():
        name = "test" if split.startswith("test") else split
        lines = lines[:limit] if limit and name == "test" else lines
        pieces = sp.encode(lines, out_type=str)
        (work / f"{name}.{lang}").write_text("".join(" ".join(p) + "\n" for p in pieces),
                                             encoding="utf-8")
    return sp


def train(work: Path, env: dict, minutes: float) -> dict:
    """Build the vocabulary, train for ``minutes`` of wall clock, and read its reports."""
    cfg = work / "config.yaml"
    cfg.write_text(CONFIG.format(work=work), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "onmt.bin.build_vocab", "-config", str(cfg),
                    "-n_sample", "-1"], env=env, check=True, capture_output=True)
    log = work / "train.log"
    with log.open("w", encoding="utf-8") as out:
        # Its own process group, so that the budget stops its data-loading workers too.
        proc = subprocess.Popen([sys.executable, "-m", "onmt.bin.train", "-config", str(cfg)],
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:  # the budget: the last saved checkpoint is the model
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    report = read_train_log(log.read_text(encoding="utf-8", errors="replace"))
    if report is None:
        raise SystemExit(f"{log}: OpenNMT-py reported no training step; see the log")
    return report


def read_train_log(text: str) -> dict | None:
    """The last step OpenNMT-py reported and its mean target tokens/s, leaving out the first
    report (start-up: vocabulary, first batches). None when it reported no step."""
    steps = [int(s) for s in re.findall(r"Step\s+(\d+)/", text)]
    rates = [float(t) for t in re.findall(r"[\d.]+/\s*([\d.]+) tok/s", text)]
    if not steps:
        return None
    kept = rates[1:] or rates
    return {"steps": max(steps), "tgt_tok_s": round(sum(kept) / len(kept)) if kept else None}


def newest_checkpoint(work: Path) -> Path:
    """The newest checkpoint that is whole: the budget may have cut the last save short. (A
    torch checkpoint is a zip archive; its CRCs tell, without unpickling anything here.)"""
    found = sorted(work.glob("model_step_*.pt"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    for path in reversed(found):
        try:
            with zipfile.ZipFile(path) as archive:
                if archive.testzip() is None:
                    return path
        except (zipfile.BadZipFile, OSError):
            continue
    raise SystemExit(f"{work}: no readable OpenNMT-py checkpoint (model_step_*.pt)")


def decode(model: Path, work: Path, env: dict, sp: spm.SentencePieceProcessor,
           refs: list[str], beam: int) -> dict:
    """One ``onmt.bin.translate`` run on test2016: its decode-only rate, the whole command's
    wall clock, and sacreBLEU/chrF of the detokenized output."""
    hyp = work / f"hyp.beam{beam}"
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "onmt.bin.translate", "-model", str(model),
                           "-src", str(work / "test.de"), "-output", str(hyp), "-gpu", "-1",
                           "-beam_size", str(beam), "-batch_size", "64", "-batch_type", "sents",
                           "-report_time"], env=env, capture_output=True, text=True, check=True)
    whole = time.perf_counter() - start
    avg_ms = re.search(r"Average translation time \(ms\): ([\d.]+)", proc.stdout + proc.stderr)
    pieces = [line.split() for line in hyp.read_text(encoding="utf-8").splitlines()]
    texts = [sp.decode_pieces(p) for p in pieces]
    scores = bleu_chrf(texts, refs)
    return {"sent_per_s": round(1000.0 / float(avg_ms.group(1)), 1) if avg_ms else None,
            "whole_s": round(whole, 2), "bleu": round(scores["bleu"], 2),
            "chrf": round(scores["chrf"], 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--onmt", required=True, type=Path, help="where OpenNMT-py is installed")
    p.add_argument("--work", required=True, type=Path, help="scratch directory")
    p.add_argument("--out", required=True, type=Path, help="the peers file to write")
    p.add_argument("--data", type=Path, default=DATA, help="Multi30k directory")
    p.add_argument("--minutes", type=float, default=20.0, help="training budget")
    p.add_argument("--rounds", type=int, default=2, help="decoding runs per beam size")
    p.add_argument("--model", type=Path, help="decode this checkpoint instead of training")
    p.add_argument("--limit", type=int, default=0,
                   help="decode only the first N test sentences (a smoke test; 0 = all)")
    args = p.parse_args()
    import torch

    threads = torch.get_num_threads()
    flags, gemm_before = probe_host(threads)
    args.work.mkdir(parents=True, exist_ok=True)
    env = _env(args.onmt.resolve(), _stubs(args.work, args.onmt))
    sp = prepare(args.data, args.work.resolve(), args.limit)
    trained = None if args.model else train(args.work.resolve(), env, args.minutes)
    model = args.model or newest_checkpoint(args.work)
    refs = (args.data / "test_2016_flickr.en").read_text(encoding="utf-8").splitlines()
    refs = refs[:args.limit] if args.limit else refs
    runs: dict[int, list[dict]] = {5: [], 1: []}
    for _ in range(args.rounds):
        for beam in runs:
            runs[beam].append(decode(model, args.work, env, sp, refs, beam))
            print(f"beam {beam}: {runs[beam][-1]}", file=sys.stderr, flush=True)
    print(f"decoded {model}", file=sys.stderr)
    _, gemm_after = probe_host(threads)
    figures = {
        BEAM5_KEY: [r["sent_per_s"] for r in runs[5]],
        GREEDY_KEY: [r["sent_per_s"] for r in runs[1]],
        WHOLE_KEY: [r["whole_s"] for r in runs[5]],
        BLEU_CHRF_BEAM5_KEY: [runs[5][0]["bleu"], runs[5][0]["chrf"]],
        BLEU_CHRF_GREEDY_KEY: [runs[1][0]["bleu"], runs[1][0]["chrf"]],
    }
    if trained:
        figures.update({TRAIN_KEY: trained["tgt_tok_s"],
                        f"steps_in_{args.minutes:g}_min": trained["steps"]})
    record = {
        "measured": datetime.date.today().isoformat(),
        "host": {"cores": os.cpu_count(), "cpu_flags": sorted(flags & set(KNOWN_FLAGS)),
                 "fp32_gemm_2048_gflops_2_threads": sorted([round(gemm_before, 1),
                                                            round(gemm_after, 1)]),
                 "torch": torch.__version__, "threads": threads},
        "protocol": PROTOCOL.format(minutes=args.minutes, threads=threads),
        TOOLKIT: figures,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
