"""translate: LSTM neural machine translation (train, translate, benchmark).

One process-wide setting lives here because it must be in place before torch's first CPU
LSTM call, whichever module a program imports first: oneDNN, behind torch's CPU LSTM
kernels, caches up to 1024 compiled primitives by default, one per input shape, and an LSTM
primitive keeps its own scratch memory (several MB). Length-bucketed training batches have
hundreds of distinct (batch, length) shapes, so a 20-minute Multi30k run grew by ~600 MB
(1.76 GB peak RSS) without ever reusing most of them. A cache of 16 kept that run at 1.19 GB;
re-creating primitives took 34 ms over 12 training steps (19 ms with the full cache, out of
~12 s), and step times did not change beyond run-to-run noise. A value the user exported wins.
"""

import os

os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
