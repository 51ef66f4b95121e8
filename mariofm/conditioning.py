"""The world model's conditioning path: what a next-frame VideoUNet reads besides the noisy frame x_t and t.

With cfg.context_frames = K > 0, VideoUNet becomes v_θ(x_t, t | context, actions), a model of the NEXT frame:

    x_t      (B, 3, 1, H, W)   the noisy next frame, x_t = (1 − t)·x0 + t·ε (mariofm.flow)
    context  (B, 3, K, H, W)   the K frames before it, clean, in [-1, 1] (oldest first)
    actions  (B, K + 1, 8)     the buttons held over each context frame and over the next frame (`action_bits`)

Each choice and where it comes from:

- Context frames stacked on channels, one 2D denoiser per frame (DIAMOND, Alonso et al. 2024; GameNGen, Valevski
  et al. 2024, concatenates context latents the same way). The stem reads [x_t, context] as 3·(K + 1) channels of
  one frame, so a step costs one image-net call whatever K is — the fast design; a 3D net with one noise level per
  frame (diffusion forcing, Chen et al. 2024, as in Oasis) would denoise several frames at once but costs more.
  K = 4. Widened to K = 8 (`widen_context`: `train --init <model> --set context_frames=8`) and fine-tuned for an
  hour, the model stopped no better where a wall holds Mario, although in the recordings a camera still for 7
  frame steps starts again 3× less often than one still for 3 (docs/benchmarks.md section 6).
- Buttons as 8 bits per frame (multi-hot: right+B is two bits, not a 9th "action"), the K + 1 frames' bits
  flattened into one vector, embedded by an MLP and ADDED to the time embedding, so every residual block's
  scale-and-shift (FiLM) sees them (DIAMOND: `cond = noise_emb(c_noise) + act_emb(actions)` feeding AdaGroupNorm).
  A first mariofm model that fed the bits as 8 constant input planes ignored them (field notes,
  world-model-data.md): a plane is one more weak input to the first conv; a FiLM shift reaches every layer.
- Noise on the context in training (GameNGen's "noise augmentation", DIAMOND's CS:GO model): each training sample's
  context gets σ·ε, σ ~ U(0, context_noise), and σ is a further input, embedded and added like the buttons. At play
  time the context frames are the model's own outputs, a little off; having seen noisy contexts, the model learns
  to correct drift instead of compounding it. σ is drawn with torch's global RNG (the trainer checkpoints it, so a
  resumed run draws the same σ) and only in training mode. In eval mode the model adds no noise itself and reads
  σ = play_noise: the rollout (mariofm.rollout.next_frame) adds that noise, once per generated frame, from its own
  generators, so that every solver step of one frame sees the same context.
- Guidance on the buttons (classifier-free guidance, Ho & Salimans 2022, "Classifier-Free Diffusion Guidance"),
  cfg.action_dropout = p and cfg.action_guidance = w. Per step the buttons change the next frame only a little:
  Mario has momentum and the context frames already show the motion, so a model can lower its loss most by
  continuing that motion, and the buttons' share of its output stays small (the first shipped model scrolled 0.09 px per
  frame with right + B held, the game 0.71). In training, each sample's button embedding is replaced with
  probability p by one learned vector, "unknown buttons" (drawn with the global RNG, after σ, in training mode
  only), so the same net also learns v(x_t, t | context) without buttons. Sampling then uses

      v_w = v_unknown + w·(v_buttons − v_unknown)

  w = 1 is the conditional model itself; w > 1 moves the velocity further in the direction the buttons push it.
  For two button sets a, b from the same x_t: v_w(a) − v_w(b) = w·(v(a) − v(b)), the buttons' effect times w
  (v_unknown cancels). With x0-prediction, v = (x_t − x̂0)/max(t, t_min) is affine in x̂0 with the same x_t and t,
  so guiding v is guiding x̂0. `guided_velocity` makes one call on a doubled batch (buttons, unknown). Only a
  model with p > 0 has the "unknown" vector; checkpoints trained without it load and sample exactly as before.
  Measured (world-cpu, p = 0.15, docs/benchmarks.md section 6): w = 3 against w = 1, same weights: right + B scrolls
  further than no buttons in 69% vs 56% of paired rollouts (the game: 62%), 0.26 vs 0.15 px per frame (game 0.71),
  PSNR unchanged at every horizon; each net call runs on a doubled batch (1.4× the time per frame). w is a play-time
  setting (`export --set action_guidance=...`), so it is chosen again for each model, on evaluation starts of their
  own (`evaluate --world --seed 1`): a model trained on its own frames ran 1.57× the game's speed with w = 3 and
  matched its mean with w = 1.5; the stage-4 model played with w = 0.75 < 1, which shrinks the
  buttons' effect (with none held its mean speed came within 30% of the game's, 0.77×), the next (drawn own-frame
  counts, below) played with w = 1.5 (none 0.57× on the report's seed: it slowed sooner than the game's Mario, who
  coasts), and the stage-6 model, whose own frames were made on a shifted sampling grid (cfg.sample_shift), played
  with w = 1.5 (with none held 0.78× the game's speed over 128 moments of the report's seed; at w = 1 it crept on
  where the game stands, 1.48×; right + B the same at both: two settings over the same moments meet the same
  rollout noise, mariofm.world_report) and played with w = 1.25 beside cfg.own_mark = 0.9 (below). The shipped
  model, 1.5 times as wide and trained on a GPU, plays with w = 1: one net call per step (section 6, twenty-third).
  No model so far stops where the game's Mario is stopped (mariofm.world_eval.speed_split).
- Its own frames in training (cfg.own_frames, mariofm.own_frames.own_context — the data, not this module). Context
  noise did not teach the model to correct its drift (for the model before, play noise 0.05–0.2 was worse than
  none: its own errors are softness and lost motion, not Gaussian noise), and a model trained on real contexts
  only lost Mario's momentum within 2–4 frames. Fine-tuned with the last 2 context frames made by itself in half
  of each batch, a model (the stage before mark_own) kept its running speed and its 300-frame rollouts kept far
  more of the game's palette (in-palette share, frames 250–300 over 1–50: 0.54 against 0.16; docs/benchmarks.md
  section 6), at 1.5–2.1 dB of teacher-forced one-step PSNR. What still piles up over hundreds of frames is a
  colour shift and (until cfg.grid_free, below) a chequer on the 2×2 patch grid; a random shift of the context's
  colours or of its 2×2 pattern in training, for the net to take out, did not remove them (same section). Eight
  own frames in a chain (longer than K) kept more palette (ratio 0.86 on the report's seed 0) but ran 1.8× the
  game's speed and lost 2 dB one step ahead (same section). The real target after its own frames also asks for a
  catch-up: they stand behind the game's camera more often than ahead (0.85 px on average), so from its own frames
  the model learns to move further than the game. cfg.own_align moves the target to the own frames' camera
  (mariofm.own_frames.aligned_target): it took out most of the catch-up moves, but the model then ran slower
  everywhere and still did not stop at walls (same section, fifteenth; not shipped).
- Which context frames are its own (cfg.mark_own; our choice, after the noise level as an input above and diffusion
  forcing's level per frame): trained on both, one net has to serve a real context and its own with one answer, and
  the own-frames runs paid 1.5–2 dB one step ahead from real frames for their stability. With mark_own, a K-bit vector
  `own` (1: the model made this context frame) is embedded and added like the buttons; a rollout starts at all 0 from
  the real start frames and shifts in a 1 with each frame it makes (mariofm.rollout.made_by_model), and own_frames
  training marks the frames the model made. The embedding starts at zero, so a model it is added to (`train --init ...
  --set mark_own=true`) starts out unchanged. The first marked model (65 min more with mark_own and own_frames = 2):
  told that a real context is real, its PSNR one frame ahead is 1.7 dB higher on average (1.1 dB in the median)
  than told it is its own (128 starts); one step ahead it went from +2.5 to +3.3 dB over the repeat-last baseline
  (median, the report's seed 0) and over 300 frames it kept more of the palette (ratio 0.59 → 0.74). With
  own_frames = 2 only the last two marks are ever 1 in training, always together: it learnt one switch, and the
  second frame of a rollout, 0001, was a state never trained. cfg.own_draw draws each sample's number of own frames
  from 1..R, so every state a rollout passes through is trained (0001, 0011, 0111, 1111 with R = 4; all four
  columns of the embedding move). A later model (55 min more with own_frames = 4 drawn, on recordings with the
  player's push mood, mariofm.player.PUSH) kept +3.4 dB one step ahead and 87% of its palette share over 300
  frames (docs/benchmarks.md section 6). The one-step numbers are from a real context, marks 0000: only a
  rollout's first frame reads that.
  What the marks do (same section): told that all its frames are real (marks 0), that model barely scrolled
  anywhere, where the game's camera stops and where it runs (its frames carry less motion than the game's), and
  its walls stayed. The marks are its learnt correction for its own frames: they add about as much motion at a wall
  as in the open, so neither way does it tell the two apart, and (our reading) the redrawing that comes with them
  is what melts the walls. The embedding is linear, so the mark a rollout gives its frames is a dial between the
  two (cfg.own_mark, a play-time field; 1 as trained): a smaller mark slows the whole rollout, where the game runs
  and where it stops alike. The model shipped before played with 0.9 (section 6, twentieth: nearer the game's mean
  speed with right + B, and more of its palette kept over 300 frames); the shipped one plays with 1, as trained
  (twenty-third: it met every goal with 0.9 too, and 1 kept a little more of the palette).
- A view of the whole frame (cfg.spatial_attention, mariofm.attention.SpatialAttention; DIAMOND's CS:GO net has
  self-attention at its deepest levels): the scroll is one decision for the frame, and a convolution mostly mixes
  neighbours. Added to the weights shipped then and fine-tuned for an hour, it stopped no better where a wall holds
  Mario than an hour without it (docs/benchmarks.md section 6). The model melts the wall within a second of play,
  and we think that, not its view, is why it runs on there. The shipped model has none.
- x0-prediction (cfg.prediction="x0", mariofm.flow.velocity_from_x0): the net outputs the clean next frame, which is
  mostly a copy of the last context frame shifted a little — an easy target in pixel space.
- cfg.frame_residual: x̂0 = (last context frame, as the net sees it: with its noise) + the head's output, so the
  untrained net (zero-init head) already predicts "repeat the last frame", the baseline, and training learns the
  change. The residual form of video prediction (our choice; not in DIAMOND or GameNGen). Measured here: without it,
  a world-cpu model after 2,500 steps made noisy, mushy frames, 1.3 dB below the repeat-last baseline one step
  ahead. The base frame carries the context noise so that the net learns to remove errors in it (drift).
- cfg.grid_free (mariofm.unet.grid_free; our choice): with patches (patch_size 2) the head makes each place of a
  2×2 patch from its own output channel, and a frame-wide offset of a fraction of an 8-bit unit between places,
  added again every frame by frame_residual, grew into a chequer on the patch grid over hundreds of frames
  (metrics.grid_grain). grid_free gives the change the same frame-wide mean at every place; a pattern that
  differs from one part of the frame to another passes. Switched on for the weights shipped then, trained without it
  (`export --set grid_free=true`; a run started from them with `train --init` keeps it): on the report's seed 0,
  grain 10.9 → 1.9 in frames 250–300 (footage 2.0), in-palette ratio 0.537 → 0.592, one step ahead unchanged
  (paired over 2 × 128 other starts: −0.003 and −0.025 dB). Fine-tuning with it on did not add to that
  (docs/benchmarks.md section 6).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from torch import nn

BUTTONS = ("right", "left", "down", "up", "start", "select", "b", "a")  # bit i of the controller byte (cynes)
NUM_BUTTONS = len(BUTTONS)


def action_bits(actions: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Controller bytes (...,) uint8 -> float32 bits (..., 8), bit i = (byte >> i) & 1, in BUTTONS order."""
    a = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
    if a.is_floating_point() or a.dtype == torch.bool:
        raise ValueError(f"actions must be controller bytes (integers 0-255), got dtype {a.dtype}")
    if a.numel() and (a.min() < 0 or a.max() > 255):
        raise ValueError("actions must be controller bytes in 0..255")
    return ((a.long()[..., None] >> torch.arange(NUM_BUTTONS)) & 1).float()


