"""Lean-memory benchmarks: epoch plan, tokenizer sample, shortlist counting; ~1-10 min a command.

The ``compare`` command runs a measurement in child processes that import ``translate`` from
another checkout (``--other``, e.g. ``../main``) and from this one, alternately, run by run:
a before/after comparison of the same measurement code.

    python -m bench lean corpus --workdir DIR [--pairs 1000000]
        the synthetic corpus of ``python -m bench scale`` (DIR/train.de, DIR/train.en)
    python -m bench lean sampler [--pairs 1000000] [--root DIR]
        BatchSampler epoch plan on synthetic lengths (sums of 2-3 real pairs' word counts,
        times 1.3 for pieces): build time, len + padding_fraction time, plan bytes, peak RSS
    python -m bench lean tokenizer --workdir DIR --sizes 100000,300000 [--vocab 8000]
        sentencepiece training time per input_sentence_size (the sample prepare.py takes),
        and quality on held-out real dev text: pieces per sentence, byte-fallback pieces
    python -m bench lean encode --workdir DIR --tokenizer TOKDIR
        encode DIR/train.* into flat files as the encoded cache stores them
    python -m bench lean shortlist --workdir DIR [--root DIR] [--pairs N] [--save F]
        build_lexical_table over the encoded files (read from disk): time, peak RSS, hash
    python -m bench lean tablediff SAMPLE.npy FULL.npy
        how much a table counted on fewer pairs keeps of the full table's top-k
    python -m bench lean compare --other ../main -- sampler --pairs 1000000
        the given command alternately in --other and in this checkout, --repeat times each

Prints JSON on stdout (one object per line for the multi-run commands); progress on stderr.
Figures depend on the host's load: compare ratios from one interleaved run. Time: seconds for
``sampler`` and ``tablediff``, about 1 minute per 300k sentences for ``tokenizer``, minutes
for ``corpus``, ``encode`` and ``shortlist`` at 1M pairs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _say(msg: str) -> None:
    print(f"[bench_lean] {msg}", file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


# --------------------------------------------------------------------------- sampler


def synthetic_lengths(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Piece-like lengths of ``n`` synthetic pairs: each joins 2-3 random real pairs (as
    bench_scale's corpus), its length the words of the parts times 1.3."""
    from bench.scale import real_pairs

    src, tgt = real_pairs(SHARED)
    s_words = np.array([len(x.split()) for x in src])
    t_words = np.array([len(x.split()) for x in tgt])
    rng = np.random.default_rng(seed)
    parts = rng.integers(2, 4, size=n)
    picks = rng.integers(0, len(src), size=(n, 3))
    use = np.arange(3)[None, :] < parts[:, None]
    s = (s_words[picks] * use).sum(1)
    t = (t_words[picks] * use).sum(1)
    return (np.minimum(np.round(s * 1.3), 256).astype(np.int32),
            np.minimum(np.round(t * 1.3), 256).astype(np.int32))


def bench_sampler(args) -> None:
    from translate.data.batching import BatchSampler

    src, tgt = synthetic_lengths(args.pairs)
    # As the trainer gets them from the encoded cache: array.array("i") of Python ints.
    import array

    src_l, tgt_l = array.array("i", src.tobytes()), array.array("i", tgt.tobytes())
    del src, tgt
    rss_lengths = _peak_rss_mb()
    out: dict = {"pairs": args.pairs, "max_tokens": args.max_tokens}
    cpu0, t0 = time.process_time(), time.perf_counter()
    sampler = BatchSampler(src_l, tgt_l, "tokens", args.max_tokens, shuffle=True, seed=1)
    plan = sampler.batches(0)
    out["build_s"] = round(time.perf_counter() - t0, 3)
    out["build_cpu_s"] = round(time.process_time() - cpu0, 3)
    t0 = time.perf_counter()
    out["batches"] = len(sampler)
    out["padding"] = round(sampler.padding_fraction(0), 5)
    out["len_padding_s"] = round(time.perf_counter() - t0, 3)
    t0 = time.perf_counter()
    total = sum(len(b) for b in plan)
    out["iterate_s"] = round(time.perf_counter() - t0, 3)
    assert total == args.pairs
    digest = hashlib.sha256()
    for b in plan[:2000]:
        digest.update(np.asarray(list(b), dtype=np.int64).tobytes())
    out["first_2000_sha"] = digest.hexdigest()[:16]
    t0 = time.perf_counter()
    sampler.batches(1)
    out["build_epoch1_s"] = round(time.perf_counter() - t0, 3)
    out["peak_rss_mb"] = _peak_rss_mb()
    out["rss_mb_before_sampler"] = rss_lengths
    del plan, sampler
    # Memory: what the sampler holds after building an epoch, and the peak while building.
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    sampler = BatchSampler(src_l, tgt_l, "tokens", args.max_tokens, shuffle=True, seed=1)
    plan = sampler.batches(2)
    held, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["held_bytes_per_pair"] = round((held - base) / args.pairs, 1)
    out["peak_build_bytes_per_pair"] = round((peak - base) / args.pairs, 1)
    del plan
    _emit(out)


