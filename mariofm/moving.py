"""The pixels the camera does not explain: what a world model's loss can weigh more (cfg.moving_weight = α).

    python -m mariofm train --init mariofm/checkpoints/mariofm_world.safetensors --set moving_weight=8

Most of a Super Mario Bros. frame is the frame before it moved by the camera: sky, ground, pipes. What is left,
about 1.2% of the pixels at 60×64, is what the game is about: Mario, the enemies, a block he hits. A plain MSE
weighs each pixel alike, so the net spends most of its effort on the easy 99%: one step ahead, the shipped world
model beats the frame before by 3.8 dB on the pixels the camera explains and by 1.4 dB on the others, which hold
19% of its squared error (96 held-out starts; docs/benchmarks.md section 6).

The moving pixels m of a frame x given the frame p before it:

    s*      = the camera's move from p to x (mariofm.metrics.scroll_stats: the integer shift that fits best)
    m(i, j) = 1 if x(i, j) is further than `MOVING_THRESHOLD` (in its furthest colour) from p moved by every
              shift between s* − 1 and s* + 1 in quarter pixels (a blend of two whole shifts); else 0.
              The HUD does not move with the camera: it is compared unmoved. The columns at the edge that the
              camera may have brought in (those with no counterpart at one of these shifts) have nothing to be
              compared with; they get m = 0, because they exist only when the camera moves.

and the loss weighs each pixel of the next frame w = 1 + α·m: the w-weighted mean of the squared velocity error
(mariofm.flow.fm_loss, `weight`). Which two frames give m matters (cfg.moving_from):

    "target"   p = the real frame before the target, x = the target. Because w then depends on the target, the
               minimiser at each pixel is no longer the mean of the futures, E[v* | x_t, c], but
               E[w·v* | x_t, c] / E[w | x_t, c]: it leans toward the futures in which that pixel moves. Measured
               (docs/benchmarks.md section 6, eleventh): sprite-coloured specks all over the rollouts.
    "context"  p, x = the last two context frames the model reads, m widened by SPREAD pixels (where a sprite that
               moved may be next). A weight that depends only on what the model reads leaves the minimiser
               E[v* | x_t, c] where it is and only shares the net's capacity out differently.

The weight comes from frames, not from the model's output, so it carries no gradient. The same idea as the
foreground- or motion-weighted losses of video prediction.
"""

from __future__ import annotations

import torch

from mariofm.metrics import hud_height, scroll_stats
from mariofm.video import to_uint8

MOVING_THRESHOLD = 24 / 127.5  # 24 of 255 levels, in [-1, 1] units
BLENDS = (0.0, 0.25, 0.5, 0.75)  # the fractions of a pixel tried between two whole shifts
SPREAD = 2  # moving_from="context": pixels around a sprite that moved weigh as much (where it may be next)
FAR = 1e4  # what stands where a moved frame has no counterpart (the columns the camera brings in)


def shifted(frame: torch.Tensor, s: int) -> torch.Tensor:
    """(C, H, W) moved as a camera move of s pixels to the right moves it: out[:, :, x] = frame[:, :, x + s]."""
    out = torch.full_like(frame, FAR)
    w = frame.shape[-1]
    if s >= 0:
        out[..., : w - s] = frame[..., s:]
    else:
        out[..., -s:] = frame[..., : w + s]
    return out


def moving_pixels(before: torch.Tensor, after: torch.Tensor, threshold: float = MOVING_THRESHOLD) -> torch.Tensor:
    """m: (B, 1, H, W), 1.0 where the frame `after` (B, 3, H, W) in [-1, 1] is not the frame `before` moved by the
    camera (see the module docstring), 0.0 elsewhere."""
    if before.shape != after.shape or before.ndim != 4:
        raise ValueError(f"before {tuple(before.shape)} and after {tuple(after.shape)} must both be (B, 3, H, W)")
    shift = scroll_stats(to_uint8(torch.stack([before, after], dim=2).detach()))["shift"][:, 0]
    hud = hud_height(after.shape[-2])
    error = torch.empty_like(after[:, :1])
    for i, s in enumerate(shift.tolist()):
        # the game scrolls by whole pixels of 256, a fraction of a pixel at 60x64, where a moved frame is a blend
        # of two whole shifts (area resizing is linear): try the blends around the best whole shift
        a, b, c = (shifted(before[i], s + d) for d in (-1, 0, 1))
        tries = [(1 - f) * lo + f * hi for lo, hi in ((a, b), (b, c)) for f in BLENDS] + [c]
        error[i] = torch.stack([(after[i] - x).abs().amax(0, keepdim=True) for x in tries]).amin(0)
        error[i, :, :, ((a == FAR) | (c == FAR))[0, 0]] = 0  # what the camera may have brought in: nothing to compare
    error[:, :, :hud] = (after - before)[:, :, :hud].abs().amax(1, keepdim=True)  # the HUD does not move
    return (error > threshold).to(after.dtype)


def loss_weight(frames: torch.Tensor, alpha: float, spread: int = 0) -> torch.Tensor:
    """w = 1 + α·m: (B, 1, 1, H, W), m the moving pixels from the second last to the last of `frames`
    (B, 3, T, H, W), each widened by `spread` pixels on every side (a max over a (2·spread + 1)² square); it
    broadcasts over a next frame's channels."""
    m = moving_pixels(frames[:, :, -2], frames[:, :, -1])
    if spread:
        m = torch.nn.functional.max_pool2d(m, 2 * spread + 1, stride=1, padding=spread)
    return (1 + alpha * m)[:, :, None]


__all__ = ["MOVING_THRESHOLD", "SPREAD", "loss_weight", "moving_pixels"]
