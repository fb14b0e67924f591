"""Load generators for ``bench serve``: one sentence a request from N keep-alive connections,
with the clients' CPU time measured beside the server's.

``wrk`` (a load generator in C, ``apt-get install wrk``) when it is installed, so the
clients take little of a small host's CPU; else the same load from Python's asyncio clients
in a process of their own. Either way the load runs in a child process whose CPU time is
read from ``wait4``, and the server's (with its worker processes) from ``/proc``.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")

# Cycles through the bodies (one JSON body a line) in order: with one wrk thread, requests
# leave in the sentences' order, as N clients sending a corpus in turn would.
WRK_SCRIPT = r"""
local bodies = {}
for line in io.lines(os.getenv("BENCH_BODIES")) do bodies[#bodies + 1] = line end
local i = 0
local headers = {["Content-Type"] = "application/json"}
request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/v1/translate", headers, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK {"requests": %d, "seconds": %f, "non2xx": %d, "errors": %d, ' ..
    '"p50_s": %f, "p90_s": %f, "p99_s": %f}\n', summary.requests, summary.duration / 1e6,
    e.status, e.connect + e.read + e.write + e.timeout, latency:percentile(50) / 1e6,
    latency:percentile(90) / 1e6, latency:percentile(99) / 1e6))
end
"""


def generator() -> str:
    """``wrk`` when it is installed, else ``python``."""
    return "wrk" if shutil.which("wrk") else "python"


def process_cpu_seconds(pid: int, children: bool = True) -> float:
    """User + system CPU seconds of ``pid`` and (``children``) every process below it, so
    far."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            if children:
                for task in Path(f"/proc/{p}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):  # gone meanwhile
            continue
    return total


def run(port: int, sentences: list[str], connections: int, seconds: float,
        server_pid: int, kind: str | None = None) -> dict:
    """``connections`` clients sending one sentence a request for ``seconds``: requests/s,
    latency percentiles, and the CPU cores the clients and the server used meanwhile (the
    server's with its worker processes, and its own process alone: HTTP and the handlers)."""
    kind = kind or generator()
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"sentences": [s]}, ensure_ascii=False) + "\n"
                                  for s in sentences), "utf-8")
        if kind == "wrk":
            script = Path(tmp) / "load.lua"
            script.write_text(WRK_SCRIPT)
            cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "60s",
                   "-s", str(script), f"http://127.0.0.1:{port}/v1/translate"]
        else:
            cmd = [sys.executable, "-m", "bench._load", str(port), str(connections),
                   str(seconds), str(bodies)]
        server_before, start = process_cpu_seconds(server_pid), time.perf_counter()
        http_before = process_cpu_seconds(server_pid, children=False)
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "BENCH_BODIES": str(bodies)},
                                cwd=Path(__file__).resolve().parents[1])
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        server_cpu = process_cpu_seconds(server_pid) - server_before
        http_cpu = process_cpu_seconds(server_pid, children=False) - http_before
        out, err = proc.stdout.read(), proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    line = next((x for x in out.splitlines() if x.startswith("WRK ")), None)
    if os.waitstatus_to_exitcode(status) != 0 or line is None:
        raise SystemExit(f"bench serve: the {kind} load failed: {(err or out)[-2000:]}")
    result = json.loads(line[4:])
    if result["non2xx"] or result["errors"]:
        raise SystemExit(f"bench serve: {result['non2xx']} answers were not 200 and "
                         f"{result['errors']} requests failed under {connections} connections")
    result.update(generator=kind, connections=connections,
                  sentences_per_s=result["requests"] / result["seconds"],
                  client_cpu_cores=(usage.ru_utime + usage.ru_stime) / wall,
                  server_cpu_cores=server_cpu / wall, http_cpu_cores=http_cpu / wall)
    return result


# --------------------------------------------------------------------------- Python clients


async def _exchange(reader, writer, body: bytes) -> int:
    writer.write(b"POST /v1/translate HTTP/1.1\r\nHost: bench\r\nContent-Type: "
                 b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def _clients(port: int, connections: int, seconds: float, bodies: list[bytes]) -> dict:
    latencies: list[float] = []
    bad = 0
    turn = iter(range(1 << 62))
    end = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal bad
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < end:
                body = bodies[next(turn) % len(bodies)]
                t0 = time.perf_counter()
                bad += await _exchange(reader, writer, body) != 200
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(connections)))
    ordered = sorted(latencies)

    def pct(q: float) -> float:
        return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]

    return {"requests": len(latencies), "seconds": time.perf_counter() - start,
            "non2xx": bad, "errors": 0, "p50_s": pct(50), "p90_s": pct(90), "p99_s": pct(99),
            "mean_s": statistics.fmean(ordered)}


def main(argv: list[str]) -> None:
    """The Python load: ``python -m bench._load PORT CONNECTIONS SECONDS BODIES``."""
    port, connections, seconds, path = int(argv[0]), int(argv[1]), float(argv[2]), argv[3]
    bodies = [line.encode() for line in Path(path).read_text("utf-8").splitlines()]
    print("WRK " + json.dumps(asyncio.run(_clients(port, connections, seconds, bodies))))


if __name__ == "__main__":
    main(sys.argv[1:])
