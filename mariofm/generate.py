"""Generate Mario videos from a trained model: noise at t=1, integrate the learned velocity to t=0.

    python -m mariofm generate --checkpoint runs/cpu/video_model.pt --out outputs/gen --num 4 --steps 20 --mp4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mariofm.checkpoint import SHIPPED, load_model
from mariofm.cli import positive_int
from mariofm.device import default_device
from mariofm.runfolder import writable_folder
from mariofm.sample import SOLVERS, nfe, noise_for, sample_videos
from mariofm.video import video_grid, write_gif, write_mp4


def generate(checkpoint: str | Path | None, out: str | Path, *, num: int = 4, steps: int | None = None,
             solver: str | None = None, seed: int = 0, mp4: bool = False, ema: bool = True,
             device: str | None = None, progress: bool = True) -> dict:
    """Write generated_video_{i}.gif, generated_videos_grid.gif (and .mp4 files); return what was done."""
    if num < 1:
        raise ValueError(f"--num {num}: ask for at least one video")
    if steps is not None and steps < 1:
        raise ValueError(f"--steps {steps}: the ODE needs at least one step (leave it out for the config's own)")
    out = writable_folder(out)  # a file or a read-only folder fails now, not after the sampling
    dev = default_device(device)
    model, cfg = load_model(checkpoint, ema=ema, device=dev)
    steps, solver = steps or cfg.sample_steps, solver or cfg.solver
    begin = time.perf_counter()
    videos = sample_videos(model, noise_for(cfg, num, seed), steps, solver, device=dev, progress=progress)
    seconds = time.perf_counter() - begin
    files = []
    for i, video in enumerate(videos):
        files.append(out / f"generated_video_{i}.gif")
        write_gif(files[-1], video, cfg.fps)
        if mp4:
            files.append(out / f"generated_video_{i}.mp4")
            write_mp4(files[-1], video, cfg.fps)
    grid = video_grid(videos)
    files.append(out / "generated_videos_grid.gif")
    write_gif(files[-1], grid, cfg.fps)
    if mp4:
        files.append(out / "generated_videos_grid.mp4")
        write_mp4(files[-1], grid, cfg.fps)
    return dict(files=[str(f) for f in files], num=num, steps=steps, solver=solver, seed=seed,
                nfe=nfe(steps, solver), seconds=seconds, frames_per_s=videos.shape[0] * videos.shape[1] / seconds)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate videos from a trained model",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None,
                   help=f"run folder, .pt or .safetensors file (default: the shipped model {SHIPPED.name})")
    p.add_argument("--out", default="outputs/generated")
    p.add_argument("--num", type=positive_int, default=4, help="number of videos")
    p.add_argument("--steps", type=positive_int, default=None, help="ODE steps (default: the config's sample_steps)")
    p.add_argument("--solver", choices=SOLVERS, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mp4", action="store_true", help="also write MP4 files")
    p.add_argument("--ema", action=argparse.BooleanOptionalAction, default=True, help="use the EMA weights")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    info = generate(args.checkpoint, args.out, num=args.num, steps=args.steps, solver=args.solver,
                    seed=args.seed, mp4=args.mp4, ema=args.ema, device=args.device)
    print(f"{info['num']} videos, {info['solver']} with {info['steps']} steps = {info['nfe']} NFE, "
          f"{info['seconds']:.1f} s ({info['frames_per_s']:.1f} frames/s)")
    for f in info["files"]:
        print(f"  {f}")
    return 0
