"""Sequence-level knowledge distillation (Kim & Rush 2016): ``python -m translate.distill``.

A trained teacher translates the training sources with its beam search; a smaller student is
then trained on those translations with the normal trainer, reusing the teacher's tokenizer,
and decoded greedily. This package owns that recipe and nothing else:

* :mod:`translate.distill.store`: the distilled corpus on disk (chunks written atomically,
  the manifest that makes a restart continue exactly, the published parallel text files);
* :mod:`translate.distill.teacher`: the translate stage (streams the sources through a
  :class:`~translate.inference.translator.Translator`, memory bounded by one chunk);
* :mod:`translate.distill.student`: the train stage (the student's config, the teacher's
  tokenizer, :class:`~translate.training.trainer.Trainer`);
* :mod:`translate.distill.pipeline` and ``__main__``: the command.

It sits at the top of the layout: it may import :mod:`translate.inference`,
:mod:`translate.training` and everything below them; nothing in ``translate`` imports it.
"""
