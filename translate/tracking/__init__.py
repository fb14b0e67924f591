"""What a run reports: the local metrics log, W&B runs, dashboards, scores and media.

``tracker`` (metrics.jsonl, run log, W&B), ``wandb_run`` (the only module that imports wandb),
``metrics`` (sacreBLEU BLEU/chrF with signatures, multilabel F1/mAP), ``dashboard`` (what the
dashboard shows, computed without W&B), ``heatmap`` (attention images), ``eval_log``
(evaluation runs). May import: ``translate.config``, ``translate.runs``, ``translate.errors``.
"""
