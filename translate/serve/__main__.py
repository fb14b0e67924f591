"""``python -m translate.serve --model RUN_DIR [--model RUN_DIR ...]``: translate over HTTP.

Serves trained run directories on http://127.0.0.1:8080 (``--host``/``--port``; ``--port 0``
picks a free port and logs it), each model one pair; pairs that chain through one shared
language (de→en and en→fr give de→fr) are served too, through both models:

* ``POST /translate``, ``POST /detect``, ``GET /languages``, ``GET /frontend/settings``,
  ``POST /translate_file``: LibreTranslate's API, for the apps, plugins and client libraries
  that already speak it (JSON, form fields or the query string);
* ``POST /v1/translate``: per sentence the translation, its score, n-best, the predicted
  domain tags and (``domain``) conditioned output, with ``infer --format jsonl``'s fields;
  ``GET /v1/models``;
* ``GET /health``, ``GET /ready``, ``GET /metrics`` (Prometheus), ``GET /docs`` (OpenAPI);
* ``GET /``: a small translation page.

Sentences from concurrent requests are decoded together: each loaded model has a worker (on
the CPU a process of its own) with one running batch that waiting sentences join before
every decoding step (``--batch-size``, ``--max-batch-tokens``).
Models load at first use (or at start: ``--preload``, the default for one model); with
``--max-loaded N`` the least recently used idle model is unloaded to make room. Threads and
precision are chosen as ``infer`` chooses them. SIGTERM or Ctrl-C stops taking connections,
finishes every request already received, and exits 0.

``python -m translate.serve keys add|remove|list``: manage the API keys of ``--api-keys``.
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
    from translate.serve import ratelimit
    from translate.serve.limits import Limits

    d = Limits()
    p = ArgumentParser(prog=PROG, description=help_text(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", metavar="RUN_DIR", action="append",
                   help="run directory, one per pair; repeat it for more pairs; a folder of "
                        "run directories serves each; A,B: one ensemble of A and B "
                        "(default: the most recent run under runs/)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; "
                        "0.0.0.0 for every interface)")
    p.add_argument("--port", type=non_negative, default=8080,
                   help="TCP port (default: 8080; 0: a free one, logged)")
    p.add_argument("--verbose", action="store_true", help="log one line per request")
    p.add_argument("--cors-origins", metavar="ORIGINS", default="*",
                   help="comma-separated origins whose pages may call the service (default: "
                        "*, any, as LibreTranslate; 'none': same-origin pages only)")
    s = p.add_argument_group("models")
    s.add_argument("--preload", action=argparse.BooleanOptionalAction,
                   help="load every model at start (default: only when serving one model; "
                        "else each loads at its first request)")
    s.add_argument("--max-loaded", metavar="N", type=non_negative, default=0,
                   help="models loaded at a time (default: 0, all); to load another, the "
                        "least recently used one without requests in flight is unloaded")
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
    m.add_argument("--workers", metavar="N", type=_positive(int),
                   help="worker processes per model on the CPU, each with its own running "
                        "batch, sharing --threads (default: 2 with two threads or more, "
                        "else 1)")
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
                   help=f"source pieces in a model's running batch (default: "
                        f"{d.max_batch_tokens}; one sentence joins an empty batch however "
                        "long)")
    ratelimit.add_arguments(p)
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
    from translate.runs.rundir import RunDir
    from translate.runtime import set_threads
    from translate.serve import ratelimit
    from translate.serve.limits import Limits
    from translate.serve.prometheus import Metrics
    from translate.serve.registry import Registry
    from translate.serve.specs import model_specs

    limits = Limits(max_body_bytes=args.max_body_bytes, max_sentences=args.max_sentences,
                    max_chars=args.max_chars, max_queue=args.max_queue, timeout=args.timeout,
                    max_batch_tokens=args.max_batch_tokens)
    try:
        limits.check()
    except ValueError as err:
        raise ConfigError(str(err)) from None
    set_threads(args.threads)
    specs = model_specs(args.model or [RunDir.latest("runs")], beam=args.beam)
    sock = _bind(args.host, args.port)  # before the models load: a taken port fails fast
    logging.getLogger("translate.runtime").setLevel(logging.INFO)
    metrics = Metrics()
    registry = Registry(specs, _loader(args, limits), metrics, max_loaded=args.max_loaded)
    preload = args.preload if args.preload is not None else len(specs) == 1
    if preload:
        registry.preload(list(registry.models))
    service = app_mod.Service(registry, limits, metrics, detector=_detector(registry.sources),
                              guard=ratelimit.from_args(args))
    host, port = sock.getsockname()[:2]
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"

    @contextlib.asynccontextmanager
    async def lifespan(_app) -> AsyncIterator[None]:
        registry.start()  # warms up in the workers; /ready answers 200 once done
        yield
        import asyncio

        await asyncio.to_thread(registry.close)  # every queued sentence is answered first
        service.guard.close()

    origins = [o.strip() for o in args.cors_origins.split(",")
               if o.strip() and o.strip() != "none"]
    app = app_mod.create_app(service, lifespan=lifespan, cors_origins=origins)
    log.info("serving %s on %s", ", ".join(f"{m.name} ({m.spec.source} to {m.spec.target})"
                                           for m in registry.models.values()), url)
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on",
                            timeout_keep_alive=5, timeout_graceful_shutdown=None)
    server = uvicorn.Server(config)
    for model in registry.models.values():
        if model.batcher is not None:
            model.batcher.on_failure = lambda: setattr(server, "should_exit", True)
    # uvicorn re-raises the signal that stopped it once it has shut down gracefully; with
    # these handlers in place that is a no-op and the command exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    started = time.monotonic()
    server.run(sockets=[sock])
    failed = registry.failed()
    if failed is not None:
        print(f"{PROG}: error: the model failed to warm up: {failed}", file=sys.stderr)
        return 1
    batchers = [m.batcher for m in registry.models.values() if m.batcher is not None]
    log.info("stopped after %.0f s: %d sentences translated in %d batches", time.monotonic()
             - started, sum(b.translated for b in batchers), sum(b.batches for b in batchers))
    return 0


def _detector(languages: list[str]):
    """The language detector for ``source: auto`` and ``/detect``, loaded now; None (and a
    warning) without its package."""
    from translate.serve.detect import Detector, DetectorMissing

    detector = Detector(languages)
    try:
        detector.load()
    except DetectorMissing as err:
        log.warning("%s; /detect and source auto are not available", err)
        return None
    return detector


def _loader(args: argparse.Namespace, limits):
    """What loads one model: its translator, as ``infer`` loads it, and its batcher."""
    import torch

    from translate.inference.translator import Translator
    from translate.serve.batcher import Batcher

    shortlist = None if args.shortlist is None else args.shortlist == "on"
    options = {k: v for k, v in {"beam": args.beam, "batch_size": args.batch_size}.items()
               if v is not None}

    def load(spec, metrics) -> Batcher:
        dirs = [str(d) for d in spec.run_dirs]
        translator = Translator.load(dirs[0] if len(dirs) == 1 else dirs, device=args.device,
                                     checkpoint=args.checkpoint, quantize=args.quantize,
                                     precision=args.precision, shortlist=shortlist,
                                     beam=args.beam)
        if translator.quantized:
            tuning.retain_freed_memory()
        resolved = translator.options(**options)  # bad options fail before serving
        checkpoints = getattr(translator, "checkpoint_paths", [translator.checkpoint_path])
        log.info("loaded %s (%s to %s, checkpoint %s, beam %d, batch size %d, %s, %d threads)",
                 spec.name, spec.source, spec.target, ", ".join(p.name for p in checkpoints),
                 resolved.beam_size, resolved.batch_size, str(translator.dtype).split(".")[-1],
                 torch.get_num_threads())
        return Batcher(translator, limits, metrics, options, workers=args.workers)
    return load


def main(argv: list[str] | None = None) -> None:
    """Entry point; user errors print one line and exit with status 2."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["keys"]:  # python -m translate.serve keys add|remove|list (docs/keys.md)
        from translate.serve.keys import command

        sys.exit(command(args[1:]))
    run_main(lambda: _run(argv), PROG)


if __name__ == "__main__":
    main()
