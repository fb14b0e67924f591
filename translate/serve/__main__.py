"""``python -m translate.serve --model RUN_DIR``: translate over HTTP.

Serves a trained run directory on http://127.0.0.1:8080 (``--host``/``--port``; ``--port 0``
picks a free port and logs it):

* ``POST /translate`` and ``GET /languages``: LibreTranslate's API, for the apps, plugins
  and client libraries that already speak it (JSON or form fields);
* ``POST /v1/translate``: per sentence the translation, its score, n-best, the predicted
  domain tags and (``domain``) conditioned output, with ``infer --format jsonl``'s fields;
* ``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus), ``GET /docs`` (OpenAPI);
* ``GET /``: a small translation page.

Sentences from concurrent requests are decoded together: one worker thread owns the model
and gathers queued sentences into batches (``--max-batch-tokens``, ``--max-wait-ms``).
Threads and precision are chosen as ``infer`` chooses them. SIGTERM or Ctrl-C stops taking
connections, finishes every request already received, and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from translate import tuning
from translate.cli import ArgumentParser, help_text, non_negative, run_main, setup_logging
from translate.config import ConfigError

PROG = "python -m translate.serve"
log = logging.getLogger("translate.serve")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"expected more than 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    from translate.serve.limits import Limits

    d = Limits()
    p = ArgumentParser(prog=PROG, description=help_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="RUN_DIR",
                   help="run directory (default: the most recent run under runs/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 for every interface)")
    p.add_argument("--port", type=non_negative, default=8080,
                   help="TCP port (default: 8080; 0: a free one, logged)")
    p.add_argument("--verbose", action="store_true", help="log one line per request")
    m = p.add_argument_group("model (as for infer)")
    m.add_argument("--checkpoint", default="auto",
                   help="auto (default), best, last, averaged, or a path to a .pt file")
    m.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")
    m.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16", "fp16"),
                   help="fp32 (default), auto, bf16 or fp16, as infer's --precision")
    m.add_argument("--quantize", action=argparse.BooleanOptionalAction,
                   help="dynamic int8 weights (CPU; default: the run's inference.quantize)")
    m.add_argument("--threads", metavar="N", type=non_negative, default=0,
                   help="torch CPU threads (default: torch's choice)")
    m.add_argument("--shortlist", choices=("on", "off"),
                   help="vocabulary shortlist per batch (default: the run's inference."
                        "shortlist; with it on, which sentences share a batch can change "
                        "an output slightly)")
    m.add_argument("--beam", metavar="N", type=int, help="beam size (default: the run's)")
    m.add_argument("--batch-size", metavar="N", type=int,
                   help="sentences per decoded batch (default: the run's)")
    g = p.add_argument_group("limits and batching")
    g.add_argument("--max-body-bytes", metavar="N", type=_positive(int),
                   default=d.max_body_bytes, help=f"request body size (default: "
                                                  f"{d.max_body_bytes}); larger: 413")
    g.add_argument("--max-sentences", metavar="N", type=_positive(int),
                   default=d.max_sentences, help=f"items per request (default: "
                                                 f"{d.max_sentences}); more: 413")
    g.add_argument("--max-chars", metavar="N", type=_positive(int), default=d.max_chars,
                   help=f"characters per item (default: {d.max_chars}); more: 413")
    g.add_argument("--max-queue", metavar="N", type=_positive(int), default=d.max_queue,
                   help=f"sentences waiting for the model (default: {d.max_queue}); "
                        "more: 503 with Retry-After")
    g.add_argument("--timeout", metavar="SECONDS", type=_positive(float), default=d.timeout,
                   help=f"deadline from a request's arrival (default: {d.timeout:g}); "
                        "later: 504, and its sentences leave the queue")
    g.add_argument("--max-batch-tokens", metavar="N", type=_positive(int),
                   default=d.max_batch_tokens,
                   help=f"source pieces gathered per call of the translator (default: "
                        f"{d.max_batch_tokens})")
    g.add_argument("--max-wait-ms", metavar="MS", type=float, default=d.max_wait_ms,
                   help=f"how long a batch waits for more sentences (default: "
                        f"{d.max_wait_ms:g})")
    return p


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a taken port is one line and port 0 works."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise ConfigError(f"--host {host}: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot listen there "
                          f"({err.strerror})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Before torch loads (below), as infer does.
    tuning.apply_process_tuning(inference=True)
    setup_logging(args.verbose)
    try:
        import uvicorn

        from translate.serve import app as app_mod
    except ImportError as err:
        raise ConfigError(f"{err.name} is not installed: pip install 'translate[serve]'"
                          ) from None
    from translate.inference.translator import Translator
    from translate.runs.rundir import RunDir
    from translate.runtime import set_threads
    from translate.serve.batcher import Batcher
    from translate.serve.limits import Limits
    from translate.serve.prometheus import Metrics

    limits = Limits(max_body_bytes=args.max_body_bytes, max_sentences=args.max_sentences,
                    max_chars=args.max_chars, max_queue=args.max_queue, timeout=args.timeout,
                    max_batch_tokens=args.max_batch_tokens, max_wait_ms=args.max_wait_ms)
    try:
        limits.check()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    set_threads(args.threads)
    sock = _bind(args.host, args.port)  # before the model loads: a taken port fails fast
    model_dir = args.model or RunDir.latest("runs")
    shortlist = None if args.shortlist is None else args.shortlist == "on"
    logging.getLogger("translate.runtime").setLevel(logging.INFO)
    translator = Translator.load(model_dir, device=args.device, checkpoint=args.checkpoint,
                                 quantize=args.quantize, precision=args.precision,
                                 shortlist=shortlist, beam=args.beam)
    if translator.quantized:
        tuning.retain_freed_memory()
    options = {"beam": args.beam, "batch_size": args.batch_size}
    options = {k: v for k, v in options.items() if v is not None}
    resolved = translator.options(**options)  # bad options fail before serving
    metrics = Metrics()
    batcher = Batcher(translator, limits, metrics, options)
    name = Path(model_dir).resolve().name
    service = app_mod.Service(translator, batcher, limits, metrics, name)
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    @contextlib.asynccontextmanager
    async def lifespan(_app) -> AsyncIterator[None]:
        batcher.start()  # warms up in the worker; /ready answers 200 once done
        yield
        import asyncio

        await asyncio.to_thread(batcher.close)  # every queued sentence is answered first

    app = app_mod.create_app(service, lifespan=lifespan)
    import torch

    log.info("serving %s (%s to %s, checkpoint %s, beam %d, batch size %d, %s, %d threads) "
             "on %s", name, service.source, service.target, translator.checkpoint_path.name,
             resolved.beam_size, resolved.batch_size, str(translator.dtype).split(".")[-1],
             torch.get_num_threads(), url)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_keep_alive=5, timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    batcher.on_failure = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with
    # these handlers in place that is a no-op and the command exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    started = time.monotonic()
    server.run(sockets=[sock])
    if batcher.failed is not None:
        print(f"{PROG}: error: the model failed to warm up: {batcher.failed}", file=sys.stderr)
        return 1
    log.info("stopped after %.0f s: %d sentences translated in %d batches", time.monotonic()
             - started, batcher.translated, batcher.batches)
    return 0


def main(argv: list[str] | None = None) -> None:
    """Entry point; user errors print one line and exit with status 2."""
    run_main(lambda: _run(argv), PROG)


if __name__ == "__main__":
    main()
