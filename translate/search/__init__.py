"""Decoding a trained model: batched greedy and beam search over the model's one-step API,
the vocabulary shortlist, and the domain rows a conditioned model is decoded with.

Shared by validation during training and by inference, so both decode the same way;
``attention_view`` turns a decoded sentence's attention into the heatmap both show.
May import: ``translate.config``, ``translate.runtime``, ``translate.data``, ``translate.model``,
``translate.tracking`` (the heatmap image).
"""
