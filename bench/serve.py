"""Serving benchmark: translate.serve under concurrent clients vs the model in process; ~5 min.

Does ``python -m translate.serve`` serve at the model's speed? One model, beam, precision and
thread count on both sides, on one host; the sources are the first ``--sentences`` (600) of
Multi30k's test2016 in the model's source language (../shared/data/multi30k).

Loads, each against ``/v1/translate`` on loopback, every client on its own keep-alive
connection (``--connections``: 1, 32 and 128, for ``--seconds`` each):

* one sentence a request, the sentences sent in turn, from ``wrk`` (a load generator in C)
  where it is installed, else from Python's asyncio clients in a process of their own; the
  clients' CPU (cores busy) is reported beside the server's (its worker process included),
  since on a small host they share the cores;
* ``--clients`` (64) clients sending ``--per-request`` (4) sentences a request until the
  sentences run out (Python clients; ``--clients 0`` skips it);
* one short sentence sent to the idle server, one request at a time, against translating it
  alone in this process (``--idle-repeats`` alternating pairs, the median of each side).

In-process references, in a fresh process, decoding timed and loading not:
``Translator.translate`` of all the sentences at once (length-sorted batches: the model's
offline speed), of chunks of each connection count in arrival order (what static batches of
concurrent requests could reach), of all at once in length-sorted batches of each connection
count (the most any batcher could make of that many sentences in flight, had it every
sentence in advance to sort), one at a time (the first ``--one-at-a-time`` sentences),
and of ``infer``'s chunks; and the service's own worker fed by as many clients as each load
has, without HTTP (what the service could reach if a request cost nothing).

Targets printed: 1 connection >= 0.9x one at a time in process; 32 connections >= 0.8x and 128
>= 0.9x the offline speed, p99 <= 2x p50 under 32; the idle request <= 1.2x the call alone.
``--compare-with DIR`` also serves the model from another checkout (e.g. a git worktree of an
earlier commit), measured interleaved with this one under the same loads. In-process and
server runs alternate (``--repeats``) and medians are given. Prints one JSON object (stdout
and ``--out``) and a summary on stderr.

    python -m bench serve --model RUN_DIR [--connections 1,32,128] [--seconds 15]
        [--sentences 600] [--precision fp32] [--threads 0] [--repeats 3]
        [--compare-with DIR] [--serve-arg=--flag=value] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import _load

ROOT = Path(__file__).resolve().parents[1]
# As in tests/conftest.py: the corpora beside the repo, or where TRANSLATE_SHARED_DATA says.
DATA = Path(os.environ.get("TRANSLATE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "multi30k"
PROG = "python -m bench serve"


def _log(msg: str) -> None:
    print(f"[bench serve {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_mb(pid: int | str = "self") -> float:
    """VmHWM: the process's peak resident set so far, in MiB."""
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", text).group(1)) / 1024


def _tree_peak_rss_mb(pid: int) -> float:
    """The peak resident sets of ``pid`` and of its children (the worker process), summed."""
    children = [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
                for c in (task / "children").read_text().split()]
    return _peak_rss_mb(pid) + sum(_peak_rss_mb(c) for c in children)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# --------------------------------------------------------------------------- in process


def _load_translator(args: argparse.Namespace):
    """A translator set up as ``infer`` sets one up (process tuning first, then threads)."""
    from translate import tuning

    tuning.apply_process_tuning(inference=True)
    from translate.inference.translator import Translator
    from translate.runtime import set_threads

    set_threads(args.threads)
    shortlist = None if args.shortlist is None else args.shortlist == "on"
    return Translator.load(args.model, precision=args.precision, shortlist=shortlist)


def _rate(translator, chunks: list[list[str]], **options) -> float:
    start = time.perf_counter()
    for chunk in chunks:
        translator.translate(chunk, **options)
    return sum(map(len, chunks)) / (time.perf_counter() - start)


def _worker_rate(translator, sentences: list[str], clients: int) -> float:
    """The service's own worker (serve/worker.py) in this process, fed as ``clients``
    clients would feed it (one sentence a request, the next sent as one is answered), with
    no HTTP in between: what the service could reach if requests cost nothing."""
    from translate.serve.tasks import Options, Request
    from translate.serve.worker import Worker

    worker = Worker(translator)
    todo = iter(enumerate(sentences))

    def send() -> None:
        i, text = next(todo, (None, None))
        if text is not None:
            worker.put(Request(i, [text], Options(), float("inf")))

    start = time.perf_counter()
    for _ in range(clients):
        send()
    while not worker.idle:
        for _ in worker.step().replies:
            send()
    return len(sentences) / (time.perf_counter() - start)


