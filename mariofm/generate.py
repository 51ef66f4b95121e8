"""Generate Mario videos from a trained model: noise at t=1, integrate the learned velocity to t=0.

    python -m mariofm generate --checkpoint runs/cpu/video_model.pt --out outputs/gen --num 4 --steps 20 --mp4
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mariofm.config import Config
from mariofm.sample import nfe, sample
from mariofm.unet import VideoUNet

SHIPPED = Path(__file__).resolve().parent / "checkpoints" / "mariofm_cpu.safetensors"  # installed with the package
WORLD_SHIPPED = SHIPPED.with_name("mariofm_world.safetensors")  # the world model (mariofm.rollout)


def load_model(checkpoint: str | Path | None = None, *, ema: bool = True,
               device: str | torch.device = "cpu") -> tuple[VideoUNet, Config]:
    """Rebuild the model from a run folder, `video_model.pt`, `checkpoint.pt` or a `.safetensors` file
    (config in its metadata), with the EMA weights unless `ema=False`. Nothing is unpickled."""
    from mariofm.train import ema_weights, load_checkpoint

    path = Path(checkpoint) if checkpoint else SHIPPED
    if path.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        if not path.exists():
            raise FileNotFoundError(f"no model at {path}; train one with `python -m mariofm train`")
        with safe_open(path, "pt") as f:
            cfg = Config.from_dict(json.loads(f.metadata()["config"]))
        weights = load_file(path, device=str(device))
        if not ema:
            print(f"{path.name} holds EMA weights only; using them")
    else:
        state = load_checkpoint(path, map_location=device)
        cfg = Config.from_dict(state["config"])
        weights = ema_weights(state) if ema else state["model"]
    model = VideoUNet(cfg).to(device)
    model.load_state_dict(weights)
    return model.eval(), cfg


def noise_for(cfg: Config, num: int, seed: int) -> torch.Tensor:
    """The starting noise x1 ~ N(0, I), drawn on the CPU so a seed gives the same videos on every device."""
    shape = (num, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def sample_videos(model: torch.nn.Module, noise: torch.Tensor, steps: int, solver: str = "heun", *,
                  device: str | torch.device = "cpu", batch_size: int = 8, progress: bool = False) -> np.ndarray:
    """Integrate from `noise` (t=1) to t=0 in batches; return uint8 videos (N, T, H, W, 3)."""
    from mariofm.video import to_uint8

    was_training = model.training
    model.eval()
    out = []
    for chunk in noise.split(batch_size):
        x0 = sample(model, chunk.to(device), steps, solver, progress=progress)
        out.append(to_uint8(x0.float().cpu()))
    model.train(was_training)
    return np.concatenate(out)


def generate(checkpoint: str | Path | None, out: str | Path, *, num: int = 4, steps: int | None = None,
             solver: str | None = None, seed: int = 0, mp4: bool = False, ema: bool = True,
             device: str | None = None, progress: bool = True) -> dict:
    """Write generated_video_{i}.gif, generated_videos_grid.gif (and .mp4 files); return what was done."""
    from mariofm.video import video_grid, write_gif, write_mp4

    if num < 1:
        raise ValueError(f"--num {num}: ask for at least one video")
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_model(checkpoint, ema=ema, device=dev)
    steps, solver = steps or cfg.sample_steps, solver or cfg.solver
    begin = time.perf_counter()
    videos = sample_videos(model, noise_for(cfg, num, seed), steps, solver, device=dev, progress=progress)
    seconds = time.perf_counter() - begin
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    p.add_argument("--num", type=int, default=4, help="number of videos")
    p.add_argument("--steps", type=int, default=None, help="ODE steps (default: the config's sample_steps)")
    p.add_argument("--solver", choices=("heun", "euler"), default=None)
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