# --------------------------------------------------------------------------- tokenizer


def _dev_text() -> list[str]:
    """Held-out real sentences (both languages): Multi30k val and every multi-domain dev."""
    files = [SHARED / "multi30k" / f"val.{lang}" for lang in ("de", "en")]
    files += sorted((SHARED / "multidomain-de-en").glob("*/dev.*"))
    lines = []
    for f in files:
        lines += [x for x in f.read_text(encoding="utf-8").split("\n") if x.strip()]
    return lines


def bench_tokenizer(args) -> None:
    import sentencepiece as spm

    from bench.scale import _read
    from translate.config.sections import TokenizerConfig
    from translate.data.tokenizer import Tokenizer
    from translate.training.prepare import SAMPLE_SEED

    src, tgt = _read(args.workdir / "train.de"), _read(args.workdir / "train.en")
    dev = _dev_text()
    for vocab in [int(v) for v in args.vocab.split(",")]:
        for size in [int(s) for s in args.sizes.split(",")]:
            pairs = size // 2  # joint: both sides of a pair count (prepare._tokenizer_sample)
            rng = np.random.default_rng(SAMPLE_SEED)
            rows = np.sort(rng.choice(len(src), size=pairs, replace=False))
            s, t = [src[i] for i in rows], [tgt[i] for i in rows]
            out_dir = args.workdir / f"tok-{vocab}-{size}"
            cfg = TokenizerConfig(vocab_size=vocab, input_sentence_size=size)
            load = os.getloadavg()[0]
            cpu0, t0 = time.process_time(), time.perf_counter()
            Tokenizer.train(cfg, s, t, out_dir, log=lambda m: None)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            sp = spm.SentencePieceProcessor(model_file=str(out_dir / "spm.model"))
            ids = sp.encode(dev, out_type=int)
            n_pieces = sum(map(len, ids))
            byte_ids = {i for i in range(sp.get_piece_size()) if sp.is_byte(i)}
            n_bytes = sum(1 for row in ids for i in row if i in byte_ids)
            _emit({"vocab": vocab, "input_sentence_size": size, "train_s": round(seconds, 1),
                   "train_cpu_s": round(cpu, 1), "sample_chars": sum(map(len, s + t)),
                   "load_1min": round(load, 2), "dev_sentences": len(dev),
                   "dev_pieces_per_sentence": round(n_pieces / len(dev), 4),
                   "dev_byte_pieces_per_1k": round(1000 * n_bytes / n_pieces, 3),
                   "model": str(out_dir / "spm.model")})


def vocab_overlap(models: list[str]) -> list[dict]:
    """Share of each model's pieces found in the last one's (the largest sample)."""
    import sentencepiece as spm

    def pieces(path: str) -> set[str]:
        sp = spm.SentencePieceProcessor(model_file=path)
        return {sp.id_to_piece(i) for i in range(sp.get_piece_size())}

    ref = pieces(models[-1])
    return [{"model": m, "shared_with_last": round(len(pieces(m) & ref) / len(ref), 4)}
            for m in models]


# --------------------------------------------------------------------------- shortlist


def bench_encode(args) -> None:
    from bench.scale import _read
    from translate.data.tokenizer import Tokenizer

    tok = Tokenizer.load(args.tokenizer)
    meta = {}
    for side, lang in (("src", "de"), ("tgt", "en")):
        text = _read(args.workdir / f"train.{lang}")
        rows = (tok.encode_src if side == "src" else tok.encode_tgt)(text)
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        flat = np.fromiter((i for r in rows for i in r), dtype=np.int16, count=int(offsets[-1]))
        flat.tofile(args.workdir / f"{side}.ids")
        offsets.tofile(args.workdir / f"{side}.off")
        meta[side] = {"rows": len(rows), "vocab": tok.src_vocab_size}
    (args.workdir / "encoded.json").write_text(json.dumps(meta))
    _emit(meta)