def buttons_byte(names: str) -> int:
    """"right+b" -> 0x41; "none" or "" -> 0. Names are BUTTONS, joined by '+', any case."""
    parts = [p.strip().lower() for p in names.split("+") if p.strip() and p.strip().lower() != "none"]
    unknown = [p for p in parts if p not in BUTTONS]
    if unknown:
        raise ValueError(f"unknown button(s) {unknown} in {names!r}; use {'+'.join(BUTTONS)} or 'none'")
    return sum(1 << BUTTONS.index(p) for p in parts)


def guided_velocity(model: nn.Module, context: torch.Tensor, actions: torch.Tensor, guidance: float,
                    own: torch.Tensor | None = None):
    """The velocity v(x, t) a sampler integrates for one frame: the model with these buttons when guidance = 1,
    else v_unknown + w·(v_buttons − v_unknown) from one call on the doubled batch (see the module docstring).
    `own` (B, K): which context frames the model made itself (cfg.mark_own; None: all real)."""
    if not 0 <= guidance < float("inf"):
        raise ValueError(f"guidance={guidance!r} must be a finite number >= 0 (1 = the buttons as given, no guidance)")
    if guidance == 1:
        return functools.partial(model, context=context, actions=actions, own=own)
    b = context.shape[0]
    unknown = torch.arange(2 * b, device=context.device) >= b  # first half: the buttons; second half: unknown
    both_context, both_actions = torch.cat([context, context]), torch.cat([actions, actions])
    both_own = None if own is None else torch.cat([own, own])

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        v_buttons, v_unknown = model(torch.cat([x, x]), torch.cat([t, t]), context=both_context,
                                     actions=both_actions, unknown=unknown, own=both_own).chunk(2)
        return v_unknown + guidance * (v_buttons - v_unknown)

    return velocity


