"""Input-feeding decoder recurrence as one autograd node with a hand-written backward.

Why: with input feeding every target step depends on the previous step's attentional vector,
so the LSTM, the attention and ``h~ = tanh(W_c [context; h])`` run in a Python loop over
target positions. Under plain autograd every step records its own GEMMs, and the backward
computes each weight gradient as T small ``[4H, B] x [B, in]`` products plus T in-place
accumulations — a large share of the recurrent GEMM time on CPU, at poor efficiency because
B (the sentences in a batch) is a small dimension. Here the forward keeps each step's inputs in
time-major buffers, the backward runs the recurrence in reverse for the *data* gradients only,
and every *weight* gradient (``W_l``, ``W_c``, the attention keys) is one large GEMM over all
``T·B`` rows at the end — the way cuDNN's fused RNNs do it.

Scope: Luong ``dot`` / ``general`` attention (scores ``h · K`` with ``K`` the keys or their
cached projection), any number of layers, inter-layer and output dropout given as masks.
Same math as :meth:`translate.model.decoder.Decoder._feed_step` + ``_attend``; the tests check
values and gradients against that autograd path.
"""

from __future__ import annotations

import torch


class FeedRecurrence(torch.autograd.Function):
    """``vecs [B, T, H], attn [B, T, S] = f(pre0, h0, c0, feed0, K, V, W_c, *W_l, *b_l)``.

    - ``pre0 [T, B, 4H]``: layer 0's gates from the embeddings, bias included.
    - ``h0, c0 [L, B, H]``, ``feed0 [B, H]``: initial states and input feed.
    - ``score_keys [B, S, H]`` (``K``: keys for dot, projected keys for general),
      ``values [B, S, Dk]`` (encoder states), ``pad [B, S]`` bool, True on padding.
    - ``w_comb [H, Dk + H]``: the ``combine`` weight.
    - ``drop_mid [L-1, T, B, H]`` / ``drop_out [T, B, H]``: scaled dropout masks, or None.
    - ``W_0 .. W_{L-1}`` then ``b_1 .. b_{L-1}``: per layer ``[4H, H_in + H]``
      (``[W_ih | W_hh]``, layer 0 without its embedding columns) and the summed biases
      (layer 0's bias is already in ``pre0``).
    """

    @staticmethod
    def forward(ctx, pre0, h0, c0, feed0, score_keys, values, pad, w_comb, drop_mid, drop_out,
                *weights):
        n_layers = (len(weights) + 1) // 2
        w_rec, biases = weights[:n_layers], (None, *weights[n_layers:])
        steps, batch, four_h = pre0.shape
        hid = four_h // 4
        src_len, dk = values.size(1), values.size(2)
        new = pre0.new_empty
        # Per layer: [x_t; h_{t-1}] rows (the GEMM input, reused for dW), gate activations
        # (i, f, o after sigmoid, g after tanh) and cell states c_{-1..T-1}.
        xs = [new(steps, batch, w.size(1)) for w in w_rec]
        acts = [new(steps, batch, four_h) for _ in w_rec]
        cs = [new(steps + 1, batch, hid) for _ in w_rec]
        comb_in = new(steps, batch, dk + hid)  # [context; h_top]
        att = new(steps, batch, hid)  # tanh(W_c [context; h_top]) before dropout
        vecs = new(batch, steps, hid)
        attn = new(batch, steps, src_len)
        keys_t = score_keys.transpose(1, 2)  # [B, H, S]
        hs = list(h0.unbind(0))
        for layer in range(n_layers):
            cs[layer][0] = c0[layer]
        feed = feed0
        for t in range(steps):
            x = feed
            for layer in range(n_layers):
                buf = xs[layer][t]
                buf[:, : x.size(1)] = x
                buf[:, x.size(1):] = hs[layer]
                base = pre0[t] if layer == 0 else biases[layer]
                gates = torch.addmm(base, buf, w_rec[layer].t(), out=acts[layer][t])
                gates[:, : 2 * hid].sigmoid_()
                gates[:, 2 * hid: 3 * hid].tanh_()
                gates[:, 3 * hid:].sigmoid_()
                i, f, g, o = gates.chunk(4, dim=1)
                c = torch.addcmul(f * cs[layer][t], i, g, out=cs[layer][t + 1])
                hs[layer] = o * torch.tanh(c)
                x = hs[layer]
                if layer < n_layers - 1 and drop_mid is not None:
                    x = x * drop_mid[layer, t]
            top = hs[-1]
            scores = torch.bmm(top.unsqueeze(1), keys_t).squeeze(1)
            scores.masked_fill_(pad, torch.finfo(scores.dtype).min)
            weights_t = torch.softmax(scores, dim=-1)
            attn[:, t] = weights_t
            ci = comb_in[t]
            ci[:, :dk] = torch.bmm(weights_t.unsqueeze(1), values).squeeze(1)
            ci[:, dk:] = top
            a = torch.mm(ci, w_comb.t(), out=att[t]).tanh_()
            feed = a if drop_out is None else a * drop_out[t]
            vecs[:, t] = feed
        ctx.save_for_backward(pre0, feed0, score_keys, values, w_comb, drop_mid, drop_out,
                              attn, comb_in, att, *xs, *acts, *cs, *w_rec)
        ctx.n_layers = n_layers
        return vecs, attn

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_vecs, grad_attn):
        n_layers = ctx.n_layers
        pre0, feed0, score_keys, values, w_comb, drop_mid, drop_out, attn, comb_in, att = \
            ctx.saved_tensors[:10]
        rest = ctx.saved_tensors[10:]
        xs, acts = rest[:n_layers], rest[n_layers: 2 * n_layers]
        cs, w_rec = rest[2 * n_layers: 3 * n_layers], rest[3 * n_layers:]
        steps, batch, four_h = pre0.shape
        hid = four_h // 4
        dk = values.size(2)
        new = pre0.new_empty
        d_gates = [new(steps, batch, four_h) for _ in range(n_layers)]
        d_att = new(steps, batch, hid)  # gradient at W_c's output (before tanh's output)
        d_ctx = new(batch, steps, dk)
        d_scores = new(batch, steps, values.size(1))
        dh = [pre0.new_zeros(batch, hid) for _ in range(n_layers)]
        dc = [pre0.new_zeros(batch, hid) for _ in range(n_layers)]
        d_feed = pre0.new_zeros(batch, feed0.size(1))
        for t in reversed(range(steps)):
            g_out = grad_vecs[:, t] + d_feed
            if drop_out is not None:
                g_out = g_out * drop_out[t]
            a = att[t]
            d_pre = torch.mul(g_out, 1 - a * a, out=d_att[t])
            d_comb = torch.mm(d_pre, w_comb)  # [B, Dk + H]
            d_ctx[:, t] = d_comb[:, :dk]
            d_top = d_comb[:, dk:]
            w_t = attn[:, t]
            d_w = torch.bmm(values, d_comb[:, :dk].unsqueeze(2)).squeeze(2)  # [B, S]
            if grad_attn is not None:
                d_w = d_w + grad_attn[:, t]
            d_s = w_t * (d_w - (d_w * w_t).sum(-1, keepdim=True))
            d_scores[:, t] = d_s
            d_x = d_top + torch.bmm(d_s.unsqueeze(1), score_keys).squeeze(1)
            for layer in reversed(range(n_layers)):
                g = dh[layer] + d_x
                gates = acts[layer][t]
                i, f, gg, o = gates.chunk(4, dim=1)
                c = cs[layer][t + 1]
                tc = torch.tanh(c)
                d_c = dc[layer] + g * o * (1 - tc * tc)
                dg = d_gates[layer][t]
                di, df, dgg, do = dg.chunk(4, dim=1)
                torch.mul(d_c * gg, i * (1 - i), out=di)
                torch.mul(d_c * cs[layer][t], f * (1 - f), out=df)
                torch.mul(d_c * i, 1 - gg * gg, out=dgg)
                torch.mul(g * tc, o * (1 - o), out=do)
                dc[layer] = d_c * f
                d_in = torch.mm(dg, w_rec[layer])  # [B, H_in + H]
                in_dim = d_in.size(1) - hid
                dh[layer] = d_in[:, in_dim:]
                d_x = d_in[:, :in_dim]
                if layer > 0 and drop_mid is not None:
                    d_x = d_x * drop_mid[layer - 1, t]
            d_feed = d_x
        rows = steps * batch
        grads_w = [d_gates[layer].view(rows, four_h).t().mm(xs[layer].view(rows, -1))
                   for layer in range(n_layers)]
        grads_b = [d_gates[layer].view(rows, four_h).sum(0) for layer in range(1, n_layers)]
        d_w_comb = d_att.view(rows, hid).t().mm(comb_in.view(rows, -1))
        # context = Σ_s w_s V_s → dV = Wᵀ dC; scores = h · K_s → dK = dSᵀ h_top
        d_values = torch.bmm(attn.transpose(1, 2), d_ctx)
        h_top = comb_in[:, :, dk:].transpose(0, 1)  # [B, T, H]
        d_keys = torch.bmm(d_scores.transpose(1, 2), h_top)
        d_h0 = torch.stack(dh)
        d_c0 = torch.stack(dc)
        return (d_gates[0], d_h0, d_c0, d_feed, d_keys, d_values, None, d_w_comb, None, None,
                *grads_w, *grads_b)
