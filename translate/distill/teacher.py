"""The translate stage: the teacher's beam search over every training source line.

The teacher is one trained run or an ensemble of several (decoded as one:
:mod:`translate.search.ensemble`). The sources are the student config's ``data.train``
(normally the teacher's own training sources), read as the data pipeline reads them
(:func:`translate.data.sources.source_tables`: text files a block at a time, each source's
``domains`` on its rows) and cut into chunks of ``distill.chunk_lines`` lines, so memory
stays bounded by one chunk whatever the corpus' size. Each chunk goes through
:meth:`Translator.translate` (batched, length-sorted beam search on the teacher's device and
precision, empty lines kept empty, over-long lines translated in pieces) and is written
whole (:class:`~translate.distill.store.Store`).

Under torchrun each process translates every ``world_size``-th chunk on its own device;
rank 0 publishes the corpus once all chunks are there.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from translate import config as config_mod
from translate.config import Config
from translate.data.sources import describe, input_files, source_tables
from translate.distill.store import DistillError, Group, Store
from translate.inference.run_loading import checkpoint_path
from translate.runs.rundir import RunDir
from translate.training.distributed import Rank

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0  # how often rank 0 looks for the other processes' chunks


@dataclass(frozen=True)
class Search:
    """The teacher's search as the distilled corpus is made with it."""

    beam_size: int
    batch_size: int
    device: str
    precision: str
    shortlist: bool
    select: str  # "best" (the top hypothesis) or "closest" (to the reference)


def search_for(teacher_cfg: Config, cfg: Config) -> Search:
    """``distill.*`` where set, else the teacher run's own settings."""
    d = cfg.distill
    return Search(
        beam_size=d.beam_size if d.beam_size is not None else teacher_cfg.inference.beam_size,
        batch_size=d.batch_size if d.batch_size is not None else teacher_cfg.inference.batch_size,
        device=d.device if d.device is not None else teacher_cfg.training.device,
        precision=d.precision if d.precision is not None else teacher_cfg.training.precision,
        shortlist=teacher_cfg.inference.shortlist, select=d.select)


def closest(nbest: list[tuple[str, float]], reference: str) -> str:
    """The hypothesis of ``nbest`` (best first) with the highest sentence BLEU against
    ``reference`` (sacrebleu, exponential smoothing, as Kim & Rush's sequence-level
    interpolation); the earlier, higher-scoring one on a tie, and the top one when the
    reference is empty (nothing to be close to)."""
    if not nbest:
        return ""
    if not reference.strip():
        return nbest[0][0]
    metric = _sentence_bleu()
    scores = [metric.sentence_score(text, [reference]).score for text, _ in nbest]
    return nbest[scores.index(max(scores))][0]


@functools.cache
def _sentence_bleu():
    """sacrebleu.sentence_bleu's metric, built once: it builds one per call, which for the
    n-best of every training line cost more than the scoring (2.5x on 6,000 calls)."""
    from sacrebleu.metrics import BLEU

    return BLEU(effective_order=True)


def _file_key(path: Path) -> list:
    try:
        st = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def settings_key(teachers: list[Path], search: Search, cfg: Config) -> dict:
    """What the chunks depend on: a restart with anything else is refused."""
    keys = [_file_key(checkpoint_path(RunDir(t), "auto")) for t in teachers]
    return {
        "teacher_checkpoint": keys[0] if len(keys) == 1 else keys,
        "search": vars(search),
        "languages": [cfg.data.src_lang, cfg.data.tgt_lang],
        "sources": [[describe(s), s.max_pairs, sorted(s.domains),
                     [_file_key(p) for p in input_files(s, cfg.data.src_lang, cfg.data.tgt_lang)]]
                    for s in cfg.data.train],
        "chunk_lines": cfg.distill.chunk_lines,
    }


def source_chunks(cfg: Config, size: int, say: Callable[[str], None]
                  ) -> Iterator[tuple[list[str], list[str], list[list[str]]]]:
    """(sources, references, labels) of every ``data.train`` line, in order, in lists of
    ``size`` (the last may be shorter); a chunk may span two sources."""
    src: list[str] = []
    ref: list[str] = []
    doms: list[list[str]] = []
    for source in cfg.data.train:
        info: dict = {}
        for table in source_tables(source, cfg.data.src_lang, cfg.data.tgt_lang, info,
                                   log=say, rows=size):
            src.extend("" if s is None else s for s in table.column("src").to_pylist())
            ref.extend("" if t is None else t for t in table.column("tgt").to_pylist())
            doms.extend(sorted(d or []) for d in table.column("domains").to_pylist())
            while len(src) >= size:
                yield src[:size], ref[:size], doms[:size]
                del src[:size], ref[:size], doms[:size]
    if src:
        yield src, ref, doms


