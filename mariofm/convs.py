"""The convolutions and the norm a video UNet is built from, one per way of treating the frames.

    make_conv(in_ch, out_ch, "3d")    # 3x3x3: space and time at once, 27·in·out weights
    make_conv(in_ch, out_ch, "2+1d")  # 1x3x3 over space, then TemporalConv (3x1x1) over time (Tran et al. 2018)
    make_conv(in_ch, out_ch, "2d")    # 1x3x3 alone: frames never mix (the world model's per-frame net)
    group_norm(ch)                    # GroupNorm with up to 32 groups; FrameGroupNorm: the same per frame

mariofm.unet builds its blocks from these (cfg.conv picks the kind); with conv="2d" it swaps in FrameConv and
FrameGroupNorm, the same weights run frame by frame.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def group_norm(ch: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (at most 32) that divide `ch`: 8 -> 8 groups, 96 -> 32, 3 -> 1."""
    return nn.GroupNorm(math.gcd(32, ch), ch)


class TemporalConv(nn.Conv2d):
    """A 3x1x1 conv over time with padding 1: (B, C, T, H, W) -> (B, C, T, H, W).

    Run as a (3, 1) Conv2d on the view (B, C, T, H·W): the same sums over the same weights, and on the CPU
    oneDNN's 2D kernels are faster than Conv3d's for a kernel this thin (measure it with benchmarks/).
    It starts as the identity, so at init the "2+1d" net is an image model applied to each frame, and it
    learns how much to mix neighbouring frames (as in lucidrains' make-a-video).
    """

    def __init__(self, ch: int):
        super().__init__(ch, ch, (3, 1), padding=(1, 0))
        nn.init.dirac_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return super().forward(x.reshape(b, c, t, h * w)).view(b, -1, t, h, w)


class FrameConv(nn.Conv3d):
    """A Conv3d with a 1 x k x k kernel, run as a Conv2d over the B·T frames: the same weights and sums, but
    oneDNN's 2D kernel made a world-cpu forward pass (T = 1, batch 1, 1 thread, torch 2.13) 1.2-1.4x faster
    (min / median of 30 interleaved calls). VideoUNet turns its 1 x k x k convs into these when conv="2d"."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), self.weight[:, :, 0], self.bias, self.stride[1:],
                     self.padding[1:])
        return y.view(b, t, *y.shape[1:]).transpose(1, 2)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over each frame on its own: (B, C, T, H, W) normalised as B·T images of (C, H, W).

    A plain GroupNorm pools its mean and variance over all T frames, so with T > 1 every frame's output would
    depend on the others. The "2d" net promises that frames never mix, so it normalises them one at a time; the
    parameters are GroupNorm's own (same state dict), and with T = 1 (the world model) it is plain GroupNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = F.group_norm(x.transpose(1, 2).reshape(b * t, c, h, w), self.num_groups, self.weight, self.bias,
                         self.eps)
        return y.view(b, t, c, h, w).transpose(1, 2)


def make_conv(in_ch: int, out_ch: int, kind: str) -> nn.Module:
    """A 3x3x3 conv ("3d", 27·in·out weights) or its factorised stand-in ("2+1d", 9·in·out + 3·out·out):
    1x3x3 over space, then 3x1x1 over time; "2d" is the 1x3x3 alone (frames never mix: the world model's
    per-frame net). Padding keeps (T, H, W)."""
    if kind == "3d":
        return nn.Conv3d(in_ch, out_ch, 3, padding=1)
    if kind == "2d":
        return nn.Conv3d(in_ch, out_ch, (1, 3, 3), padding=(0, 1, 1))
    return nn.Sequential(nn.Conv3d(in_ch, out_ch, (1, 3, 3), padding=(0, 1, 1)), TemporalConv(out_ch))


__all__ = ["group_norm", "TemporalConv", "FrameConv", "FrameGroupNorm", "make_conv"]
