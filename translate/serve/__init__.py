"""``python -m translate.serve``: trained run directories behind HTTP.

What this package owns, one module a concern, the flow pointing one way (the APIs read
bodies and call the service; the service detects, routes and queues sentences on a model's
batcher; the batcher's workers call the model):

* :mod:`.app`: the FastAPI app, assembled from the modules below; CORS, health, readiness;
* :mod:`.bodies`: reading a request's fields (JSON, form fields, query string) and answering
  every refusal as ``{"error": "one line"}``;
* :mod:`.libre`: LibreTranslate's API; :mod:`.files`: its file translation; :mod:`.v1`: our
  ``/v1`` API; :mod:`.page`: the page;
* :mod:`.service`: what their handlers share, and a request's way to the models: language
  detection (:mod:`.detect`), routes and pivots, HTML documents (:mod:`.markup`), keys and
  rate limits (:mod:`.keys`, :mod:`.ratelimit`);
* :mod:`.registry`: the models (:mod:`.specs`: what each ``--model`` names), their pairs and
  pivots, loading and unloading;
* :mod:`.batcher`: the queue and the workers that own a loaded model (:mod:`.worker`,
  :mod:`.process`);
* :mod:`.limits`: what a request may ask; :mod:`.prometheus`: the metrics;
  :mod:`.languages`: language names;
* :mod:`.__main__`: the command line.

It sits at the top of the package's layering: it may import ``translate.inference`` and
everything below it, and nothing imports it. Its third-party dependencies are the optional
extra ``translate[serve]``, so importing ``translate`` never needs them.
"""