def total_lines(cfg: Config) -> int | None:
    """Lines to translate, when every source is a text file (counted without reading it
    into memory); None otherwise (the progress bar then counts up without a total)."""
    from translate.inference.infer_io import count_lines

    total = 0
    for s in cfg.data.train:
        if s.kind != "text":
            return None
        n = count_lines(Path(f"{s.prefix}.{cfg.data.src_lang}"))
        total += min(n, s.max_pairs) if s.max_pairs else n
    return total


def translate(teachers: list[Path], cfg: Config, store: Store,
              rank: Rank | None = None) -> list[Group]:
    """Translate what is missing with the teacher (several: their ensemble), publish the
    corpus (rank 0) and return its groups."""
    rank = rank or Rank()
    if not cfg.data.train:
        raise DistillError("data.train: the distilled corpus is made from the training "
                           "sources; data.unsplit sources are not supported (give them as "
                           "data.train, with explicit valid and test sources)")
    teacher_cfg = config_mod.load(RunDir(teachers[0]).config_path)
    search = search_for(teacher_cfg, cfg)
    manifest = store.begin(settings_key(teachers, search, cfg))
    if manifest.get("complete"):
        log.info("distill: %s already holds the complete distilled corpus (%d lines)",
                 store.root, manifest["rows"])
        return store.groups()
    size = cfg.distill.chunk_lines
    translator = None
    total = total_lines(cfg)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="line", desc="distill: translate", file=sys.stderr,
               dynamic_ncols=True, disable=None)
    rows = n_chunks = new = 0
    start = time.perf_counter()
    warned = 0
    try:
        for k, (src, ref, doms) in enumerate(source_chunks(cfg, size, log.info)):
            rows += len(src)
            n_chunks = k + 1
            if k % rank.world_size != rank.rank or store.has_chunk(k):
                bar.update(len(src))
                continue
            if translator is None:
                translator = _load(teachers, search, rank)
            n_best = search.beam_size if search.select == "closest" else 1
            results = translator.translate(src, beam=search.beam_size,
                                           batch_size=search.batch_size, n_best=n_best)
            warned += sum(bool(r.warnings) for r in results)
            hyps = [closest(r.nbest, t) if n_best > 1 else r.text
                    for r, t in zip(results, ref, strict=True)]
            store.write_chunk(k, src, hyps, ref, doms)
            new += len(src)
            bar.update(len(src))
            rate = new / max(time.perf_counter() - start, 1e-9)
            log.info("distill: chunk %d written (%d lines so far%s, %.1f lines/s)", k, rows,
                     f" of {total}" if total else "", rate)
    finally:
        bar.close()
    if warned:
        log.warning("distill: %d source lines were longer than the teacher's limit and "
                    "translated in pieces", warned)
    if not rank.is_main:
        _wait_complete(store)
        return store.groups()
    _wait_chunks(store, n_chunks)
    groups = store.publish(n_chunks, rows, cfg.data.src_lang, cfg.data.tgt_lang)
    log.info("distill: %d lines in %d file pair(s) under %s", rows, len(groups),
             store.corpus_dir)
    return groups


def _load(teachers: list[Path], search: Search, rank: Rank):
    from translate.inference.translator import Translator
    from translate.runtime import resolve_device
    from translate.training.distributed import rank_device

    device = rank_device(resolve_device(search.device), rank)
    translator = Translator.load(teachers if len(teachers) > 1 else teachers[0],
                                 device=str(device), precision=search.precision,
                                 shortlist=search.shortlist, beam=search.beam_size)
    log.info("distill: teacher %s on %s, %s, beam %d, batches of %d",
             " + ".join(str(p) for p in translator.checkpoint_paths), device,
             translator.dtype, search.beam_size, search.batch_size)
    return translator


def _wait_chunks(store: Store, n_chunks: int) -> None:
    """Rank 0: wait for the chunks the other processes translate."""
    while missing := [k for k in range(n_chunks) if not store.has_chunk(k)]:
        log.info("distill: waiting for %d chunk(s) from the other processes", len(missing))
        time.sleep(POLL_SECONDS)


def _wait_complete(store: Store) -> None:
    """The other ranks: wait until rank 0 has published the corpus."""
    while not (store.read_manifest() or {}).get("complete"):
        time.sleep(POLL_SECONDS)
