"""The one place a padding mask is made from sequence lengths.

Why a module of its own: both the batching code (``collate`` builds ``src_mask`` and
``tgt_mask``) and the model (``Seq2Seq.encode`` when a caller gives only lengths) need the
same mask. The flow is one-directional — batches are built before the model runs and the
model knows nothing of the data side — so neither may import the other for it; both import
this leaf, which depends on torch alone.

Masks always come from lengths, never from token ids: pad is 3 and unk is 0, and a real unk
token must never be masked (the classic ``ids != 0`` bug cannot happen here).
"""

from __future__ import annotations

import torch
from torch import Tensor


def lengths_to_mask(lengths: Tensor, max_len: int, device: torch.device | None = None) -> Tensor:
    """``[B]`` lengths → ``[B, max_len]`` bool mask, True on real positions.

    ``device`` (default: the lengths' device) lets a caller keep the lengths on the CPU, as
    ``pack_padded_sequence`` wants them, and still get the mask beside the GPU tokens.
    """
    device = lengths.device if device is None else device
    return torch.arange(max_len, device=device)[None, :] < lengths.to(device)[:, None]
