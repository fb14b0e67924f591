"""Inference: ``Translator`` (load a run, translate, score, n-best, tags), long-input
segmentation and the streaming I/O of ``python -m translate.infer``.

May import: ``translate.config``, ``translate.runtime``, ``translate.data``, ``translate.model``,
``translate.runs``, ``translate.tracking``, ``translate.search``. Never ``translate.training``.
"""
