"""What training does at each validation and at its end: score, keep, average, test.

:class:`~translate.training.trainer.Trainer` owns the step loop; this mixin owns the decisions
taken on
held-out data (best weights, early stopping, checkpoint averaging, the final test score and
the decoding shortlist), so that the loop can be read without them and the other way round.
It uses the trainer's attributes (``cfg``, ``model``, ``data``, ``run``, ``progress``,
``tracker``, ``thresholds``, ``world_size``, ``backend``) and its ``save_last``.
"""

from __future__ import annotations

import importlib.util
import logging
import time

from translate import config as config_mod
from translate.data.batching import BatchSampler, EncodedSplit
from translate.data.linebreaks import one_line
from translate.runs.checkpoint import average_checkpoints, load_checkpoint, save_checkpoint
from translate.search.shortlist import build_lexical_table
from translate.tracking.dashboard import extremes
from translate.tracking.tracker import say
from translate.training.valid_sample import heatmap_rows, stratified_rows
from translate.training.validation import breakdown_lines, validate

log = logging.getLogger("translate.train")


class EvaluationMixin:
    """Validation, best/averaged weights, the test score and the shortlist of a run."""

    _valid_samples: dict | None = None  # (split, cap) -> its capped rows (_capped)

    # ------------------------------------------------------------------ validation

    def _run_validation(self, name: str, greedy: bool, limit: int = 0,
                        thresholds: list[float] | None = None):
        """Validate on split ``name``: all of it when ``limit`` is 0 or not below its size,
        else ``limit`` rows that keep every domain (:meth:`_capped`)."""
        split = self.data.splits[name]
        if limit and limit < len(split):
            sub, sources, references, domains = self._capped(name, limit)
        else:
            n = len(split)
            sub = EncodedSplit(split.src_ids[:n], split.tgt_ids[:n], split.label_ids[:n],
                               split.n_labels)
            sources, references = self.data.sources[name][:n], self.data.references[name][:n]
            domains = self.data.domains[name][:n]
        tr = self.cfg.training
        batches = BatchSampler(sub.src_lens, sub.tgt_lens, "tokens", tr.max_tokens * 2,
                               tr.batch_size, shuffle=False, seed=tr.seed).batches(0)
        return validate(self.model, sub, sources, references, batches, self.eval_loss_fn,
                        self.data.tokenizer, self.cfg.inference, self.device, self.dtype,
                        num_samples=tr.num_samples, greedy=greedy, thresholds=thresholds,
                        domains=domains, label_names=self.data.labels)

    def _capped(self, name: str, limit: int) -> tuple:
        """``limit`` rows of split ``name`` stratified by domain, with a fixed seed
        (:mod:`translate.training.valid_sample`): (encoded rows, sources, references,
        domains), in the split's order. Drawn and logged once, kept for the next validations
        (a few hundred rows)."""
        if self._valid_samples is None:
            self._valid_samples = {}
        cache = self._valid_samples
        if (name, limit) not in cache:
            split, data = self.data.splits[name], self.data
            sample = stratified_rows(list(data.domains[name]), limit)
            log.info("%s", sample.describe(name))
            rows = sample.rows.tolist()
            sub = EncodedSplit([split.src_ids[i] for i in rows], [split.tgt_ids[i] for i in rows],
                               [split.label_ids[i] for i in rows], split.n_labels)
            cache[name, limit] = (sub, [data.sources[name][i] for i in rows],
                                  [data.references[name][i] for i in rows],
                                  [data.domains[name][i] for i in rows])
        return cache[name, limit]

    def _validate_and_save(self, start: float) -> bool:
        """Validate, save best/last, log; returns True when early stopping triggers."""
        stop = self._validate_and_keep(start)
        self.save_last()
        return stop

    def _validate_and_keep(self, start: float) -> bool:
        """Validate, save best weights, log; True when early stopping triggers.

        Sets ``valid_loss`` (None without a validation split): under DDP the other ranks'
        learning-rate schedule needs it.
        """
        self.valid_loss = None
        if not len(self.data.splits["valid"]):
            return False
        tr, p = self.cfg.training, self.progress
        result = self._run_validation("valid", greedy=True, limit=tr.valid_max_sentences)
        self.thresholds = result.thresholds
        metric = result.metrics[tr.early_stopping_metric]
        better = self._improves(metric)
        if better:
            p.best, p.bad_validations = metric, 0
            self._save_weights(self.run.best_path)
        else:
            p.bad_validations += 1
        self._snapshot()
        self.run.hyps_path.write_text("".join(one_line(h) + "\n" for h in result.hypotheses),
                                      encoding="utf-8")
        self.valid_loss = result.metrics["loss"]
        self.scheduler.step_validation(self.valid_loss)
        elapsed = p.elapsed + time.time() - start
        self.tracker.log({f"valid/{k}": v for k, v in result.metrics.items()}
                         | {"valid/best": p.best, "valid/elapsed_min": elapsed / 60}, p.step)
        self.tracker.log_samples(result.samples, p.step)
        if result.domain_probs is not None:
            self.tracker.log_tagging(result.domain_probs, result.domain_targets,
                                     self.data.labels, p.step)
        self._log_attention()
        say(f"step {p.step}: valid loss {result.metrics['loss']:.3f} "
                   f"ppl {result.metrics['ppl']:.1f} BLEU {result.metrics['bleu']:.2f} "
                   f"chrF {result.metrics['chrf']:.2f}" + (" *" if better else ""))
        for line in breakdown_lines(result):
            say(line)
        if p.step <= tr.valid_every:  # once per run: what the BLEU/chrF numbers mean
            say(f"  sacrebleu: {result.signatures['bleu']} / {result.signatures['chrf']}")
        for sample in result.samples[:2]:
            say(f"  src: {sample['source']}\n  ref: {sample['reference']}\n"
                       f"  hyp: {sample['hypothesis']}")
        return bool(tr.patience) and p.bad_validations >= tr.patience

    def _log_attention(self) -> None:
        """Heatmaps of the greedy output's attention for ``logging.attention_samples``
        validation sentences, drawn across its domains as a capped validation is (the first
        rows would all be the first dev set's) with a fixed seed: the same ones every time,
        so that they can be followed across training. Decoded only when W&B is logging."""
        n = self.cfg.logging.attention_samples
        if not n or not self.tracker.active:
            return
        if importlib.util.find_spec("PIL") is None:
            log.warning("attention heatmaps need pillow (pip install pillow); not logged")
            return
        from translate.search.attention_view import validation_heatmaps

        rows = heatmap_rows(self.data.domains["valid"], n)
        src_ids = self.data.splits["valid"].src_ids
        try:
            images, captions = validation_heatmaps(
                self.model, [src_ids[i] for i in rows], self.data.tokenizer,
                self.cfg.inference, self.device, self.dtype, self.progress.step, rows)
        except Exception as err:  # a dashboard picture must never end a long training
            log.warning("attention heatmaps failed (%s: %s); switched off for this run",
                        type(err).__name__, err)
            self.cfg.logging.attention_samples = 0
            return
        self.tracker.log_images("valid/attention", images, self.progress.step, captions)

    def _improves(self, metric: float) -> bool:
        best = self.progress.best
        if best is None:
            return True
        return metric < best if self.cfg.training.early_stopping_metric == "loss" else metric > best

    def _save_weights(self, path) -> None:
        """Weights and the thresholds tuned for them (inference reads both); no optimizer."""
        save_checkpoint(path, {
            "model": self.model.state_dict(), "config": config_mod.to_dict(self.cfg),
            "thresholds": list(self.thresholds), "progress": vars(self.progress).copy()})

    def _snapshot(self) -> None:
        """Keep the weights of the last ``average_last`` validations for averaging."""
        keep = self.cfg.training.average_last
        if keep < 2:
            return
        save_checkpoint(self.run.snapshot_path(self.progress.step),
                        {"model": self.model.state_dict(), "thresholds": list(self.thresholds)})
        for old in self.run.snapshots()[:-keep]:
            old.unlink()

    def _average(self) -> None:
        """Average the kept snapshots; keep the result only if it validates better than best.

        Written as ``averaged.pt``, which inference prefers, so it must never be worse.
        """
        snapshots = self.run.snapshots()
        if len(snapshots) < 2 or not len(self.data.splits["valid"]):
            return
        best_weights = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(average_checkpoints(snapshots))
        tr = self.cfg.training
        result = self._run_validation("valid", greedy=True, limit=tr.valid_max_sentences)
        metric = result.metrics[tr.early_stopping_metric]
        say(f"average of the last {len(snapshots)} validation checkpoints: valid "
                   f"{tr.early_stopping_metric} {metric:.2f} (best single: {self.progress.best})")
        if self._improves(metric):
            self.progress.best, self.thresholds = metric, result.thresholds
            self._save_weights(self.run.averaged_path)
        else:
            self.model.load_state_dict(best_weights)

    def _finish(self) -> dict:
        """Score the best (or averaged) weights on the test split with beam search."""
        if self.run.best_path.is_file():
            best = load_checkpoint(self.run.best_path, map_location=self.device)
            self.model.load_state_dict(best["model"])
            self.thresholds = list(best["thresholds"])
        self._average()
        p = self.progress
        summary: dict = {"step": p.step, "epochs": p.epoch, "best_valid": p.best,
                         "averaged": self.run.averaged_path.is_file(),
                         "train_minutes": p.elapsed / 60,
                         "tokens_per_s": p.tokens / max(p.elapsed, 1e-9),
                         "truncated": self.data.report["truncated"],
                         "run_dir": str(self.run.root),
                         # processes that trained (torchrun ranks) and their backend
                         "world_size": self.world_size, "backend": self.backend}
        if len(self.data.splits["test"]):
            result = self._run_validation("test", greedy=False,
                                          thresholds=self.thresholds or None)
            (self.run.root / "test_hyps.txt").write_text(
                "".join(one_line(h) + "\n" for h in result.hypotheses), encoding="utf-8")
            summary.update({f"test_{k}": v for k, v in result.metrics.items()})
            summary["signatures"] = result.signatures
            self._log_extremes(result.hypotheses)
            say(f"test: BLEU {result.metrics['bleu']:.2f} chrF "
                       f"{result.metrics['chrf']:.2f} (beam {self.cfg.inference.beam_size})\n"
                       f"  {result.signatures['bleu']}\n  {result.signatures['chrf']}")
            for line in breakdown_lines(result):
                say(line)
        self.tracker.summary(summary)  # also written to summary.json
        self._log_model()
        return summary

    def _log_extremes(self, hyps: list[str]) -> None:
        """The test set's worst and best sentences by chrF, as two W&B tables."""
        k = self.cfg.logging.test_sentences
        if not k or not self.tracker.active:
            return
        worst, best = extremes(self.data.sources["test"], self.data.references["test"], hyps, k)
        self.tracker.log_table("test/worst_sentences", worst, self.progress.step)
        self.tracker.log_table("test/best_sentences", best, self.progress.step)

    def _log_model(self) -> None:
        """The model artifact (``logging.artifacts``), its size in the log."""
        if not self.cfg.logging.artifacts or not self.tracker.active:
            return
        size = self.tracker.log_model()
        if size is not None:
            names = ", ".join(n for _, n in self.run.model_files())
            say(f"wandb: model artifact model-{self.run.read_wandb_id()} ({size / 1e6:.1f} MB: "
                f"{names}), aliases best, latest")

    # ------------------------------------------------------------------ shortlist

    def _write_shortlist(self) -> None:
        """The decoding shortlist's lexical table (:mod:`translate.search.shortlist`), learned from
        the encoded training data and stored in the run directory for inference."""
        t0 = time.perf_counter()
        train, tok = self.data.splits["train"], self.data.tokenizer
        table = build_lexical_table(train.src_ids, train.tgt_ids, tok.src_vocab_size,
                                    tok.tgt_vocab_size)
        self.run.write_shortlist(table.state())
        log.info("shortlist: Dice table over %d training pairs in %.1f s -> %s", len(train),
                 time.perf_counter() - t0, self.run.shortlist_path)
