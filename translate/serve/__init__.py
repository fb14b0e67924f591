"""``python -m translate.serve``: trained run directories behind HTTP.

What this package owns, one module a concern, the flow pointing one way (the APIs read
bodies and call the service; the service queues sentences on a model's batcher; the batcher
calls the translator):

* :mod:`.app`: the FastAPI app, assembled from the modules below; health and readiness;
* :mod:`.bodies`: reading a request's fields (JSON, form fields, query string) and answering
  every refusal as ``{"error": "one line"}``;
* :mod:`.libre`: LibreTranslate's API; :mod:`.v1`: our ``/v1`` API; :mod:`.page`: the page;
* :mod:`.service`: what their handlers share, and a request's way to the model;
* :mod:`.batcher`: the request queue and the worker that owns a model;
* :mod:`.limits`: what a request may ask; :mod:`.prometheus`: the metrics;
* :mod:`.__main__`: the command line.

It sits at the top of the package's layering: it may import ``translate.inference`` and
everything below it, and nothing imports it. Its third-party dependencies (FastAPI, uvicorn,
prometheus_client, python-multipart) are the optional extra ``translate[serve]``, so importing
``translate`` never needs them.
"""
