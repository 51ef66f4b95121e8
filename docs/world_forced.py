"""Figure: the camera's speed frame by frame, from the game's own frames and from the model's, with right + B held
(or, with --buttons none, no buttons).

    python docs/world_forced.py --seed 1 --branches branches_seed1.npz --out docs/media/world-forced.png

The moments are `evaluate --world`'s button moments (as in docs/world_stops.py: the same seed and sizes give the
same moments, and the --branches file is shared). Three speeds per frame, in pixels per frame of a frame 64 pixels
wide (mariofm.world_eval.frame_scroll, scaled by 64 / width):
- the game: the real game's camera;
- teacher-forced: frame j made from the game's own frames j − K .. j − 1 (one frame each, 4 Euler steps): what the
  model decides when its context is the real picture;
- free: a rollout from the same first K frames, each frame made from the model's own frames before it.
Two groups of moments: where the game's camera runs, and where it stops because a wall holds Mario
(world_eval.stop_causes "stays"). Where the teacher-forced speed follows the game and the free one does not, the
model knows what to do from a real picture and loses it in its own frames.
"""

from __future__ import annotations

import argparse

import matplotlib.pyplot as plt
import numpy as np
import torch
from world_stops import HORIZON, stop_moments  # docs/world_stops.py: the same moments, split as evaluate --world

from mariofm.checkpoint import WORLD_SHIPPED, load_model
from mariofm.conditioning import action_bits, buttons_byte
from mariofm.rollout import rollout
from mariofm.world_eval import frame_scroll, stop_causes


def speeds(model, found, frames: int, guidance: float | None, buttons: str = "right+b") -> dict[str, np.ndarray]:
    """(N, frames) px/frame of the game, teacher-forced and free, with `buttons` held."""
    k, s = model.cfg.context_frames, found.buttons.index(buttons)
    real = np.concatenate([found.context, found.frames[:, s]], axis=1)  # the game's frames, those buttons held
    held = action_bits(np.full((len(real), HORIZON), buttons_byte(buttons), np.uint8))
    actions = torch.cat([found.context_actions, held], dim=1)
    n = len(real)  # frame j of moment i draws its noise from seed j * n + i: no two share a stream, and frame 1
    # (j = 0) is the free rollout's first frame, made from the same real frames with the same noise
    forced = np.stack([frame_scroll(real[:, j + k - 1], rollout(model, real[:, j:j + k], actions[:, j:j + k + 1],
                                                                seed=j * n, guidance=guidance))[:, 0]
                       for j in range(frames)], axis=1)
    free = frame_scroll(found.context[:, -1], rollout(model, found.context, actions[:, :k + frames], seed=0,
                                                      guidance=guidance))
    return {"game": frame_scroll(found.context[:, -1], found.frames[:, s])[:, :frames], "teacher-forced": forced,
            "free": free}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(WORLD_SHIPPED))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--frames", type=int, default=16, help="frames of each moment, at most 32")
    p.add_argument("--guidance", type=float, default=None, help="default: the model's action_guidance")
    p.add_argument("--buttons", choices=("right+b", "none"), default="right+b", help="the buttons held")
    p.add_argument("--branches", default=None, help="an .npz of game branches to reuse or write (evaluate's)")
    p.add_argument("--out", default="docs/media/world-forced.png")
    args = p.parse_args()
    model, cfg = load_model(args.checkpoint, device="cpu")
    found, stopped = stop_moments(model, args.pairs, args.seed, args.branches, args.buttons)
    px = {name: v * 64 / cfg.video_width
          for name, v in speeds(model, found, args.frames, args.guidance, args.buttons).items()}
    stops = np.isin(np.arange(len(found.context)), stopped)  # where the game's camera stops over all 32 frames
    s = found.buttons.index(args.buttons)
    stays = stops & (stop_causes(found.mario[:, s], found.dies[:, s]) == "stays")
    groups = {"the game's camera runs": ~stops,
              "a wall holds Mario" if args.buttons == "right+b" else "Mario stays": stays}
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, (title, keep) in zip(axes, groups.items()):
        print(f"{title} ({keep.sum()} moments), px/frame at 64 wide, frames 1-{args.frames}:")
        for name, v in px.items():
            print(f"  {name:14s} mean {v[keep].mean():.2f}  by frame {np.round(v[keep].mean(0), 2).tolist()}")
            ax.plot(np.arange(1, args.frames + 1), v[keep].mean(0), marker=".", label=name)
        ax.set(title=f"{title} ({keep.sum()} moments)", xlabel="frame")
    axes[0].set_ylabel("camera px/frame (64 wide)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
