"""``python -m translate.infer``: translate a file (or stdin) with a trained run directory.

One sentence per line in, exactly one translation per line out, in order - whatever the
input holds. Lines are split on ``\\n`` only (a trailing ``\\r`` is dropped), so characters
that ``str.splitlines`` would also treat as breaks (``\\x0b``, ``\\x0c``, ``\\x1c``,
``\\u2028``...) stay inside their line; a last line without a newline still counts. Empty or
whitespace-only lines give empty lines; invalid UTF-8 is replaced (U+FFFD) with a warning
naming the lines; lines longer than the model's limit are translated in pieces with a
warning. stdout carries translations only; messages and the progress bar go to stderr.
With ``--input-format html`` each line is an HTML document (with ``--whole-file``, the whole
input is one), answered with its markup kept (docs/html.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from translate import tuning
from translate.cli import ArgumentParser, non_negative, run_main
from translate.config import ConfigError
from translate.data.linebreaks import one_line
from translate.inference.infer_io import (
    BadLines,
    atomic_output,
    check_output,
    count_lines,
    read_chunks,
    read_document,
    read_lines,
    translation_record,
)
from translate.inference.model_args import add_model_arguments, first_run, load_translator

PROG = "python -m translate.infer"

_JSON_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog=PROG,
        description="Translate one sentence per line with a trained run directory.",
        epilog=(
            "Scoring: --reference FILE holds one reference per input line; BLEU and chrF "
            "(sacrebleu, with signatures) are printed on stderr. Add --reference-domains FILE "
            "(parallel to the reference: one comma-separated label list per line, an empty "
            "line for unlabelled) to also score each domain on the lines carrying its label."
        ),
    )
    add_model_arguments(p)
    p.add_argument("--input", metavar="FILE", help="source sentences (default: stdin)")
    p.add_argument("--output", metavar="FILE", help="translations (default: stdout)")
    p.add_argument("--format", choices=("text", "jsonl"), default="text",
                   help="text: one translation per line; jsonl: one JSON object per line with "
                        "score, n-best list, domain tags and probabilities")
    p.add_argument("--attention", action="store_true",
                   help="add each output's attention matrix over the source pieces (jsonl)")
    p.add_argument("--input-format", choices=("text", "html"), default="text",
                   help="text: one sentence per line; html: one HTML document per line, "
                        "answered with its markup kept (docs/html.md)")
    p.add_argument("--whole-file", action="store_true",
                   help="with --input-format html: the whole input is one document, line "
                        "breaks and all, and its translation is written as it comes")
    p.add_argument("--device", default="auto",
                   help="auto (default), cpu, cuda or cuda:N (as train's --device)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "auto", "bf16", "fp16"),
                   help="fp32 (default); bf16 autocast (CPU or CUDA; scores stay fp32); "
                        "fp16 (CUDA); auto: bf16 where the hardware has native bf16")
    p.add_argument("--quantize", action=argparse.BooleanOptionalAction,
                   help="dynamic int8 quantization of LSTM and linear layers (CPU only; "
                        "default: the run's inference.quantize)")
    p.add_argument("--threads", metavar="N", type=non_negative, default=0,
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--shortlist", choices=("on", "off"),
                   help="decode each batch over a vocabulary shortlist learned from the "
                        "training data (default: the run's inference.shortlist, on; a run "
                        "without shortlist.pt uses the whole vocabulary); jsonl scores then "
                        "say scores_over: shortlist")
    p.add_argument("--domain", metavar="LABEL", action="append",
                   help="domain-conditioned models: condition on LABEL (repeatable: an equal "
                        "mixture) instead of the tagger's prediction; 'none': no domain")
    g = p.add_argument_group("search (defaults: the run's inference config)")
    g.add_argument("--beam", metavar="N", type=int, help="beam size; 1 = greedy")
    g.add_argument("--alpha", metavar="X", type=float, help="GNMT length penalty exponent")
    g.add_argument("--n-best", metavar="N", type=int, help="hypotheses per sentence (jsonl)")
    g.add_argument("--max-len-a", metavar="A", type=float, help="max length = A * src_len + B")
    g.add_argument("--max-len-b", metavar="B", type=int, help="max length = A * src_len + B")
    g.add_argument("--min-len", metavar="N", type=int, help="minimum output length in pieces")
    g.add_argument("--no-repeat-ngram", metavar="N", type=int, help="block repeated N-grams")
    g.add_argument("--batch-size", metavar="N", type=int, help="sentences per batch")
    g.add_argument("--workers", metavar="N", type=int,
                   help="CPU batches decoded at once, sharing --threads (faster, more memory)")
    s = p.add_argument_group("scoring")
    s.add_argument("--reference", metavar="FILE", help="reference translations, one per line")
    s.add_argument("--reference-domains", metavar="FILE",
                   help="comma-separated domain labels per reference line (per-domain scores)")
    s.add_argument("--wandb", action="store_true", help="log the scores and every sentence's "
                   "chrF as a W&B evaluation run (needs --reference; offline without a key)")
    return p


def _numbers(numbers: list[int], shown: int = 20) -> str:
    text = ", ".join(str(n) for n in numbers[:shown])
    return text + (f" and {len(numbers) - shown} more" if len(numbers) > shown else "")


def _existing(path: str, what: str) -> Path:
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{what} {p}: is a folder; name a file")
    if not p.is_file():
        raise ConfigError(f"{what} {p}: file not found")
    return p


def _read_file(path: str, what: str) -> bytes:
    return _existing(path, what).read_bytes()


@contextlib.contextmanager
def _report_precision(enabled: bool) -> Iterator[None]:
    """While loading, show the runtime's one line on which precision was chosen and why (on
    stderr); removed afterwards, so the process's logging is left as it was."""
    if not enabled:
        yield
        return
    import logging

    class ToStderr(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            print(f"{PROG.split()[-1]}: {record.getMessage()}", file=sys.stderr)

    logger, handler = logging.getLogger("translate.runtime"), ToStderr()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _warn(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(f"{PROG.split()[-1]}: warning: {message}", file=sys.stderr)


# --------------------------------------------------------------------------- writing


def format_line(result, fmt: str, n_best: int) -> str:
    """One output line (without the newline) for one :class:`Translation`."""
    if fmt == "text":
        return one_line(result.text)
    line = json.dumps(translation_record(result, n_best), ensure_ascii=False)
    for char, escaped in _JSON_BREAKS.items():
        line = line.replace(char, escaped)
    return line


# --------------------------------------------------------------------------- scoring


def score(hyps: list[str], refs: list[str], domains: list[list[str]] | None) -> list[str]:
    """Report lines: corpus BLEU/chrF with signatures, then one line per domain."""
    from translate.tracking.metrics import bleu_chrf

    total = bleu_chrf(hyps, refs)
    out = [f"BLEU {total['bleu']:.2f}  chrF {total['chrf']:.2f}  ({len(hyps)} lines)",
           f"  BLEU signature: {total['bleu_signature']}",
           f"  chrF signature: {total['chrf_signature']}"]
    if domains is not None:
        for label in sorted({d for row in domains for d in row}):
            rows = [i for i, row in enumerate(domains) if label in row]
            r = bleu_chrf([hyps[i] for i in rows], [refs[i] for i in rows])
            out.append(f"domain {label}: BLEU {r['bleu']:.2f}  chrF {r['chrf']:.2f}  "
                       f"({len(rows)} lines)")
    return out


# --------------------------------------------------------------------------- main


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    # Before torch loads (just below): MKL reads its variable then, oneDNN at its first LSTM.
    tuning.apply_process_tuning(inference=True)
    # Imported here, not at the top: --help and usage errors answer without loading torch.
    from tqdm import tqdm

    from translate.runtime import set_threads

    set_threads(args.threads)
    refs = ref_domains = None
    if args.attention and args.format != "jsonl":
        raise ConfigError("--attention needs --format jsonl (text output has no room for it)")
    _check_html_options(args)
    if args.reference_domains and not args.reference:
        raise ConfigError("--reference-domains needs --reference")
    if args.wandb and not args.reference:
        raise ConfigError("--wandb needs --reference (an evaluation run is a scored one)")
    source = args.input or "stdin"
    src_path = _existing(args.input, "--input") if args.input else None
    if args.output:
        check_output(args.output)  # before the model loads
    if args.reference:
        refs, bad_refs = read_lines(_read_file(args.reference, "--reference"))
        if src_path is not None:  # stdin can only be counted once read (checked below)
            _check_reference(args.reference, refs, source, count_lines(src_path))
        if bad_refs:
            _warn(f"{args.reference}: invalid UTF-8 replaced on line(s) {_numbers(bad_refs)}")
        if args.reference_domains:
            rows, _ = read_lines(_read_file(args.reference_domains, "--reference-domains"))
            if len(rows) != len(refs):
                raise ConfigError(f"--reference-domains {args.reference_domains} has "
                                  f"{len(rows)} lines but --reference {args.reference} has "
                                  f"{len(refs)}")
            ref_domains = [[d.strip() for d in row.split(",") if d.strip()] for row in rows]

    model_dir = first_run(args, PROG)
    shortlist = None if args.shortlist is None else args.shortlist == "on"
    with _report_precision(args.precision != "fp32"):
        translator = load_translator(args, quantize=args.quantize, shortlist=shortlist)
    if translator.quantized:  # asked for here or in the run's inference config
        # After loading: what loading and quantizing freed goes back to the OS as usual; the
        # setting is for the buffers search allocates and frees at every step.
        tuning.retain_freed_memory()
    opts = dict(beam=args.beam, alpha=args.alpha, n_best=args.n_best, max_len_a=args.max_len_a,
                max_len_b=args.max_len_b, min_len=args.min_len,
                no_repeat_ngram=args.no_repeat_ngram, batch_size=args.batch_size,
                workers=args.workers)
    resolved = translator.options(**opts)  # bad options fail before any work is done
    opts["domains"] = args.domain
    opts["format"] = args.input_format  # html: a missing parser fails here, before any work
    translator.translate([], **opts)  # and so does a bad --domain (nothing is decoded)
    if resolved.n_best > 1 and args.format == "text":
        _warn("n-best lists are only written with --format jsonl; text shows the best one")

    # Chunks big enough for length-sorted batches, small enough for a live progress bar, a
    # prompt answer in a pipe and bounded memory whatever the input's length. Someone typing
    # at a terminal gets each line back as they enter it.
    chunk = max(resolved.batch_size * 8 * resolved.workers, 256)
    if src_path is None and sys.stdin.isatty():
        chunk = 1
        print(f"{PROG.split()[-1]}: translating each line you type; Ctrl-D ends",
              file=sys.stderr)
    hyps: list[str] | None = [] if refs is not None else None  # text only, for scoring
    srcs: list[str] = []  # for the --wandb sentence table only
    bad = BadLines()
    lines_in = 1 if args.whole_file else count_lines(src_path) if src_path else None
    bar = tqdm(total=lines_in, unit="line", desc="translate", file=sys.stderr,
               disable=None if src_path else True, dynamic_ncols=True)
    with contextlib.ExitStack() as stack:
        stack.callback(bar.close)
        stream = stack.enter_context(src_path.open("rb")) if src_path else sys.stdin.buffer
        if args.output:
            write = stack.enter_context(atomic_output(args.output))
        else:
            write = _stdout_writer()
        done = 0
        chunks = (read_document(stream, bad) if args.whole_file
                  else read_chunks(stream, chunk, bad))
        for lines in chunks:
            def on_warning(i: int, msg: str, start: int = done) -> None:
                _warn(f"line {start + i + 1}: {msg}")

            results = translator.translate(lines, on_warning=on_warning,
                                           attention=args.attention, **opts)
            if args.whole_file and args.format == "text":
                write(results[0].text)  # the document as it comes, line breaks and all
            else:
                write("".join(format_line(r, args.format, resolved.n_best) + "\n"
                              for r in results))
            if hyps is not None:
                hyps.extend(r.text for r in results)
            if args.wandb:
                srcs.extend(lines)
            done += len(results)
            bar.update(len(results))
        if bad.total:
            _warn(f"{source}: invalid UTF-8 replaced on line(s) {bad}")
        if refs is not None and src_path is None:
            _check_reference(args.reference, refs, source, done)
    if refs is not None:
        for line in score(hyps, refs, ref_domains):
            print(line, file=sys.stderr)
    if args.wandb:  # after the output is written: W&B can fail, the translations stay
        from translate.tracking.eval_log import log_evaluation

        log_evaluation(model_dir, srcs, hyps, refs, ref_domains, {
            "checkpoint": args.checkpoint, "input": source, "reference": args.reference,
            "search": vars(resolved),
            "models": [str(p) for p in translator.checkpoint_paths]})
    return 0


def _check_html_options(args: argparse.Namespace) -> None:
    """One line for each option that does not go with ``--input-format``."""
    if args.whole_file and args.input_format != "html":
        raise ConfigError("--whole-file needs --input-format html")
    if args.input_format == "html" and args.attention:
        raise ConfigError("--attention needs --input-format text (an HTML answer is a page, "
                          "not one sentence)")
    if args.whole_file and args.reference:
        raise ConfigError("--reference needs one translation per line, not --whole-file")


def _check_reference(path: str, refs: list[str], source: str, count: int) -> None:
    if len(refs) != count:
        raise ConfigError(f"--reference {path} has {len(refs)} lines but the input {source} "
                          f"has {count}")


def _stdout_writer():
    """Write UTF-8 whatever the locale says, keeping stdout's text layer in sync."""
    buffer = getattr(sys.stdout, "buffer", None)
    if buffer is None:
        return sys.stdout.write

    def write(text: str) -> None:
        sys.stdout.flush()
        buffer.write(text.encode("utf-8"))
        buffer.flush()

    return write


def main(argv: list[str] | None = None) -> None:
    """Entry point; user errors print one line and exit with status 2."""
    run_main(lambda: _run(argv), PROG)


if __name__ == "__main__":
    main()