def bench_shortlist(args) -> None:
    from translate.data.encoded import RaggedColumn
    from translate.search.shortlist import build_lexical_table

    meta = json.loads((args.workdir / "encoded.json").read_text())
    cols = [RaggedColumn(args.workdir / f"{s}.ids", args.workdir / f"{s}.off", np.int16,
                         meta[s]["rows"]) for s in ("src", "tgt")]
    vocab = meta["src"]["vocab"]
    n = args.pairs or meta["src"]["rows"]
    if n < meta["src"]["rows"]:
        cols = [RaggedColumn(args.workdir / f"{s}.ids", args.workdir / f"{s}.off", np.int16, n)
                for s in ("src", "tgt")]
    t0 = time.perf_counter()
    table = build_lexical_table(cols[0], cols[1], vocab, vocab)
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256(table.top.numpy().tobytes() + table.frequent.numpy().tobytes())
    if args.save:
        np.save(args.save, table.top.numpy())
    _emit({"pairs": n, "vocab": vocab, "build_s": round(seconds, 1),
           "peak_rss_mb": _peak_rss_mb(), "table_sha": digest.hexdigest()[:16]})


def table_diff(args) -> None:
    """How a table counted on the first N pairs differs from the full one, in the top-k
    inference uses (inference.shortlist_k): the share of each source piece's top-k kept."""
    a, b = np.load(args.sample), np.load(args.full)
    for k in (10, 30, 100):
        kept, rows = [], 0
        for r in range(a.shape[0]):
            full = set(b[r, :k][b[r, :k] >= 0].tolist())
            if full:
                rows += 1
                kept.append(len(full & set(a[r, :k].tolist())) / len(full))
        kept = np.array(kept)
        _emit({"k": k, "source_pieces": rows, "mean_top_k_kept": round(float(kept.mean()), 4),
               "p10_top_k_kept": round(float(np.percentile(kept, 10)), 4),
               "identical_rows": round(float((kept == 1).mean()), 4)})


# --------------------------------------------------------------------------- driver


def child(root: Path, argv: list[str]) -> list[dict]:
    """``python -m bench lean ARGV`` in a child process (working directory ``root``) that
    imports this checkout's ``bench`` and ``root``'s ``translate``: ``bench`` through a link in
    a temporary directory ahead of ``root`` on ``PYTHONPATH``, and ``-P`` keeps the working
    directory off the import path."""
    with tempfile.TemporaryDirectory(prefix="bench_lean-") as tmp:
        (Path(tmp) / "bench").symlink_to(Path(__file__).resolve().parent,
                                          target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([tmp, str(root)]),
               "WANDB_MODE": "disabled"}
        proc = subprocess.run([sys.executable, "-P", "-m", "bench", "lean", *argv], env=env,
                              cwd=root, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{root}: {' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return [json.loads(x) for x in proc.stdout.splitlines() if x.startswith("{")]


def compare(args, rest: list[str]) -> None:
    for r in range(args.repeat):
        for name, root in (("before", args.other.resolve()), ("after", ROOT)):
            for row in child(root, rest):
                _emit({"run": r, "code": name, "root": str(root),
                       "load_1min": round(os.getloadavg()[0], 2), **row})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("corpus")
    c.add_argument("--workdir", type=Path, required=True)
    c.add_argument("--pairs", type=int, default=1_000_000)
    s = sub.add_parser("sampler")
    s.add_argument("--pairs", type=int, default=1_000_000)
    s.add_argument("--max-tokens", type=int, default=4096)
    t = sub.add_parser("tokenizer")
    t.add_argument("--workdir", type=Path, required=True)
    t.add_argument("--sizes", default="100000,200000,300000,500000,1000000")
    t.add_argument("--vocab", default="8000")
    o = sub.add_parser("overlap")
    o.add_argument("models", nargs="+")
    e = sub.add_parser("encode")
    e.add_argument("--workdir", type=Path, required=True)
    e.add_argument("--tokenizer", type=Path, required=True)
    h = sub.add_parser("shortlist")
    h.add_argument("--workdir", type=Path, required=True)
    h.add_argument("--pairs", type=int, default=0, help="the first N pairs (0 = all)")
    h.add_argument("--save", type=Path, help="write the table's top ids here (.npy)")
    d = sub.add_parser("tablediff")
    d.add_argument("sample", type=Path)
    d.add_argument("full", type=Path)
    m = sub.add_parser("compare")
    m.add_argument("--other", type=Path, required=True)
    m.add_argument("--repeat", type=int, default=2)
    argv = sys.argv[1:]
    rest: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1:]
    args = p.parse_args(argv)
    if args.cmd == "corpus":
        from bench.scale import synthesize

        args.workdir.mkdir(parents=True, exist_ok=True)
        _emit(synthesize(args.pairs, args.workdir / "train"))
    elif args.cmd == "sampler":
        bench_sampler(args)
    elif args.cmd == "tokenizer":
        bench_tokenizer(args)
    elif args.cmd == "overlap":
        for row in vocab_overlap(args.models):
            _emit(row)
    elif args.cmd == "encode":
        bench_encode(args)
    elif args.cmd == "shortlist":
        bench_shortlist(args)
    elif args.cmd == "tablediff":
        table_diff(args)
    else:
        compare(args, rest)


if __name__ == "__main__":
    main()
