"""Play inside a world model: autoregressive rollouts, scripted button policies and `python -m mariofm rollout`.

A world model (VideoUNet with context_frames = K > 0, mariofm.conditioning) makes ONE next frame from the K frames
before it and the buttons. A rollout repeats that: each new frame joins the context and the oldest frame leaves it,
so any length works. Per frame: the context gets the small play_noise (the level the model was told about in
training), fresh noise x1 is drawn, and `steps` Euler/Heun steps (mariofm.sample; with cfg.sample_renoise > 0,
Euler steps that put back fresh noise) carry it to the frame, which is rounded to 8 bits as real frames are.
Everything random comes from CPU generators, one per start (start j of a batch: seeded `seed + j`): the same seed
gives the same frames, and a start plays alone with seed + j as it plays in a batch (up to the float rounding of
batched convolutions). Neighbouring seeds share streams one start apart (start j + 1 of seed s is start j of seed
s + 1): batches meant to be independent take seeds far apart.

The API (frames are uint8 RGB (H, W, 3); buttons are controller bytes, mariofm.nes: RIGHT | B = 0x41, or float
button bits (..., 8) as in training, mariofm.conditioning.action_bits):

    from mariofm.checkpoint import WORLD_SHIPPED, load_model
    from mariofm.world_data import recording_start
    model, cfg = load_model(WORLD_SHIPPED)     # mariofm/checkpoints/mariofm_world.safetensors
    context, actions = recording_start("data_video/mario", cfg, clip=0)   # K real frames, the real
    #   buttons after them
    frames = rollout(model, context, actions[:cfg.context_frames + 300], steps=4, solver="euler", seed=0)
    #   context (K, H, W, 3) or (B, K, H, W, 3); actions (K + N,) bytes or (K + N, 8) bits (B first if batched):
    #   the first K are the buttons over the context frames -> frames (N, H, W, 3) or (B, N, H, W, 3)
    buttons = policy_actions("right+b", 300, seed=0)   # "none", "random", any "left+a"-style combination -> (300,)

    world = World(model, context, actions[:cfg.context_frames], seed=0)   # step by step, for a play loop
    #   rollout(..., guidance=2) / World(..., guidance=2): the buttons' effect doubled (a model trained with
    #   action_dropout > 0; default: its cfg.action_guidance; mariofm.conditioning.guided_velocity); shift=0.5:
    #   the sampler's time grid (default: its cfg.sample_shift; mariofm.sample.time_grid)
    frame = world.step(RIGHT | B)     # the next frame with these buttons held over it
    world.reset(context, actions[:cfg.context_frames])   # back to a start; world.frames: the last K frames

    python -m mariofm rollout --checkpoint runs/world --data data_video/mario --out rollout.gif --frames 300 \
        --policy right+b        # or --policy recording (the clip's real buttons), or --actions buttons.txt
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from mariofm.conditioning import BUTTONS, action_bits, buttons_byte, guided_velocity
from mariofm.sample import randn_rows, sample, sample_renoised

# "random" picks among these, each held for 4-30 generated frames (at 15 fps: 0.3-2 s)
RANDOM_BUTTONS = ("right+b", "right+b", "right", "none", "left", "right+b+a", "right+a", "a", "left+b")


def _frames_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 (B, K, H, W, 3) -> float (B, 3, K, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, 1, H, W) -> uint8 (B, H, W, 3)."""
    return x[:, :, 0].clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def as_bits(actions: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Controller bytes (..., N) -> bits (..., N, 8); float bits (..., N, 8) pass through (as float32)."""
    a = torch.as_tensor(np.asarray(actions) if not isinstance(actions, torch.Tensor) else actions)
    if a.is_floating_point():
        if a.ndim < 2 or a.shape[-1] != len(BUTTONS):
            raise ValueError(f"float actions must be button bits (..., N, 8); got shape {tuple(a.shape)}")
        return a.float()
    return action_bits(a)


def check_world_model(model: torch.nn.Module) -> int:
    """K of a world model; a clear error for an unconditional one."""
    world = getattr(model, "world", None)
    if world is None:
        raise ValueError("this model is not a world model (context_frames=0): train one with --preset world-cpu")
    return world.context_frames


@torch.no_grad()
def next_frame(model: torch.nn.Module, context: torch.Tensor, bits: torch.Tensor, steps: int, solver: str,
               generator: torch.Generator | list[torch.Generator], guidance: float | None = None,
               own: torch.Tensor | None = None, shift: float | None = None,
               renoise: float | None = None) -> torch.Tensor:
    """One frame: context (B, 3, K, H, W) float, bits (B, K + 1, 8) -> (B, 3, 1, H, W) on the 8-bit grid.
    `guidance` w (default: the model's cfg.action_guidance): mariofm.conditioning.guided_velocity. `own` (B, K):
    the context frames' marks, 0 for a real frame, the play mark (`made_by_model`, cfg.own_mark) for one the model
    made; None: all real. Only a model with cfg.mark_own reads them.
    `shift`: the time grid's (default: cfg.sample_shift; mariofm.sample.time_grid). `renoise` η > 0 (default:
    cfg.sample_renoise): Euler steps that put back fresh noise (mariofm.sample.sample_renoised). `generator`: one,
    or one per row (mariofm.sample.randn_rows)."""
    b, c, _, h, w = context.shape
    guidance = model.cfg.action_guidance if guidance is None else guidance
    shift = model.cfg.sample_shift if shift is None else shift
    renoise = model.cfg.sample_renoise if renoise is None else renoise
    if renoise and solver != "euler":
        raise ValueError(f"renoise={renoise} runs Euler steps; got solver={solver!r}: use solver='euler'")
    sigma = model.world.play_noise  # added once per frame: every step sees the same context
    noisy = context + sigma * randn_rows(tuple(context.shape), generator).to(context) if sigma > 0 else context
    x1 = randn_rows((b, c, 1, h, w), generator).to(context.device)
    velocity = guided_velocity(model, noisy, bits.to(context.device), guidance, own)
    x = sample_renoised(velocity, x1, steps, renoise, generator, shift=shift) if renoise else \
        sample(velocity, x1, steps, solver, shift=shift)
    return x.clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)  # what a real (uint8) frame could be


def made_by_model(own: torch.Tensor, new: torch.Tensor | float = 1.0) -> torch.Tensor:
    """The context's marks (B, K) after one more frame: they move one frame on, the new one is `new` (B, 1) or one
    number for all: 1, the model made it (own_context also shifts in real frames, 0; cfg.own_mark plays with less)."""
    new = new if isinstance(new, torch.Tensor) else torch.full_like(own[:, :1], new)
    return torch.cat([own[:, 1:], new], dim=1)


def play_mark(model: torch.nn.Module, own_mark: float | None = None) -> float:
    """The mark of each frame the model makes as it plays: `own_mark`, checked as the config checks it, or the
    model's cfg.own_mark."""
    return model.cfg.own_mark if own_mark is None else model.cfg.replace(own_mark=own_mark).own_mark


@torch.no_grad()
def rollout(model: torch.nn.Module, context: np.ndarray, actions: np.ndarray | torch.Tensor, *,
            steps: int | None = None, solver: str | None = None, seed: int = 0, guidance: float | None = None,
            shift: float | None = None, own_mark: float | None = None, renoise: float | None = None,
            callback=None) -> np.ndarray:
    """Generate len(actions) − K frames after `context`; see the module docstring for the shapes. `guidance`:
    the buttons' guidance weight w (default: the model's cfg.action_guidance; mariofm.conditioning); `shift`: the
    sampler's time grid (default: cfg.sample_shift); `own_mark`: the mark of each frame it makes (default:
    cfg.own_mark; made_by_model); `renoise`: fresh noise in each step (default: cfg.sample_renoise; next_frame).
    `seed`: start j's noise comes from its own generator, seeded seed + j.

    `callback(i, frames)` (optional) sees each new batch of frames, uint8 (B, H, W, 3), as it is made."""
    k = check_world_model(model)
    batched = np.ndim(context) == 5
    context = np.asarray(context)[None] if not batched else np.asarray(context)
    bits = as_bits(actions)
    bits = bits[None] if not batched else bits
    if context.dtype != np.uint8 or context.ndim != 5 or context.shape[1] != k or context.shape[-1] != 3:
        raise ValueError(f"context must be uint8 frames (K, H, W, 3) or (B, K, H, W, 3) with K={k}; got "
                         f"{context.dtype} {context.shape}")
    if bits.ndim != 3 or bits.shape[0] != context.shape[0] or bits.shape[1] <= k:
        raise ValueError(f"actions must hold the buttons of the {k} context frames and of at least one frame to "
                         f"make: (K + N,) bytes or (K + N, 8) bits, batched like the context; got shape "
                         f"{tuple(np.shape(actions))} for context {context.shape}")
    steps, solver = steps or model.cfg.sample_steps, solver or model.cfg.solver
    device = next(model.parameters()).device
    generators = [torch.Generator().manual_seed(seed + j) for j in range(len(context))]  # one per start
    was_training = model.training
    model.eval()
    ctx, out = _frames_tensor(context, device), []
    own = torch.zeros(context.shape[0], k)  # the context starts real
    mark = play_mark(model, own_mark)
    try:
        for i in range(bits.shape[1] - k):
            x = next_frame(model, ctx, bits[:, i:i + k + 1], steps, solver, generators, guidance, own, shift, renoise)
            ctx, own = torch.cat([ctx[:, :, 1:], x], dim=2), made_by_model(own, mark)
            out.append(_to_uint8(x))
            if callback is not None:
                callback(i, out[-1])
    finally:
        model.train(was_training)
    frames = np.stack(out, axis=1)
    return frames if batched else frames[0]


class World:
    """A world to play in, one frame at a time: it keeps the last K frames and their buttons."""

    def __init__(self, model: torch.nn.Module, context: np.ndarray, context_actions, *, steps: int | None = None,
                 solver: str | None = None, seed: int = 0, guidance: float | None = None,
                 shift: float | None = None, own_mark: float | None = None, renoise: float | None = None) -> None:
        self.model, self.k = model.eval(), check_world_model(model)
        self.own_mark = play_mark(model, own_mark)
        self.steps, self.solver = steps or model.cfg.sample_steps, solver or model.cfg.solver
        self.guidance = model.cfg.action_guidance if guidance is None else guidance
        shift = model.cfg.sample_shift if shift is None else shift
        renoise = model.cfg.sample_renoise if renoise is None else renoise
        checked = model.cfg.replace(solver=self.solver, sample_shift=shift, sample_renoise=renoise)  # now, not later
        self.shift, self.renoise = checked.sample_shift, checked.sample_renoise
        self.device = next(model.parameters()).device
        self.seed = seed
        self.reset(context, context_actions)

    def reset(self, context: np.ndarray, context_actions) -> None:
        """Start again from K real frames (uint8 (K, H, W, 3)) and the buttons held over them."""
        context, bits = np.asarray(context), as_bits(context_actions)
        if context.dtype != np.uint8 or context.shape[:1] != (self.k,) or context.ndim != 4:
            raise ValueError(f"context must be uint8 (K, H, W, 3) with K={self.k}; got {context.dtype} "
                             f"{context.shape}")
        if bits.shape != (self.k, len(BUTTONS)):
            raise ValueError(f"context_actions must be the buttons of the {self.k} context frames; got shape "
                             f"{tuple(np.shape(context_actions))}")
        self.context, self.bits = _frames_tensor(context[None], self.device), bits[None]
        self.own = torch.zeros(1, self.k)  # real frames
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def frames(self) -> np.ndarray:
        """The last K frames, uint8 (K, H, W, 3), oldest first."""
        return self.context[0].permute(1, 2, 3, 0).add(1).mul(127.5).round().to(torch.uint8).cpu().numpy()

    def step(self, buttons: int | str | np.ndarray) -> np.ndarray:
        """The next frame, uint8 (H, W, 3), with `buttons` held over it: a byte, a name ("right+b") or bits (8,)."""
        if isinstance(buttons, str):
            buttons = buttons_byte(buttons)
        buttons = np.asarray(buttons)
        new = as_bits(buttons.reshape(1, -1) if buttons.dtype.kind == "f" else buttons).reshape(1, 1, -1)
        bits = torch.cat([self.bits, new], dim=1)
        x = next_frame(self.model, self.context, bits, self.steps, self.solver, self.generator, self.guidance,
                       self.own, self.shift, self.renoise)
        self.context = torch.cat([self.context[:, :, 1:], x], dim=2)
        self.own = made_by_model(self.own, self.own_mark)
        self.bits = bits[:, 1:]
        return _to_uint8(x)[0]


# ----------------------------------------------------------------------------------------------- buttons to play
def policy_actions(policy: str, n: int, seed: int = 0) -> np.ndarray:
    """n controller bytes: "random" (button sets from RANDOM_BUTTONS, each held 4-30 frames, seeded), or one
    button set held throughout: "none", "right", "right+b", "left+a", ..."""
    if policy == "random":
        rng, out = np.random.default_rng(seed), []
        while len(out) < n:
            out += [buttons_byte(RANDOM_BUTTONS[rng.integers(len(RANDOM_BUTTONS))])] * int(rng.integers(4, 31))
        return np.array(out[:n], np.uint8)
    return np.full(n, buttons_byte(policy), np.uint8)


def read_actions(path: str | Path) -> np.ndarray:
    """Buttons from a file: a .npy of controller bytes, or text with one byte (0-255) or "right+b" per line."""
    path = Path(path)
    if path.suffix == ".npy":
        return np.asarray(np.load(path)).astype(np.uint8).ravel()
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return np.array([int(s) if s.isdigit() else buttons_byte(s) for s in lines if s], np.uint8)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("rollout", help="play a world model from a real recording's first frames",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="world run folder, .pt or .safetensors (default: shipped)")
    p.add_argument("--data", default="data_video/mario", help="recordings to take the first K frames from")
    p.add_argument("--out", default="outputs/rollout.gif", help=".gif or .mp4")
    p.add_argument("--frames", type=int, default=300, help="frames to generate")
    p.add_argument("--policy", default="right+b", help='"recording" (its real buttons), "random", "none", '
                                                      'or buttons like "right+b+a"')
    p.add_argument("--actions", default=None, help="a button file (.npy bytes, or text: one per line)")
    p.add_argument("--clip", type=int, default=0, help="which recording of the split")
    p.add_argument("--split", default="val", choices=("train", "val", "all"))
    p.add_argument("--start", type=int, default=0, help="recorded frame to take the context from")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--solver", choices=("heun", "euler"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=None,
                   help="button guidance w (default: the model's action_guidance; needs action_dropout training)")
    p.add_argument("--shift", type=float, default=None,
                   help="the sampler's time grid shift (default: the model's sample_shift; mariofm.sample.time_grid)")
    p.add_argument("--own-mark", type=float, default=None,
                   help="the mark of each frame a marked model makes (default: the model's own_mark; 1 as trained)")
    p.add_argument("--renoise", type=float, default=None,
                   help="the share of fresh noise each Euler step puts back (default: the model's sample_renoise)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    import time

    from mariofm.checkpoint import WORLD_SHIPPED, load_model
    from mariofm.video import write_gif, write_mp4
    from mariofm.world_data import recording_start

    if args.frames < 1:
        raise ValueError(f"--frames {args.frames}: ask for at least one frame")
    out = Path(args.out)
    if out.suffix not in (".gif", ".mp4"):  # checked before the rollout: it can take minutes
        raise ValueError(f"--out {out}: name a .gif or .mp4 file, e.g. --out {out.with_suffix('.gif')}")
    model, cfg = load_model(args.checkpoint or WORLD_SHIPPED, device=args.device or "cpu")
    context, real = recording_start(args.data, cfg, args.clip, args.start, args.split)
    k = cfg.context_frames
    if args.actions:
        new = as_bits(read_actions(args.actions))
    elif args.policy == "recording":
        new = real[k:]
    else:
        new = as_bits(policy_actions(args.policy, args.frames, args.seed))
    if len(new) < args.frames:
        print(f"note: {len(new)} frames of buttons; generating {len(new)} frames")
    actions = torch.cat([real[:k], new[:args.frames]])
    begin = time.perf_counter()
    frames = rollout(model, context, actions, steps=args.steps or cfg.sample_steps,
                     solver=args.solver or cfg.solver, seed=args.seed, guidance=args.guidance, shift=args.shift,
                     own_mark=args.own_mark, renoise=args.renoise)
    seconds = time.perf_counter() - begin
    video = np.concatenate([context, frames])  # the real start, then the model's frames
    (write_mp4 if out.suffix == ".mp4" else write_gif)(out, video, cfg.fps)
    print(f"wrote {out}: {k} real + {len(frames)} generated frames in {seconds:.1f} s "
          f"({len(frames) / seconds:.1f} frames/s)")
    return 0


__all__ = ["rollout", "World", "next_frame", "made_by_model", "play_mark", "policy_actions", "read_actions",
           "as_bits", "RANDOM_BUTTONS"]
