"""Serving benchmark: translate.serve under concurrent clients vs in-process; ~2 min (+ training).

Does ``python -m translate.serve`` batch concurrent requests well enough?

Two targets, on one host, with one model, beam and thread count for both sides:

1. throughput: under saturating load from ``--clients`` concurrent clients on loopback (each
   keeps one keep-alive connection and sends ``--per-request`` sentences per request to
   ``/v1/translate`` until the sentences run out), the server's sentences/s must reach at
   least 0.8x of translating the same sentences in one process as ``infer`` does
   (``Translator.translate`` over chunks of ``batch_size * 8`` lines, decoding timed, loading
   not);
2. idle latency: one short sentence sent to the idle server, one request at a time, must be
   answered within 2x of translating that sentence alone in one process (``--idle-repeats``
   alternating pairs, the median of each pair's ratio).

Reported too: p50/p95/p99 request latency under load, the server's batch sizes, and the
peak RSS of the server process and of the in-process run. In-process and server runs
alternate (``--repeats`` pairs) and medians are taken, since the host may be shared.

The model: ``--model RUN_DIR``, or (default) runs/serve-bench, trained first if missing with
configs/multi30k.yaml for ``--minutes`` (5). The sentences: the first ``--sentences`` of
Multi30k's test2016 German sources (../shared/data/multi30k). With a 5-minute model and
the defaults it takes about 2 minutes on 2 CPU cores (plus the training, when needed).
Prints one JSON object (stdout, and ``--out``) and a summary on stderr.

    python -m bench serve [--model RUN_DIR] [--clients 64] [--per-request 4] [--sentences 1000]
                          [--threads 0] [--repeats 3] [--serve-arg=--flag=value] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "multi30k"
TEST = DATA / "test_2016_flickr.de"
PROG = "python -m bench serve"


def _log(msg: str) -> None:
    print(f"[bench serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the process's peak resident set so far, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- in-process side


def _load_translator(model: str, threads: int):
    """A translator set up as ``infer`` sets one up (process tuning first, then threads)."""
    from translate import tuning

    tuning.apply_process_tuning(inference=True)
    from translate.inference.translator import Translator
    from translate.runtime import set_threads

    set_threads(threads)
    return Translator.load(model)


def in_process(model: str, sentences: list[str], threads: int) -> dict:
    """What ``infer`` does, timed: the same chunks through ``Translator.translate``."""
    translator = _load_translator(model, threads)
    opts = translator.options()
    translator.translate(sentences[:16])  # warm-up, as the server's
    chunk = max(opts.batch_size * 8 * opts.workers, 256)  # infer's chunk of lines
    start = time.perf_counter()
    for i in range(0, len(sentences), chunk):
        translator.translate(sentences[i:i + chunk])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
            "peak_rss_mb": _peak_rss_mb(),
            "beam": opts.beam_size, "batch_size": opts.batch_size}


def _in_process_run(args: argparse.Namespace, sentences_file: Path) -> dict:
    """:func:`in_process` in a fresh process, so that its peak RSS and threads are its own."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.serve", "--in-process", str(sentences_file),
         "--model", args.model, "--threads", str(args.threads)],
        cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{PROG}: the in-process run failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


# --------------------------------------------------------------------------- server side


class ServerProcess:
    def __init__(self, args: argparse.Namespace, log: Path) -> None:
        self.log_path = log
        self._log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "translate.serve", "--model", args.model, "--port", "0",
             "--threads", str(args.threads), *args.serve_arg], cwd=ROOT, stdout=self._log,
            stderr=subprocess.STDOUT)
        end = time.monotonic() + 300
        while True:
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", log.read_text())
            if match:
                self.port = int(match.group(1))
                break
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{PROG}: the server did not start; see {log}")
            time.sleep(0.1)
        while asyncio.run(_get(self.port, "/ready"))[0] != 200:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit(f"{PROG}: the server did not become ready; see {log}")
            time.sleep(0.1)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(120)
        self._log.close()
        return code


async def _exchange(reader, writer, request: bytes) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


