"""``python -m translate.serve``: a trained run directory behind HTTP.

What this package owns: the service around a :class:`~translate.inference.translator.Translator`
- the request queue and the one worker thread that owns the model (:mod:`.batcher`), the limits
on what a request may ask (:mod:`.limits`), the Prometheus metrics (:mod:`.prometheus`), the two
APIs (LibreTranslate-compatible ``/translate`` and our ``/v1/translate``) and the page at ``/``
(:mod:`.app`), and the command line (:mod:`.__main__`).

It sits at the top of the package's layering: it may import ``translate.inference`` and
everything below it, and nothing imports it. Its third-party dependencies (FastAPI, uvicorn,
prometheus_client, python-multipart) are the optional extra ``translate[serve]``, so importing
``translate`` never needs them.
"""