class WorldConditioning(nn.Module):
    """Stack the context on the noisy frame's channels and embed buttons and context-noise level.

    forward(x, context, actions) -> (input (B, 3·(K+1), 1, H, W) for the stem, embedding (B, time_dim) to add to
    the time embedding, the last context frame as the net sees it (B, 3, 1, H, W): the base of frame_residual).
    """

    def __init__(self, context_frames: int, channels: int, time_dim: int, context_noise: float,
                 play_noise: float, action_dropout: float = 0.0, mark_own: bool = False) -> None:
        super().__init__()
        self.context_frames, self.channels = context_frames, channels
        self.context_noise, self.play_noise, self.action_dropout = context_noise, play_noise, action_dropout
        self.action_embed = nn.Sequential(nn.Linear((context_frames + 1) * NUM_BUTTONS, time_dim), nn.SiLU(),
                                          nn.Linear(time_dim, time_dim))
        # "unknown buttons": only a model trained with action_dropout has it (older checkpoints load unchanged)
        self.unknown_actions = nn.Parameter(torch.zeros(time_dim)) if action_dropout > 0 else None
        # σ / context_noise in [0, 1]: a scalar, so a small MLP rather than a sinusoidal table
        self.noise_embed = nn.Sequential(nn.Linear(1, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        # which context frames are the model's own (cfg.mark_own); zero at first: a model it is added to (train
        # --init) starts out computing exactly what it computed before
        self.own_embed = nn.Linear(context_frames, time_dim) if mark_own else None
        if self.own_embed is not None:
            nn.init.zeros_(self.own_embed.weight)
            nn.init.zeros_(self.own_embed.bias)

    def check(self, x: torch.Tensor, context: torch.Tensor | None, actions: torch.Tensor | None) -> None:
        k, c = self.context_frames, self.channels
        if context is None or actions is None:
            raise ValueError(f"this is a world model (context_frames={k}): call it as model(x_t, t, context=..., "
                             f"actions=...) with context (B, {c}, {k}, H, W) and actions (B, {k + 1}, 8)")
        b, _, frames, h, w = x.shape
        if frames != 1:
            raise ValueError(f"a world model denoises one frame at a time: x_t must be (B, {c}, 1, H, W), got "
                             f"{tuple(x.shape)}")
        if tuple(context.shape) != (b, c, k, h, w):
            raise ValueError(f"context must be (B, C, K, H, W) = {(b, c, k, h, w)} (K = context_frames), got "
                             f"{tuple(context.shape)}")
        if tuple(actions.shape) != (b, k + 1, NUM_BUTTONS):
            raise ValueError(f"actions must be (B, K + 1, 8) = {(b, k + 1, NUM_BUTTONS)}: the button bits of the "
                             f"K context frames and of the next frame (action_bits); got {tuple(actions.shape)}")

    def forward(self, x: torch.Tensor, context: torch.Tensor | None, actions: torch.Tensor | None,
                unknown: torch.Tensor | None = None, own: torch.Tensor | None = None,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`unknown` (B,) bool: samples whose buttons the model is told it does not know (the unconditional half
        of guidance, `guided_velocity`); in training mode action_dropout draws it. `own` (B, K): 1 for each
        context frame the model made itself, 0 for a real one (None: all real); only a model with cfg.mark_own
        reads it, others ignore it."""
        self.check(x, context, actions)
        b = x.shape[0]
        if self.training and self.context_noise > 0:  # the global RNG: checkpointed by the trainer
            sigma = torch.rand(b, device=x.device) * self.context_noise
            context = context + sigma.view(b, 1, 1, 1, 1).to(context.dtype) * torch.randn_like(context)
        else:  # the caller added play_noise (rollout.next_frame); tell the model how much
            sigma = torch.full((b,), self.play_noise, device=x.device)
        level = (sigma / max(self.context_noise, 1e-8))[:, None].to(x.dtype)
        buttons = self.action_embed(actions.flatten(1).to(x.dtype))
        if self.training and self.action_dropout > 0:  # drawn after σ, from the same checkpointed global RNG
            unknown = torch.rand(b, device=x.device) < self.action_dropout
        if unknown is not None:
            if self.unknown_actions is None:
                raise ValueError("this world model was trained without action_dropout, so it has no 'unknown "
                                 "buttons' embedding and cannot be guided: use action_guidance=1, or train one "
                                 "with e.g. --set action_dropout=0.15")
            keep = ~unknown.to(device=x.device, dtype=torch.bool).view(b, 1)
            buttons = torch.where(keep, buttons, self.unknown_actions.to(buttons.dtype))
        emb = buttons + self.noise_embed(level)
        if self.own_embed is not None:
            own = torch.zeros(b, self.context_frames) if own is None else own
            if tuple(own.shape) != (b, self.context_frames):
                raise ValueError(f"own must be (B, K) = {(b, self.context_frames)}: 1 for each context frame the "
                                 f"model made itself, 0 for a real one; got {tuple(own.shape)}")
            emb = emb + self.own_embed(own.to(device=x.device, dtype=x.dtype))
        context = context.to(x.dtype)
        stacked = torch.cat([x, context.flatten(1, 2)[:, :, None]], dim=1)
        return stacked, emb, context[:, :, -1:]


def widen_context(weights: dict[str, torch.Tensor], old_k: int, new_k: int, channels: int = 3,
                  patch: int = 1) -> dict[str, torch.Tensor]:
    """A world model's weights for a longer context (`train --init <model> --set context_frames=8`): the weights
    that read the K = old_k context frames read the newest old_k of new_k, and those of the older frames start at
    zero, so the widened net computes what the old one computed, whatever the older frames hold.

    Three tensors read the context: the stem's input channels (x_t then the context, channel-major: c·K + k, each
    folded into patch² channels by patchify), the button embedding's first layer (frame-major: k·8 + button, K + 1
    frames) and the mark embedding (one column per context frame)."""
    if new_k < old_k:
        raise ValueError(f"context_frames={new_k} is shorter than the {old_k} frames the weights read: a run can "
                         f"start from a model with a shorter or the same context, not a longer one")
    out, extra = dict(weights), new_k - old_k

    def spread(w: torch.Tensor, old_index: torch.Tensor, new_index: torch.Tensor, size: int) -> torch.Tensor:
        wide = w.new_zeros(w.shape[0], size, *w.shape[2:])
        wide[:, new_index] = w[:, old_index]
        return wide

    def stem_channels(k: int, first: int) -> torch.Tensor:  # x_t's, then those of context frames first.. first+old_k
        inputs = list(range(channels)) + [channels + c * k + f for c in range(channels)
                                          for f in range(first, first + old_k)]
        return (torch.tensor(inputs)[:, None] * patch**2 + torch.arange(patch**2)).flatten()

    stem = "stem.weight" if "stem.weight" in weights else "stem.0.weight"  # "2+1d": its 1x3x3 conv comes first
    out[stem] = spread(weights[stem], stem_channels(old_k, 0), stem_channels(new_k, extra),
                       channels * (new_k + 1) * patch**2)
    buttons = torch.arange((old_k + 1) * NUM_BUTTONS)
    out["world.action_embed.0.weight"] = spread(weights["world.action_embed.0.weight"], buttons,
                                                buttons + extra * NUM_BUTTONS, (new_k + 1) * NUM_BUTTONS)
    if "world.own_embed.weight" in weights:
        marks = torch.arange(old_k)
        out["world.own_embed.weight"] = spread(weights["world.own_embed.weight"], marks, marks + extra, new_k)
    return out


__all__ = ["BUTTONS", "NUM_BUTTONS", "WorldConditioning", "action_bits", "buttons_byte", "guided_velocity",
           "widen_context"]