def _post(body: bytes) -> bytes:
    return (b"POST /v1/translate HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)) + body


async def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return 0, b""
    try:
        return await _exchange(reader, writer, f"GET {path} HTTP/1.1\r\nHost: bench\r\n"
                                               "\r\n".encode())
    finally:
        writer.close()


async def _load(port: int, requests: list[list[str]], clients: int) -> tuple[float, list]:
    """All ``requests`` from ``clients`` concurrent keep-alive connections: the wall seconds
    and each request's latency."""
    pending = list(reversed(requests))
    latencies: list[float] = []

    async def client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while pending:
                batch = pending.pop()
                t0 = time.perf_counter()
                status, body = await _exchange(reader, writer, _post(
                    json.dumps({"sentences": batch}).encode()))
                latencies.append(time.perf_counter() - t0)
                if status != 200 or len(json.loads(body)["translations"]) != len(batch):
                    raise SystemExit(f"{PROG}: the server answered {status}: {body[:300]!r}")
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return time.perf_counter() - start, latencies


async def _idle(port: int, short: str, repeats: int, translator) -> tuple[float, float]:
    """Medians of one request for ``short`` to the idle server and of translating it alone
    in this process, alternating, so that both see the same load from other work."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    served, alone = [], []
    request = _post(json.dumps({"sentences": [short]}).encode())
    try:
        for _ in range(repeats):
            await asyncio.sleep(0.05)  # the worker is idle again
            t0 = time.perf_counter()
            status, _ = await _exchange(reader, writer, request)
            served.append(time.perf_counter() - t0)
            if status != 200:
                raise SystemExit(f"{PROG}: the idle server answered {status}")
            t0 = time.perf_counter()
            translator.translate([short])
            alone.append(time.perf_counter() - t0)
    finally:
        writer.close()
    return statistics.median(served), statistics.median(alone)


def _metric(port: int, name: str) -> float:
    text = asyncio.run(_get(port, "/metrics"))[1].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith((name + " ", name + "{")))  # any labels (the model's)


# --------------------------------------------------------------------------- main


def _ensure_model(args: argparse.Namespace, work: Path) -> None:
    if (Path(args.model) / "config.yaml").exists() or args.model != "runs/serve-bench":
        return
    _log(f"training {args.model} for {args.minutes} minutes (configs/multi30k.yaml)")
    with (work / "train.log").open("w") as log:
        code = subprocess.run(
            [sys.executable, "-m", "translate.train", "--config", "configs/multi30k.yaml",
             "--set", f"training.max_minutes={args.minutes}",
             "--set", f"training.run_dir={args.model}", "--set", "logging.wandb=disabled",
             "--set", "training.valid_every=300", "--set", "training.valid_max_sentences=300"],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"{PROG}: training failed; see {work / 'train.log'}")


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog="Details: the module docstring (python -m pydoc "
                                       "bench.serve).")
    p.add_argument("--model", default="runs/serve-bench", help="run directory")
    p.add_argument("--minutes", type=float, default=5.0,
                   help="training minutes when runs/serve-bench must be trained first")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients")
    p.add_argument("--per-request", type=int, default=4, help="sentences per request")
    p.add_argument("--sentences", type=int, default=1000, help="test2016 sources used")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads on both sides (default 0: torch's choice, as infer's)")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for the server, e.g. --serve-arg=--max-wait-ms=2 "
                        "(repeatable)")
    p.add_argument("--repeats", type=int, default=3, help="in-process/server pairs")
    p.add_argument("--idle-repeats", type=int, default=15, help="single requests timed")
    p.add_argument("--work", default="runs/bench-serve", help="logs")
    p.add_argument("--out", help="also write the JSON result here")
    p.add_argument("--in-process", metavar="FILE", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.in_process:  # the child of _in_process_run
        sentences = Path(args.in_process).read_text("utf-8").splitlines()
        print(json.dumps(in_process(args.model, sentences, args.threads)))
        return 0
    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    _ensure_model(args, work)
    sentences = TEST.read_text("utf-8").splitlines()[:args.sentences]
    sentences_file = work / "sentences.de"
    sentences_file.write_text("\n".join(sentences) + "\n", "utf-8")
    short = min((s for s in sentences if len(s.split()) >= 6), key=len)
    requests = [sentences[i:i + args.per_request]
                for i in range(0, len(sentences), args.per_request)]
    server = ServerProcess(args, work / "server.log")
    inproc, served = [], []
    translator = None
    try:
        for r in range(args.repeats):
            _log(f"repeat {r + 1}/{args.repeats}: in process")
            inproc.append(_in_process_run(args, sentences_file))
            _log(f"repeat {r + 1}/{args.repeats}: {args.clients} clients")
            batches0 = _metric(server.port, "translate_batch_sentences_count")
            sents0 = _metric(server.port, "translate_batch_sentences_sum")
            seconds, latencies = asyncio.run(_load(server.port, requests, args.clients))
            batches = _metric(server.port, "translate_batch_sentences_count") - batches0
            sents = _metric(server.port, "translate_batch_sentences_sum") - sents0
            if translator is None:  # for the sentence alone; this process is idle otherwise
                translator = _load_translator(args.model, args.threads)
                translator.translate(sentences[:16])
            idle, alone = asyncio.run(_idle(server.port, short, args.idle_repeats,
                                            translator))
            served.append({"seconds": seconds, "sentences_per_s": len(sentences) / seconds,
                           "p50_s": _percentile(latencies, 50),
                           "p95_s": _percentile(latencies, 95),
                           "p99_s": _percentile(latencies, 99),
                           "mean_batch_sentences": sents / max(batches, 1),
                           "idle_request_s": idle, "alone_s": alone,
                           "idle_ratio": idle / alone})
        server_rss = _peak_rss_mb(server.proc.pid)
    finally:
        code = server.stop()
    if code != 0:
        raise SystemExit(f"{PROG}: the server exited with {code}; see {server.log_path}")

    def med(rows: list[dict], key: str) -> float:
        return statistics.median(row[key] for row in rows)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    result = {
        "date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "commit": commit,
        "command": " ".join([PROG, *(argv if argv is not None else sys.argv[1:])]),
        "model": args.model, "beam": inproc[0]["beam"], "batch_size": inproc[0]["batch_size"],
        "threads": args.threads, "serve_args": args.serve_arg, "sentences": len(sentences),
        "clients": args.clients,
        "per_request": args.per_request,
        "in_process_sentences_per_s": med(inproc, "sentences_per_s"),
        "server_sentences_per_s": med(served, "sentences_per_s"),
        "throughput_ratio": med(served, "sentences_per_s") / med(inproc, "sentences_per_s"),
        "latency_p50_s": med(served, "p50_s"), "latency_p95_s": med(served, "p95_s"),
        "latency_p99_s": med(served, "p99_s"),
        "mean_batch_sentences": med(served, "mean_batch_sentences"),
        "idle_request_s": med(served, "idle_request_s"),
        "alone_in_process_s": med(served, "alone_s"),
        "idle_ratio": med(served, "idle_ratio"),
        "server_peak_rss_mb": server_rss,
        "in_process_peak_rss_mb": max(row["peak_rss_mb"] for row in inproc),
        "short_sentence": short, "runs": {"in_process": inproc, "server": served},
    }
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", "utf-8")
    _log(f"throughput: server {result['server_sentences_per_s']:.1f} sentences/s vs in "
         f"process {result['in_process_sentences_per_s']:.1f}: "
         f"{result['throughput_ratio']:.2f}x (target >= 0.8x)")
    _log(f"idle request {result['idle_request_s'] * 1000:.0f} ms vs alone "
         f"{result['alone_in_process_s'] * 1000:.0f} ms: {result['idle_ratio']:.2f}x "
         "(target <= 2x)")
    _log(f"latency under load p50/p95/p99 {result['latency_p50_s']:.2f}/"
         f"{result['latency_p95_s']:.2f}/{result['latency_p99_s']:.2f} s; peak RSS server "
         f"{server_rss:.0f} MiB, in process {result['in_process_peak_rss_mb']:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