def in_process(args: argparse.Namespace, sentences: list[str]) -> dict:
    """The in-process references, sentences/s each."""
    translator = _load_translator(args)
    opts = translator.options()
    translator.translate(sentences[:16])  # warm-up, as the server's
    infer_chunk = max(opts.batch_size * 8 * opts.workers, 256)  # infer's chunk of lines
    return {
        "all_at_once": _rate(translator, [sentences]),
        "chunks": {str(c): _rate(translator, [sentences[i:i + c]
                                              for i in range(0, len(sentences), c)])
                   for c in args.connections if c > 1},
        "sorted": {str(c): _rate(translator, [sentences], batch_size=c)
                   for c in args.connections if c > 1},
        "worker": {str(c): _worker_rate(translator, sentences[:args.one_at_a_time] if c == 1
                                        else sentences, c) for c in args.connections},
        "one_at_a_time": _rate(translator, [[s] for s in sentences[:args.one_at_a_time]]),
        "infer_way": _rate(translator, [sentences[i:i + infer_chunk]
                                        for i in range(0, len(sentences), infer_chunk)]),
        "peak_rss_mb": _peak_rss_mb(), "beam": opts.beam_size, "batch_size": opts.batch_size,
        "dtype": str(translator.dtype).split(".")[-1]}


def _in_process_run(args: argparse.Namespace, sentences_file: Path) -> dict:
    """:func:`in_process` in a fresh process, so that its peak RSS and threads are its own."""
    argv = [sys.executable, "-m", "bench.serve", "--in-process", str(sentences_file),
            "--model", args.model, "--threads", str(args.threads), "--precision",
            args.precision, "--connections", ",".join(map(str, args.connections)),
            "--one-at-a-time", str(args.one_at_a_time)]
    if args.shortlist:
        argv += ["--shortlist", args.shortlist]
    out = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{PROG}: the in-process run failed: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.splitlines()[-1])


# --------------------------------------------------------------------------- server side


class ServerProcess:
    """``python -m translate.serve`` of the checkout at ``root`` on a free port."""

    def __init__(self, args: argparse.Namespace, log: Path, root: Path = ROOT) -> None:
        self.log_path, self.root = log, root
        self._log = log.open("w")
        extra = ["--precision", args.precision]
        if args.shortlist:
            extra += ["--shortlist", args.shortlist]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "translate.serve", "--model", str(Path(args.model).resolve()),
             "--port", "0", "--threads", str(args.threads), *extra, *args.serve_arg],
            cwd=root, stdout=self._log, stderr=subprocess.STDOUT)
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


async def _multi(port: int, requests: list[list[str]], clients: int) -> tuple[float, list]:
    """All ``requests`` (several sentences each) from ``clients`` concurrent keep-alive
    connections: the wall seconds and each request's latency."""
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
    in this process, alternating, so that both see the same load from other work; each
    after a pause, so that neither runs while the other's threads still spin."""
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
            await asyncio.sleep(0.05)  # the server's decoding threads are idle again
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


def serve_round(args: argparse.Namespace, server: ServerProcess, sentences: list[str],
                translator, short: str) -> dict:
    """Every load against one server."""
    out: dict = {"loads": {}}
    for c in args.connections:
        _log(f"  {server.root.name}: {c} connection(s), one sentence a request")
        steps0 = _metric(server.port, "translate_batch_sentences_count")
        sents0 = _metric(server.port, "translate_batch_sentences_sum")
        row = _load.run(server.port, sentences, c, args.seconds, server.proc.pid)
        steps = _metric(server.port, "translate_batch_sentences_count") - steps0
        row["mean_batch_sentences"] = (
            _metric(server.port, "translate_batch_sentences_sum") - sents0) / max(steps, 1)
        out["loads"][str(c)] = row
    if args.clients:
        requests = [sentences[i:i + args.per_request]
                    for i in range(0, len(sentences), args.per_request)]
        seconds, latencies = asyncio.run(_multi(server.port, requests, args.clients))
        out["multi"] = {"sentences_per_s": len(sentences) / seconds,
                        "p50_s": _percentile(latencies, 50), "p99_s": _percentile(latencies, 99)}
    idle, alone = asyncio.run(_idle(server.port, short, args.idle_repeats, translator))
    out.update(idle_request_s=idle, alone_s=alone, idle_ratio=idle / alone)
    return out


