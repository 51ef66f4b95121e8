"""Make the README's two GIFs: real footage beside the shipped model's videos, at the model's resolution.

    python docs/readme_media.py --data data_video/mario     # writes docs/media/real.gif and docs/media/generated.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mariofm.checkpoint import load_model
from mariofm.data import real_clips
from mariofm.sample import noise_for, sample_videos
from mariofm.video import video_grid, write_gif

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--data", default="data_video/mario")
parser.add_argument("--out", default=Path(__file__).parent / "media", type=Path)
parser.add_argument("--num", type=int, default=8)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

model, cfg = load_model()  # the shipped model
real = real_clips(args.data, args.num, (cfg.video_height, cfg.video_width), cfg.sequence_length, cfg.frame_stride,
                  split="all", seed=args.seed)
fake = sample_videos(model, noise_for(cfg, args.num, args.seed), cfg.sample_steps, cfg.solver)
args.out.mkdir(parents=True, exist_ok=True)
write_gif(args.out / "real.gif", video_grid(real, ncols=4), cfg.fps)
write_gif(args.out / "generated.gif", video_grid(fake, ncols=4), cfg.fps)
print(f"wrote {args.out / 'real.gif'} and {args.out / 'generated.gif'}")
