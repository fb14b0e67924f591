"""translate: LSTM neural machine translation (train, translate, benchmark).

One process-wide setting lives here because it must be in place before torch's first CPU
LSTM call, whichever module a program imports first: oneDNN, behind torch's CPU LSTM
kernels, caches up to 1024 compiled primitives by default, one per input shape, and an LSTM
primitive keeps its own scratch memory (several MB). Length-bucketed training batches have
hundreds of distinct (batch, length) shapes, so a 20-minute Multi30k run grew by ~600 MB
(1.76 GB peak RSS) without ever reusing most of them. A cache of 16 keeps memory flat;
re-creating a primitive costs within run-to-run noise of a step (0.99 vs 1.02 s per step with
no cache vs the default one). A value the user exported wins.
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
