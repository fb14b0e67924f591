"""Training-speed benchmark on Multi30k de→en for both decoder modes; about 4 minutes.

Builds the real :class:`translate.training.trainer.Trainer` from ``configs/multi30k.yaml`` (emb 256,
2-layer bi-LSTM 256/dir encoder, 2-layer LSTM 512 decoder, general attention, ~2000 target
tokens per batch) and times ``Trainer._step`` — collate, forward, loss, backward, clipping,
Adam — on real batches in the training order, after a warm-up. Each decoder mode runs in its
own child process so that peak RSS and the allocator state are that mode's alone; each child
measures the fp32 GEMM peak (torch.mm 2048³) in the same process, right before and after the
timed steps, so the ratio to peak is not skewed by load from other jobs changing in between.
On a shared host the GEMM rate itself drifts from minute to minute (docs/benchmarks.md), so the
child also probes it with one GEMM every ``--probe-every`` steps, outside the step clock,
and reports the ratio to the median probe as well: the rate the machine gave while these
steps ran.

Analytic FLOPs (multiply-add = 2 FLOPs; ×3 for forward + backward), counted over real tokens
only (padding is overhead, not useful work):

    per source token:  Σ_layers 2 directions · 2·4·He·(I_l + He)     I_0 = E, I_l>0 = 2He
                     + 2·(2He)·Hd                                    (general: key projection)
    per target token:  Σ_layers 2·4·Hd·(I_l + Hd)                    I_0 = E (+ Hd input feeding)
                     + 2·S·Hd + 2·S·2He                              (scores + context, S = its
                                                                      source length)
                     + 2·(2He + Hd)·Hd                               (h~ = tanh(W[c; h]))
                     + 2·Hd·V                                        (output projection;
                                                                      tied: 2·(Hd·E + E·V))

    python -m bench train [--steps 30] [--warmup 5] [--threads 2] [--device cpu]
                          [--precisions fp32[,bf16,...]] [--rounds 1]
                          [--modes input_feeding parallel]

Several ``--precisions`` are an interleaved A/B: each round runs every mode in every
precision, one child after the other, in ABBA order over rounds, so a change in a shared
host's load hits both sides alike; the output gives each round's ratio to fp32 (tokens/s
over the fp32 child of the same mode and round, by the wall clock and per CPU-second of the
child) and their median. Every result carries the CPU's capability (model, bf16/AMX flags,
torch's dispatch level, the bf16 unit that ``precision: auto`` sees), and the CPU time of the
timed steps besides the wall clock.

Prints one JSON object (stdout) and a human summary (stderr). With the defaults (one
precision, one round) it takes about 4 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from bench._common import (
    DEFAULT_DATA,
    GemmProbe,
    abba,
    add_training_run_arguments,
    cpu_capability,
    cpu_line,
    gemm_peak_gflops,
    load_average,
    load_config,
    peak_rss_mb,
    pin_threads,
    round_ratios,
)
from bench._peers import (
    TRAIN_KEY,
    add_peers_argument,
    peer_view,
)
from bench._roofline import gemm_flops, step_gemms, time_floor, time_gemms
from translate import tuning

ROOT = Path(__file__).resolve().parents[1]

MODES = {"input_feeding": True, "parallel": False}
TARGETS_TOK_S = {"input_feeding": 1600.0, "parallel": 2000.0}


def _vs_peer(ratio: float | None) -> str:
    return "" if ratio is None else f"{ratio:.2f}x best peer; "


def flops(model_cfg, vocab: int, src_lens: list[int], tgt_lens: list[int]) -> float:
    """Forward+backward FLOPs of one batch by the formula in the module docstring."""
    e, he, hd = model_cfg.emb_dim, model_cfg.enc_hidden, model_cfg.dec_hidden
    enc = 0.0
    for layer in range(model_cfg.enc_layers):
        inp = e if layer == 0 else 2 * he
        enc += 2 * (2 * 4 * he * (inp + he))
    if model_cfg.attention != "dot":
        enc += 2 * (2 * he) * hd
    dec = 0.0
    for layer in range(model_cfg.dec_layers):
        inp = (e + (hd if model_cfg.input_feeding else 0)) if layer == 0 else hd
        dec += 2 * 4 * hd * (inp + hd)
    dec += 2 * (2 * he + hd) * hd
    if model_cfg.tie_output and hd != e:  # h~ → embedding size → tied output embedding
        dec += 2 * (hd * e + e * vocab)
    else:
        dec += 2 * hd * vocab
    total = 0.0
    for s, t in zip(src_lens, tgt_lens, strict=True):
        total += s * enc + t * (dec + 2 * s * hd + 2 * s * 2 * he)
    return 3 * total


def batch_lengths(train, ix: list[int]) -> tuple[list[int], list[int]]:
    """Source and target lengths of one batch as the model sees them (``collate``'s sizes:
    an empty source is one token, the target output gains eos)."""
    return [train.src_lens[i] for i in ix], [train.tgt_lens[i] + 1 for i in ix]


def run_mode(args: argparse.Namespace, mode: str) -> dict:
    """Time one decoder mode in this process."""
    from translate.training.trainer import Trainer

    logging.basicConfig(level=logging.WARNING)
    pin_threads(args.threads)
    run_dir = Path(args.run_root) / "run"
    cfg = load_config(ROOT / "configs" / "multi30k.yaml", Path(args.data), run_dir, {
        "model": {"input_feeding": MODES[mode]},
        "training": {"device": args.device, "precision": args.precision,
                     "num_threads": args.threads, "max_tokens": args.max_tokens},
    })
    trainer = Trainer(cfg)
    device = trainer.device
    train = trainer.data.splits["train"]
    batches = trainer.sampler.batches(0)[: args.warmup + args.steps]
    vocab = trainer.data.tokenizer.tgt_vocab_size
    trainer.model.train()

    peak_before = gemm_peak_gflops(device)
    for ix in batches[: args.warmup]:
        trainer._step([ix])
    if device.type == "cuda":
        torch.cuda.synchronize()
    tgt_tok = src_tok = tgt_slots = src_slots = 0
    total_flops = 0.0
    probe, probes, seconds, cpu_seconds = GemmProbe(device), [], 0.0, 0.0
    timed = batches[args.warmup:]
    every = args.probe_every if args.probe_every > 0 else len(timed)
    for start in range(0, len(timed), every):
        t0, c0 = time.perf_counter(), time.process_time()
        for ix in timed[start:start + every]:
            trainer._step([ix])
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
        cpu_seconds += time.process_time() - c0
        if args.probe_every > 0:
            probes.append(probe.gflops())
    peak_after = gemm_peak_gflops(device)
    for ix in timed:
        s, t = batch_lengths(train, ix)
        tgt_tok += sum(t)
        src_tok += sum(s)
        tgt_slots += len(ix) * max(t)
        src_slots += len(ix) * max(s)
        total_flops += flops(cfg.model, vocab, s, t)
    gemm_peak = max(peak_before, peak_after)
    achieved = total_flops / seconds / 1e9
    rss_mb = peak_rss_mb()  # before the bound's own buffers
    # The bound times fp32 products against the fp32 peak: meaningless for bf16/fp16 steps.
    bound = (gemm_bound(args, trainer, train, timed) if trainer.dtype == torch.float32
             else None)
    tok_s = tgt_tok / seconds
    return {
        "mode": mode, "input_feeding": MODES[mode], "steps": len(timed),
        "seconds": round(seconds, 3), "tgt_tokens_per_s": round(tok_s, 1),
        # CPU time of all threads: less sensitive than the wall clock to other jobs' load
        "cpu_seconds": round(cpu_seconds, 3),
        "tgt_tokens_per_cpu_s": round(tgt_tok / max(cpu_seconds, 1e-9), 1),
        "src_tokens_per_s": round(src_tok / seconds, 1),
        "sec_per_step": round(seconds / max(len(timed), 1), 4),
        "tgt_padding_fraction": round(1 - tgt_tok / tgt_slots, 4),
        "src_padding_fraction": round(1 - src_tok / src_slots, 4),
        "flops_per_tgt_token": round(total_flops / tgt_tok),
        "achieved_gflops": round(achieved, 2),
        "gemm_peak_gflops": round(gemm_peak, 2),
        "gemm_peak_before_after": [round(peak_before, 2), round(peak_after, 2)],
        "ratio_to_peak": round(achieved / gemm_peak, 3),
        "gemm_probes_gflops": [round(p, 1) for p in probes],
        "gemm_during_steps_gflops": round(statistics.median(probes), 2) if probes else None,
        "ratio_to_gemm_during_steps": (round(achieved / statistics.median(probes), 3)
                                       if probes else None),
        "gemm_bound": bound and {
            "gemms_alone_gflops": round(bound["gflops"], 2),
            "peak_gflops": round(bound["peak"], 2),
            "gemms_alone_ratio_to_peak": round(bound["gflops"] / bound["peak"], 3),
            "gemms_only_step_ratio_to_peak": round(bound["analytic_gflops"] / bound["peak"], 3),
            "gemms_loss_adam_step_ratio_to_peak": round(
                bound["with_floor_gflops"] / bound["peak"], 3),
            "step_time_in_gemms": round(bound["sec_per_tgt_token"] * tgt_tok / seconds, 3),
            "step_time_in_loss_and_adam": round(
                bound["floor_sec_per_tgt_token"] * tgt_tok / seconds, 3)},
        "peak_rss_mb": round(rss_mb, 1),
        "target_tok_s": TARGETS_TOK_S[mode],
        "threads": torch.get_num_threads(), "device": str(device),
        "precision": str(trainer.dtype).replace("torch.", ""),
        "vocab": vocab, "load_average": load_average(), "cpu": cpu_capability(),
    }


def gemm_bound(args, trainer, train, timed: list) -> dict:
    """Time the GEMMs of ``--roofline-batches`` of the timed batches alone (``bench._roofline``).

    Returns their rate (GEMM FLOPs / their time), the analytic FLOPs of those batches over
    the same time (the achieved rate of a step made of nothing but these products), their
    seconds per target token, and the 2048³ peak measured right around them (the host's
    rate drifts, so the bound is compared with its own peak, not the steps').
    """
    model_cfg, vocab, device = trainer.cfg.model, trainer.data.tokenizer.tgt_vocab_size, \
        trainer.device
    picks = max(1, min(args.roofline_batches, len(timed)))
    sample = [timed[round(i * (len(timed) - 1) / max(picks - 1, 1))] for i in range(picks)]
    shapes, analytic, tokens, per_batch = Counter(), 0.0, 0, []
    for ix in sample:
        s, t = batch_lengths(train, ix)
        shapes.update(step_gemms(model_cfg, vocab, s, t))
        analytic += flops(model_cfg, vocab, s, t)
        tokens += sum(t)
        per_batch.append(sum(t))
    peak_before = gemm_peak_gflops(device)
    seconds = time_gemms(shapes, device)
    peak = max(peak_before, gemm_peak_gflops(device))
    floor = time_floor(vocab, per_batch, [p.numel() for p in trainer.model.parameters()], device)
    return {"gflops": gemm_flops(shapes) / seconds / 1e9, "peak": peak,
            "analytic_gflops": analytic / seconds / 1e9,
            "with_floor_gflops": analytic / (seconds + floor) / 1e9,
            "floor_sec_per_tgt_token": floor / tokens,
            "sec_per_tgt_token": seconds / tokens}


def _during(r: dict) -> str:
    if r["gemm_during_steps_gflops"] is None:
        return ""
    return (f" ({r['ratio_to_gemm_during_steps']:.0%} of the median GEMM rate "
            f"{r['gemm_during_steps_gflops']:.0f} probed between steps)")


def _bound(b: dict | None) -> str:
    if b is None:
        return ""
    return (f"; its GEMMs alone {b['gemms_alone_gflops']:.0f} GFLOP/s = "
            f"{b['gemms_alone_ratio_to_peak']:.0%} of peak {b['peak_gflops']:.0f}, a step of "
            f"only GEMMs {b['gemms_only_step_ratio_to_peak']:.0%}, of GEMMs + loss + Adam "
            f"{b['gemms_loss_adam_step_ratio_to_peak']:.0%}; step time in GEMMs "
            f"{b['step_time_in_gemms']:.0%}, in loss + Adam {b['step_time_in_loss_and_adam']:.0%}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="Multi30k directory")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    ap.add_argument("--probe-every", type=int, default=5,
                    help="probe the GEMM rate every N timed steps, off the clock (0 = never)")
    ap.add_argument("--roofline-batches", type=int, default=6,
                    help="timed batches whose GEMMs are also timed alone (the bound)")
    add_training_run_arguments(
        ap, precisions=["fp32"], several="are interleaved in every round",
        rounds_help="repeat every (mode, precision) child this many times, ABBA order")
    add_peers_argument(ap)
    ap.add_argument("--max-tokens", type=int, default=2000, help="batch budget (tokens)")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    ap.add_argument("--run-root", default=str(ROOT / "runs" / "bench_train"),
                    help="where the tokenizer is trained once and reused")
    ap.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    tuning.apply_process_tuning()  # what `python -m translate.train` runs with
    if args.child:
        args.precision = args.precisions[0]
        print(json.dumps(run_mode(args, args.child)))
        return

    # Probed before the children run, so their own load does not skew this host's rate.
    peers = peer_view(args.peers, device=args.device)
    cpu = cpu_capability()
    print(cpu_line(cpu), file=sys.stderr, flush=True)
    runs = []
    for rnd in range(max(1, args.rounds)):
        for mode in args.modes:
            for precision in abba(args.precisions, rnd):
                r = _child(args, mode, precision)
                r.update(round=rnd, precision_asked=precision,
                         vs_best_peer=peers.ratio(r["tgt_tokens_per_s"], TRAIN_KEY))
                runs.append(r)
                _summary(r)
    # Per mode: ratios of the wall-clock rate and of the rate per CPU-second of the process
    # (the latter hardly moves with other jobs' load on a shared host).
    ratios = {mode: {basis: round_ratios({(r["round"], r["precision_asked"]): r[key]
                                          for r in runs if r["mode"] == mode}, args.precisions)
                     for basis, key in (("wall", "tgt_tokens_per_s"),
                                        ("cpu_time", "tgt_tokens_per_cpu_s"))}
              for mode in args.modes} if len(args.precisions) > 1 else {}
    out = {"benchmark": "train", "data": args.data, "cpu": cpu, "runs": runs,
           "precision_ratios": ratios, "peers": peers.summary(),
           "peers_tok_s": peers.figure(TRAIN_KEY)}
    if len(runs) == len(args.modes):  # one precision, one round: each mode's own result
        out["modes"] = {r["mode"]: r for r in runs}
    print(json.dumps(out, indent=2))
    print(f"{peers.line()}; peers' tgt tok/s: {out['peers_tok_s']}", file=sys.stderr)
    print(cpu_line(cpu), file=sys.stderr)
    for mode, by_basis in ratios.items():
        for basis, by_name in by_basis.items():
            for name, r in by_name.items():
                print(f"{mode:>13}: {name} tgt tok/s ({basis}) per round {r['per_round']}, "
                      f"median {r['median']}", file=sys.stderr)


def _child(args: argparse.Namespace, mode: str, precision: str) -> dict:
    """One (mode, precision) measurement in its own process."""
    with tempfile.TemporaryFile("w+") as err:
        cmd = [sys.executable, "-m", "bench", "train", "--child", mode, "--data", args.data,
               "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--probe-every", str(args.probe_every),
               "--roofline-batches", str(args.roofline_batches),
               "--threads", str(args.threads), "--device", args.device,
               "--precisions", precision, "--max-tokens", str(args.max_tokens),
               "--run-root", args.run_root]
        # The child imports this checkout's bench package from any working directory.
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                              env={**os.environ, "PYTHONPATH": path})
        if proc.returncode:
            err.seek(0)
            sys.exit(f"bench train: mode {mode} ({precision}) failed:\n{err.read()[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _summary(r: dict) -> None:
    print(f"{r['mode']:>13} {r['precision']:>8} (round {r['round']}): "
          f"{r['tgt_tokens_per_s']:8,.0f} tgt tok/s ({r['src_tokens_per_s']:,.0f} src; "
          f"{r['tgt_tokens_per_cpu_s']:,.0f} per CPU-s) target {r['target_tok_s']:,.0f}; "
          f"{_vs_peer(r['vs_best_peer'])}{r['achieved_gflops']:.1f} GFLOP/s = "
          f"{r['ratio_to_peak']:.0%} of fp32 GEMM peak {r['gemm_peak_gflops']:.0f}"
          f"{_during(r)}{_bound(r['gemm_bound'])}; "
          f"{r['flops_per_tgt_token'] / 1e6:.1f} MFLOP/tgt tok; pad tgt "
          f"{r['tgt_padding_fraction']:.1%} src {r['src_padding_fraction']:.1%}; "
          f"peak RSS {r['peak_rss_mb']:,.0f} MB; load {r['load_average']}",
          file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
