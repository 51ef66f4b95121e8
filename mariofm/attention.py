"""Self-attention blocks of the UNet, at its lowest resolution: over frames, and over the places of a frame.

A convolution mixes neighbours; these mix every token of a sequence with every other. Both are residual, and both
are `SelfAttention` on tokens read through a LayerNorm plus a sinusoidal position embedding (mariofm.embedding).

    TemporalAttention  the video model (cfg.temporal_attention): H·W sequences of T frames, one per place
    SpatialAttention   the world model (cfg.spatial_attention): T sequences of H·W places, one per frame
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mariofm.embedding import sinusoidal_embedding


class SelfAttention(nn.Module):
    """Multi-head self-attention over sequences (N, L, C): tokens LN(x) + pos, q|k|v from one linear map,
    softmax(q·kᵀ/√d)·v per head of `head_dim` channels (one head when they do not divide C), an output projection."""

    def __init__(self, ch: int, head_dim: int = 32):
        super().__init__()
        self.heads = ch // head_dim if ch % head_dim == 0 else 1
        self.norm = nn.LayerNorm(ch)
        self.qkv = nn.Linear(ch, 3 * ch)
        self.proj = nn.Linear(ch, ch)

    def attend(self, seq: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        n, length, c = seq.shape
        q, k, v = self.qkv(self.norm(seq) + pos.to(seq.dtype)).view(n, length, 3, self.heads, -1).unbind(2)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(out.transpose(1, 2).reshape(n, length, c))


class TemporalAttention(SelfAttention):
    """Self-attention over frames, at every pixel on its own: H·W sequences of T tokens with C features.

    (B, C, T, H, W) -> (B, C, T, H, W), residual. Attention ignores token order, so each frame's token gets a
    sinusoidal embedding of its index; convolutions see a few neighbouring frames, this sees all T of them.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = x.permute(0, 3, 4, 2, 1).reshape(b * h * w, t, c)  # one sequence of T frames per pixel
        pos = sinusoidal_embedding(torch.arange(t, device=x.device), c, scale=1.0)
        return x + self.attend(seq, pos).view(b, h, w, t, c).permute(0, 4, 3, 1, 2)


class SpatialAttention(SelfAttention):
    """Self-attention over the places of each frame on its own: T sequences of H·W tokens with C features.

    (B, C, T, H, W) -> (B, C, T, H, W), residual. A world model's scroll is one decision for the whole frame (a
    wall beside Mario stops it everywhere), but a convolution mostly mixes neighbours: in the shipped world model,
    70% of the input gradient of an output place at a frame's edge comes from within 16 of the 64 columns
    (docs/benchmarks.md section 6). Here every place sees every other. (DIAMOND's Atari net has no attention, but
    it halves 64×64 three times, to 8×8; its CS:GO net has self-attention at its two deepest levels.) Each token
    gets a sinusoidal embedding of its row (the first C/2 features) and its column (the rest), so that "right of
    the middle" can be read. The output projection starts at zero: a net that gains this block starts out
    computing what it computed without it, so it can be fine-tuned from such a model (mariofm.state.ADDED_AT_ZERO).
    """

    def __init__(self, ch: int, head_dim: int = 32):
        super().__init__(ch, head_dim)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        seq = x.permute(0, 2, 3, 4, 1).reshape(b * t, h * w, c)  # one sequence of H·W places per frame
        rows = sinusoidal_embedding(torch.arange(h, device=x.device), c // 2, scale=1.0)
        cols = sinusoidal_embedding(torch.arange(w, device=x.device), c - c // 2, scale=1.0)
        pos = torch.cat([rows[:, None].expand(h, w, -1), cols[None].expand(h, w, -1)], dim=-1).reshape(h * w, c)
        return x + self.attend(seq, pos).view(b, t, h, w, c).permute(0, 4, 1, 2, 3)


__all__ = ["SelfAttention", "TemporalAttention", "SpatialAttention"]