# --------------------------------------------------------------------------- main


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
    p.add_argument("--model", required=True, help="run directory")
    p.add_argument("--connections", default="1,32,128",
                   type=lambda s: [int(x) for x in s.split(",") if x],
                   help="one-sentence loads: connections, comma-separated (default 1,32,128)")
    p.add_argument("--seconds", type=float, default=15.0, help="seconds per one-sentence load")
    p.add_argument("--clients", type=int, default=64,
                   help="clients of the several-sentences load (0: skip it)")
    p.add_argument("--per-request", type=int, default=4, help="its sentences per request")
    p.add_argument("--sentences", type=int, default=600, help="test2016 sources used")
    p.add_argument("--one-at-a-time", type=int, default=200,
                   help="sentences translated one at a time in process")
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16"),
                   help="both sides' precision (default fp32)")
    p.add_argument("--shortlist", choices=("on", "off"),
                   help="both sides' vocabulary shortlist (default: the run's)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads on both sides (default 0: torch's choice, as infer's)")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="one more argument for the server, e.g. --serve-arg=--timeout=120 "
                        "(repeatable)")
    p.add_argument("--compare-with", metavar="DIR", type=Path, action="append", default=[],
                   help="also serve from this checkout of translate, interleaved "
                        "(repeatable; each is named by its folder)")
    p.add_argument("--repeats", type=int, default=3, help="in-process/server rounds")
    p.add_argument("--idle-repeats", type=int, default=15, help="single requests timed")
    p.add_argument("--work", default="runs/bench-serve", help="logs")
    p.add_argument("--out", help="also write the JSON result here")
    p.add_argument("--in-process", metavar="FILE", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _median(rows: list[dict], *keys: str) -> float:
    def get(row: dict):
        for key in keys:
            row = row[key]
        return row
    return statistics.median(get(r) for r in rows)


def summarise(args: argparse.Namespace, inproc: list[dict], served: dict[str, list[dict]],
              sentences: list[str], short: str, rss: dict) -> dict:
    offline = _median(inproc, "all_at_once")
    alone = _median(inproc, "one_at_a_time")
    servers = {}
    for name, rounds in served.items():
        loads = {}
        for c in map(str, args.connections):
            row = {k: _median(rounds, "loads", c, k) for k in (
                "sentences_per_s", "p50_s", "p90_s", "p99_s", "client_cpu_cores",
                "server_cpu_cores", "http_cpu_cores", "mean_batch_sentences")}
            row["vs_offline"] = row["sentences_per_s"] / offline
            row["vs_worker"] = row["sentences_per_s"] / _median(inproc, "worker", c)
            if c != "1":
                row["vs_chunks"] = row["sentences_per_s"] / _median(inproc, "chunks", c)
                row["vs_sorted"] = row["sentences_per_s"] / _median(inproc, "sorted", c)
            else:
                row["vs_one_at_a_time"] = row["sentences_per_s"] / alone
            loads[c] = row
        servers[name] = {"loads": loads, "idle_request_s": _median(rounds, "idle_request_s"),
                         "alone_s": _median(rounds, "alone_s"),
                         "idle_ratio": _median(rounds, "idle_ratio"),
                         "peak_rss_mb": rss[name]}
        if args.clients:
            servers[name]["multi"] = {k: _median(rounds, "multi", k) for k in (
                "sentences_per_s", "p50_s", "p99_s")}
            servers[name]["multi"]["vs_infer_way"] = (
                servers[name]["multi"]["sentences_per_s"] / _median(inproc, "infer_way"))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    return {
        "date": time.strftime("%Y-%m-%d"), "cpu": _cpu(), "commit": commit,
        "command": " ".join([PROG, *(sys.argv[1:])]), "model": args.model,
        "beam": inproc[0]["beam"], "batch_size": inproc[0]["batch_size"],
        "dtype": inproc[0]["dtype"], "threads": args.threads, "serve_args": args.serve_arg,
        "sentences": len(sentences), "generator": _load.generator(),
        "in_process": {"all_at_once": offline, "one_at_a_time": alone,
                       "chunks": {c: _median(inproc, "chunks", c) for c in inproc[0]["chunks"]},
                       "sorted": {c: _median(inproc, "sorted", c) for c in inproc[0]["sorted"]},
                       "worker": {c: _median(inproc, "worker", c) for c in inproc[0]["worker"]},
                       "infer_way": _median(inproc, "infer_way"),
                       "peak_rss_mb": max(r["peak_rss_mb"] for r in inproc)},
        "servers": servers, "short_sentence": short,
        "runs": {"in_process": inproc, "servers": served},
    }


def report(result: dict) -> None:
    ip = result["in_process"]
    _log(f"in process: all at once {ip['all_at_once']:.1f} sentences/s, one at a time "
         f"{ip['one_at_a_time']:.1f}, chunks " + ", ".join(
             f"{c}: {v:.1f}" for c, v in ip["chunks"].items()) + ", sorted batches of "
         + ", ".join(f"{c}: {v:.1f}" for c, v in ip["sorted"].items()) + "; the service's worker "
         "without HTTP, clients " + ", ".join(f"{c}: {v:.1f}" for c, v in ip["worker"].items()))
    for name, s in result["servers"].items():
        for c, row in s["loads"].items():
            target = {"1": " (target >= 0.9x)", "32": " (target >= 0.8x)",
                      "128": " (target >= 0.9x)"}.get(c, "")
            ratio = (f"{row['vs_one_at_a_time']:.2f}x one at a time{target}" if c == "1" else
                     f"{row['vs_offline']:.2f}x offline{target}, {row['vs_chunks']:.2f}x "
                     f"chunks, {row['vs_sorted']:.2f}x sorted batches")
            _log(f"{name}, {c} connection(s): {row['sentences_per_s']:.1f} sentences/s, "
                 f"{ratio}, {row['vs_worker']:.2f}x the worker alone; p50/p99 "
                 f"{row['p50_s'] * 1000:.0f}/{row['p99_s'] * 1000:.0f} ms; "
                 f"CPU server {row['server_cpu_cores']:.2f} (HTTP process "
                 f"{row['http_cpu_cores']:.2f}) / clients "
                 f"{row['client_cpu_cores']:.2f} cores; {row['mean_batch_sentences']:.1f} "
                 "sentences a step")
        _log(f"{name}: idle request {s['idle_request_s'] * 1000:.1f} ms vs alone "
             f"{s['alone_s'] * 1000:.1f} ms: {s['idle_ratio']:.2f}x (target <= 1.2x)")
        if "multi" in s:
            _log(f"{name}: several sentences a request: {s['multi']['sentences_per_s']:.1f} "
                 f"sentences/s, {s['multi']['vs_infer_way']:.2f}x infer's way")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.in_process:  # the child of _in_process_run
        sentences = Path(args.in_process).read_text("utf-8").splitlines()
        print(json.dumps(in_process(args, sentences)))
        return 0
    from translate import config as config_mod

    source = config_mod.load(Path(args.model) / "config.yaml").data.src_lang
    work = ROOT / args.work
    work.mkdir(parents=True, exist_ok=True)
    sentences = (DATA / f"test_2016_flickr.{source}").read_text("utf-8").splitlines()
    sentences = sentences[:args.sentences]
    sentences_file = work / "sentences.txt"
    sentences_file.write_text("\n".join(sentences) + "\n", "utf-8")
    short = min((s for s in sentences if len(s.split()) >= 6), key=len)
    roots = {"this": ROOT} | {d.resolve().name: d.resolve() for d in args.compare_with}
    servers = {name: ServerProcess(args, work / f"server-{name}.log", root)
               for name, root in roots.items()}
    inproc: list[dict] = []
    served: dict[str, list[dict]] = {name: [] for name in servers}
    translator = _load_translator(args)  # for the sentence alone; this process is idle
    translator.translate(sentences[:16])
    try:
        for r in range(args.repeats):
            _log(f"round {r + 1}/{args.repeats}: in process")
            inproc.append(_in_process_run(args, sentences_file))
            order = list(servers) if r % 2 == 0 else list(servers)[::-1]  # ABBA
            for name in order:
                served[name].append(serve_round(args, servers[name], sentences, translator,
                                                short))
        rss = {name: _tree_peak_rss_mb(s.proc.pid) for name, s in servers.items()}
    finally:
        codes = {name: s.stop() for name, s in servers.items()}
    if any(codes.values()):
        raise SystemExit(f"{PROG}: a server exited with {codes}; see {work}")
    result = summarise(args, inproc, served, sentences, short, rss)
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", "utf-8")
    report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
