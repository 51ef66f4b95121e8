"""The sinusoidal embedding: a number on a line -> features a net can tell apart.

The UNet embeds the flow time t with it (mariofm.unet); its attention blocks embed a frame's index, a row and a
column with it (mariofm.attention), because attention by itself ignores where a token sits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """(N,) -> (N, dim): [sin(s·t·ω_k), cos(s·t·ω_k)], ω_k = 10000^(-k/(dim/2)), k = 0 .. dim/2 - 1.

    These are the Transformer/DDPM frequencies, made for inputs 0..1000 (step numbers). Our t lives in [0, 1],
    where even the fastest one (ω_0 = 1) turns less than a radian and every feature is nearly linear in t:
    t = 0.50 and t = 0.51 would look alike. The scale s = 1000 restores the range the frequencies were made for,
    so fast features tell close times apart while slow ones say roughly where t is. VideoUNet passes
    cfg.time_scale (1000 by default); docs/benchmarks.md compares 50, which makes v_θ smoother in t.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = scale * t.float()[:, None] * freqs[None, :]
    return F.pad(torch.cat([angles.sin(), angles.cos()], dim=1), (0, dim % 2))  # odd dim: one zero column


__all__ = ["sinusoidal_embedding"]
