"""The network: packed bi-LSTM encoder, attentional LSTM decoder (teacher forcing and the
one-step API search uses), the multilabel domain tagger and domain conditioning.

Tensors in, tensors out: it knows nothing of files, run directories, W&B or the command line.
May import: ``translate.config``, ``translate.masks``, ``translate.errors``.
"""

from __future__ import annotations

from translate.model.decoder import DecoderState
from translate.model.seq2seq import EncoderOutput, ModelOutput, Seq2Seq, build_model

__all__ = ["DecoderState", "EncoderOutput", "ModelOutput", "Seq2Seq", "build_model"]
