"""Packed bi-LSTM encoder, attentional LSTM decoder, optional multilabel domain tagger."""

from __future__ import annotations

from translate.model.decoder import DecoderState
from translate.model.seq2seq import EncoderOutput, ModelOutput, Seq2Seq, build_model

__all__ = ["DecoderState", "EncoderOutput", "ModelOutput", "Seq2Seq", "build_model"]
