"""Training a world model on its own frames (cfg.own_frames = R): the context it reads when it plays.

    python -m mariofm train --init mariofm/checkpoints/mariofm_world.safetensors --set own_frames=4 own_draw=true

The trainer (mariofm.train.train_step) calls `own_context` on each batch before the loss: in part of the batch
the model's EMA copy plays R frames from the K real frames before them (mariofm.rollout.next_frame), and the last
min(R, K) context frames are its own; with R > K the whole context comes from a chain of R of its frames; with
cfg.own_draw each sample plays a number of them drawn from 1..R. The data (mariofm.world_data.NextFrames with
own_frames = R) holds K + R frames before each target for that. With cfg.own_align the target of those samples
is the real next frame seen from the camera of the model's last own frame (`aligned_target`).
"""

from __future__ import annotations

import numpy as np
import torch

from mariofm.metrics import hud_height, scroll_stats
from mariofm.moving import FAR, shifted
from mariofm.rollout import made_by_model, next_frame
from mariofm.video import to_uint8


def own_context(model: torch.nn.Module, context: torch.Tensor, bits: torch.Tensor, own: int, own_frames: int,
                generator: torch.Generator, counts: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Training on the model's own frames (cfg.own_frames = R): the context a world model reads when it plays.

    context (B, 3, K + R, H, W) real frames and bits (B, K + R + 1, 8) from NextFrames with own_frames = R. For
    the first `own` samples the model plays R frames from the K real frames before them with the real buttons,
    exactly as it plays (next_frame: its sampler, guidance and play noise), and they take the place of the last R
    frames (all K when R > K); the others keep their real frames. `counts` (own,) in 1..R (cfg.own_draw): sample j
    plays only its last counts[j] frames and keeps the real ones before them. Returns the window that ends at the
    real target frame: context (B, 3, K, H, W), bits (B, K + 1, 8) and marks (B, K), 1 for each frame the model
    made (what a model with cfg.mark_own reads as `own`; a rollout marks its frames the same way). The loss then
    asks for the REAL next frame after the model's own frames. (No decorator: next_frame runs under no_grad, and
    mutmut, docs/testing.md, skips decorated functions.)

    Why: a rollout's context is the model's output, not a recording. Its errors are not Gaussian noise (play-time
    context noise did not help, docs/benchmarks.md section 6): the frames are softer and move less than the game, so
    a model trained on real contexts reads "Mario slows down" and stops within a few frames. Feeding it its own
    frames with the real future as the target teaches it to correct them (scheduled sampling, Bengio et al. 2015;
    the same idea in video diffusion: Self Forcing, Huang et al. 2025). Drawn counts show a marked model every
    mix of real and own frames a rollout passes through (0001, 0011, ...), not only the last. The frames carry no
    gradient. Under several processes each rank makes the frames of its own slice, so there a run differs from a
    one-process run.
    """
    k = context.shape[2] - own_frames
    marks = torch.zeros(context.shape[0], k, device=context.device)
    if own > 0 and own_frames > 0:
        first = own_frames - (torch.full((own,), own_frames) if counts is None else counts)  # its first own frame
        was_training = model.training
        model.eval()  # no context noise or button dropout inside the model: it plays
        try:
            made, window, chain = context[:own, :, :k], context[:own].clone(), marks[:own]
            for i in range(own_frames):
                plays = (first <= i).nonzero().squeeze(1)  # the others still read the recording
                x, mark = window[:, :, k + i:k + i + 1].clone(), torch.zeros_like(chain[:, :1])
                if len(plays):
                    x[plays] = next_frame(model, made[plays], bits[plays, i:i + k + 1], model.cfg.sample_steps,
                                          model.cfg.solver, generator, own=chain[plays])
                    mark[plays] = 1.0
                made, chain = torch.cat([made[:, :, 1:], x], dim=2), made_by_model(chain, mark)
                window[:, :, k + i] = x[:, :, 0]
        finally:
            model.train(was_training)
        context, marks = torch.cat([window, context[own:]]), torch.cat([chain, marks[own:]])
    return context[:, :, own_frames:], bits[:, own_frames:], marks


def camera_offset(real: torch.Tensor, own: torch.Tensor) -> np.ndarray:
    """Where the camera of each own frame (B, 3, H, W) stands against the real frame of the same moment, in whole
    pixels (positive: the own camera is further right; mariofm.metrics.scroll_stats between the two)."""
    return scroll_stats(to_uint8(torch.stack([real, own], dim=2)))["shift"][:, 0]


def aligned_target(target: torch.Tensor, real: torch.Tensor, own: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cfg.own_align: the real next frame seen from the camera of the model's own last frame, and the loss weight.

    target (B, 3, 1, H, W) the real next frame; real, own (B, 3, H, W) the real and the context's last frame (the
    same for a sample that kept its real frames). With d = camera_offset(real, own), the target is moved as a
    camera move of d pixels moves it, out[x] = target[x + d] (mariofm.moving.shifted), below the HUD, which does not
    move; the |d| columns it has no pixels for get weight 0 (mariofm.flow.fm_loss `weight`, (B, 1, 1, H, W)).

    Why: own frames drift from the game's camera, mostly behind it (measured on 384 training windows of the stage-6
    world model, 4 own frames each: behind in 40%, ahead in 20%, by 0.85 px on average at 64 wide). From its own last
    frame the real next frame then lies 1.96 px on, where the game moved 1.29: the loss asks it to catch up, and a
    model that learns that moves on from its own frames where the game stops (docs/benchmarks.md section 6). Seen
    from the own camera, the target asks only for the game's own move and for the picture put right."""
    d = camera_offset(real, own)
    hud, out, weight = hud_height(target.shape[-2]), target.clone(), torch.ones_like(target[:, :1])
    for i in np.flatnonzero(d):
        moved = shifted(target[i, :, :, hud:], int(d[i]))
        known = moved[:1] != FAR  # FAR: a column the real frame has no pixels for
        out[i, :, :, hud:] = torch.where(known, moved, target[i, :, :, hud:])
        weight[i, :, :, hud:] = known  # 1 where it has pixels, 0 where it has none
    return out, weight


__all__ = ["own_context", "aligned_target", "camera_offset"]
