"""Figure: where the real game's camera stops with right + B held, what the world model makes instead.

    python docs/world_stops.py --seed 1 --branches branches_seed1.npz --out docs/media/world-stops.png

The moments are `evaluate --world`'s button moments (mariofm.world_truth.game_branches: the same seed and sizes
give the same moments, and the same --branches file can be shared; a file made for other settings is played
again and overwritten; --seed must be the one the file was made with). Rows: the first `--rows` moments where the
game scrolls less than world_eval.stopped_below(width) px per frame with right + B held (a wall holds Mario).
Columns: the last real context frame; the model's frames 4, 12 and 32 with right + B held; the game's frames 4, 12
and 32. Frames are enlarged 2×, nearest neighbour.

--read-as-real: the model plays told that every context frame is real (a mark_own model played with own_mark 0:
marks 0000 at every frame, as at a rollout's first frame), to see what the marks do (docs/benchmarks.md section 6):

    python docs/world_stops.py --seed 1 --branches branches_seed1.npz --read-as-real \
        --out docs/media/world-stops-as-real.png
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from mariofm.checkpoint import WORLD_SHIPPED, load_model
from mariofm.conditioning import action_bits, buttons_byte
from mariofm.rollout import rollout
from mariofm.world_eval import frame_scroll, stopped_below
from mariofm.world_truth import cached_branches

HORIZON, SHOWN = 32, (4, 12, 32)  # frames held, and the ones shown (1-based)


def stop_moments(model, pairs: int, seed: int, branches: str | None, buttons: str = "right+b"):
    cfg = model.cfg
    found = cached_branches(branches, pairs, cfg.context_frames, (cfg.video_height, cfg.video_width),
                            cfg.frame_stride, HORIZON, ("right+b", "none"), seed)
    s = found.buttons.index(buttons)
    game = frame_scroll(found.context[:, -1], found.frames[:, s]).sum(1) / HORIZON
    return found, np.flatnonzero(game < stopped_below(cfg.video_width))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=str(WORLD_SHIPPED))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--rows", type=int, default=5)
    p.add_argument("--branches", default=None, help="an .npz of game branches to reuse or write (evaluate's)")
    p.add_argument("--out", default="docs/media/world-stops.png")
    p.add_argument("--read-as-real", action="store_true", help="mark every context frame real (mark_own models)")
    args = p.parse_args()
    model = load_model(args.checkpoint, device="cpu")[0]
    if args.read_as_real and not model.cfg.mark_own:
        raise SystemExit(f"{args.checkpoint} reads no marks (it was trained without mark_own)")
    found, stops = stop_moments(model, args.pairs, args.seed, args.branches)
    rows = stops[:args.rows]
    print(f"{len(stops)} of {args.pairs} moments: the game's camera stops; showing {[int(r) for r in rows]}")
    held = action_bits(np.full((len(rows), HORIZON), buttons_byte("right+b"), np.uint8))
    made = rollout(model, found.context[rows], torch.cat([found.context_actions[rows], held], dim=1),
                   seed=args.seed, own_mark=0.0 if args.read_as_real else None)  # 0: its frames read as real
    pad = dict(pad_width=((2, 2), (2, 2), (0, 0)), constant_values=255)
    grid = np.concatenate([np.concatenate([np.pad(f, **pad) for f in
                                           [found.context[r, -1], *(made[i, s - 1] for s in SHOWN),
                                            *(found.frames[r, 0, s - 1] for s in SHOWN)]], axis=1)
                           for i, r in enumerate(rows)])
    image = Image.fromarray(grid)
    image.resize((image.width * 2, image.height * 2), Image.NEAREST).save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
