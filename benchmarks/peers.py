"""Training throughput of mariofm's VideoUNet beside published video UNets, at equal width and clip size.

    python benchmarks/peers.py                     # cpu-preset clips (4, 3, 8, 60, 64): every model below
    python benchmarks/peers.py --rounds 3          # take turns 3 times: fairer on a busy machine
    python benchmarks/peers.py --quick             # smoke-preset clips, 1 timed step each: < 1 minute

The models (`MODELS`), all trained on the same input (B, 3, T, H, W), with the same loss (mariofm.flow.fm_loss:
MSE to v* = ε − x0) and the same optimiser (AdamW as in mariofm.train):

    mariofm      the preset as shipped: 2+1d convs, 2x2 patches (the net runs at H/2 x W/2)
    mariofm-3d   the same net with full 3x3x3 convs
    mariofm-p1   the same net without patches: the peers below have none, so this row is the fair one for them
    seed-design  the seed's design at the same width: full 3x3x3 convs and no patches
    diffusers    diffusers' UNet3DConditionModel (ModelScope's text-to-video UNet): 2D ResNets + temporal convs,
                 temporal attention at full resolution, spatial and cross attention in the middle block
    lucidrains   rectified-flow-pytorch's VideoUnet (the Unet3D of video-diffusion-pytorch): 1x3x3 ResNets,
                 spatial linear and temporal attention at every level

Peers get the preset's widths (base_ch x channel_mults) and levels and one ResNet per level where they let us
choose; the rest is their defaults. Their parameter counts differ: GFLOP/step in the table says how much work a
step is, so read clips/s beside it. Every model runs in its own subprocess, so its peak memory is its own.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
from harness import header, make_optimizer, peak_memory_mb, pick_device, sync, table, train_step
from torch import nn

from mariofm.config import Config, preset
from mariofm.unet import VideoUNet, count_parameters


class DiffusersUNet3D(nn.Module):
    """diffusers' UNet3DConditionModel behind mariofm's `forward(x, t)`.

    Configured like the preset: block_out_channels = base_ch x channel_mults, layers_per_block = num_res_blocks,
    plain DownBlock3D/UpBlock3D levels (a 2D ResNet, then 4 temporal 3x1x1 convs; the cross-attention levels would
    attend to a context we do not have) and 8 attention heads. It is a text-to-video net: its middle block always
    cross-attends to `encoder_hidden_states`, so we pass one zero token of width 8 (attending to it adds a constant).
    Its timestep embedding expects DDPM steps 0..1000, so t in [0, 1] goes in as 1000·t (as SD3 does).
    """

    context_dim = 8

    def __init__(self, cfg: Config):
        super().__init__()
        from diffusers import UNet3DConditionModel

        levels = len(cfg.channel_mults)
        self.net = UNet3DConditionModel(
            in_channels=cfg.video_channels, out_channels=cfg.video_channels,
            block_out_channels=tuple(cfg.base_ch * m for m in cfg.channel_mults),
            down_block_types=("DownBlock3D",) * levels, up_block_types=("UpBlock3D",) * levels,
            layers_per_block=cfg.num_res_blocks, norm_num_groups=math.gcd(32, cfg.base_ch),
            cross_attention_dim=self.context_dim, attention_head_dim=8)  # (diffusers' name for the head count)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        context = x.new_zeros(x.shape[0], 1, self.context_dim)
        return self.net(x, t * 1000, encoder_hidden_states=context).sample


class LucidrainsVideoUnet(nn.Module):
    """lucidrains' VideoUnet from rectified-flow-pytorch behind `forward(x, t)`: dim = base_ch, dim_mults =
    channel_mults, its defaults otherwise (8 heads of 32 dims). It takes t in [0, 1] as its RectifiedFlow passes it.

    rectified-flow-pytorch declares torchvision as a dependency and its package __init__ imports it, so it needs a
    torch that has a matching torchvision (docs/benchmarks.md: the benchmark environment); the benchmarks skip it
    when it is missing.
    """

    def __init__(self, cfg: Config):
        super().__init__()
        from rectified_flow_pytorch.video_unet import VideoUnet

        self.net = VideoUnet(dim=cfg.base_ch, dim_mults=cfg.channel_mults, channels=cfg.video_channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(x, times=t)


# name -> (builder, what it is)
MODELS: dict[str, tuple[Callable[[Config], nn.Module], str]] = {
    "mariofm": (lambda cfg: VideoUNet(cfg), "the preset: 2+1d convs, 2x2 patches"),  # (the cpu preset's)
    "mariofm-3d": (lambda cfg: VideoUNet(cfg.replace(conv="3d")), "full 3x3x3 convs, 2x2 patches"),
    "mariofm-p1": (lambda cfg: VideoUNet(cfg.replace(patch_size=1)), "2+1d convs, no patches"),
    "seed-design": (lambda cfg: VideoUNet(cfg.replace(conv="3d", patch_size=1)), "full 3x3x3 convs, no patches"),
    "diffusers": (DiffusersUNet3D, "diffusers UNet3DConditionModel"),
    "lucidrains": (LucidrainsVideoUnet, "rectified-flow-pytorch VideoUnet"),
}


def unavailable(name: str) -> str | None:
    """Why model `name` cannot be built here (its package is missing), or None when it can."""
    try:
        if name == "diffusers":
            import diffusers  # noqa: F401
        elif name == "lucidrains":
            import rectified_flow_pytorch.video_unet  # noqa: F401
    except ImportError as err:
        hint = " (pip install diffusers)" if name == "diffusers" else \
            " (pip install rectified-flow-pytorch: it needs torchvision, see docs/benchmarks.md)"
        return f"{type(err).__name__}: {err}{hint}"
    return None


def installed(names: list[str]) -> tuple[list[str], dict[str, str]]:
    """The models of `names` whose packages are here, and {name: why not} for the others."""
    skipped = {name: reason for name in names if (reason := unavailable(name))}
    return [name for name in names if name not in skipped], skipped


def skipped_note(skipped: dict[str, str]) -> str:
    """The lines under a table that say which models are missing and how to get them."""
    return "".join(f"\nSkipped {name}: {reason}\n" for name, reason in skipped.items())


def build(name: str, cfg: Config) -> nn.Module:
    """Model `name` of MODELS for clips of cfg's size, initialised from cfg.seed (the same weights every run)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose from {list(MODELS)}")
    reason = unavailable(name)
    if reason:
        raise ImportError(f"model {name!r} is unavailable: {reason}")
    torch.manual_seed(cfg.seed)
    return MODELS[name][0](cfg)


# --quick in every script: the smoke preset's clips and widths (32x32, 4 frames, base_ch 8) with the cpu preset's
# 2x2 patches, so that the models differ from each other as in the full run
QUICK = preset("smoke", patch_size=2, warmup_steps=2)


def count_gflop(model: nn.Module, shape: tuple[int, ...], device: torch.device) -> float:
    """GFLOP of one forward+backward at `shape` (matmuls and convs, counted by torch's FlopCounterMode)."""
    from torch.utils.flop_counter import FlopCounterMode

    x, t = torch.zeros(shape, device=device), torch.full(shape[:1], 0.5, device=device)
    with FlopCounterMode(display=False) as counter:
        model(x, t).square().mean().backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def child(spec: dict) -> dict:
    """Time `warmup` untimed and `steps` timed training steps of one model; return the measurements."""
    torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    cfg = Config.from_dict(spec["config"])
    model = build(spec["model"], cfg).to(dev).train()
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    gflop = count_gflop(model, shape, dev)
    opt = make_optimizer(model, cfg)
    g = torch.Generator().manual_seed(cfg.seed)  # the same batch, noise and t for every model
    x0 = (torch.rand(shape, generator=g) * 2 - 1).to(dev)
    noise, t = torch.randn(shape, generator=g).to(dev), torch.rand(shape[0], generator=g).to(dev)
    mem0 = peak_memory_mb(dev)
    wall, cpu = [], []
    for i in range(spec["warmup"] + spec["steps"]):
        w0, c0 = time.perf_counter(), time.process_time()
        train_step(model, opt, x0, noise, t, cfg.grad_clip)
        sync(dev)
        if i >= spec["warmup"]:
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return dict(params=count_parameters(model), gflop=gflop, wall=wall, cpu=cpu, peak_mb=peak_memory_mb(dev),
                grown_mb=peak_memory_mb(dev) - mem0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"any of {list(MODELS)}")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, oneDNN setup)")
    parser.add_argument("--rounds", type=int, default=1, help="run every model this many times, taking turns")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per model")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="smoke-sized clips, 1 timed step: checks the script")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    if args.quick:
        args.steps, args.warmup, args.rounds = 1, 0, 1  # the FLOP count already ran one step

    dev, cfg, load0 = pick_device(args.device), QUICK if args.quick else preset("cpu"), os.getloadavg()
    names, skipped = installed(args.models)
    results: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for name in names:
            spec = dict(model=name, config=cfg.to_dict(), device=str(dev), threads=args.threads, steps=args.steps,
                        warmup=args.warmup)
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True)
            if out.returncode:
                raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
            results.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))

    rows = []
    for name, runs in results.items():
        wall = statistics.median(w for run in runs for w in run["wall"])
        rows.append(dict(name=name, what=MODELS[name][1], params=runs[0]["params"] / 1e6, gflop=runs[0]["gflop"],
                         s_step=wall, cpu_s=statistics.median(c for run in runs for c in run["cpu"]),
                         clips_s=cfg.batch_size / wall, peak_mb=max(run["peak_mb"] for run in runs),
                         grown_mb=max(run["grown_mb"] for run in runs)))
    base = next((row for row in rows if row["name"] == "mariofm"), None)
    for row in rows:
        row["ratio"] = row["clips_s"] / base["clips_s"] if base else None
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    print("\n" + header("Training throughput", dev, load0,
                        f"Clips {shape} (B, C, T, H, W); {args.warmup} warm-up + {args.steps} timed step(s) x "
                        f"{args.rounds} round(s) per model; the median step"))
    print(table(rows, [("name", "model", "s"), ("what", "design", "s"), ("params", "params (M)", ".2f"),
                       ("gflop", "GFLOP/step", ".1f"), ("s_step", "s/step", ".3f"), ("cpu_s", "CPU s/step", ".3f"),
                       ("clips_s", "clips/s", ".2f"), ("ratio", "x mariofm clips/s", ".2f"),
                       ("peak_mb", "peak MB", ".0f"), ("grown_mb", "MB grown in steps", ".0f")]))
    print(skipped_note(skipped), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
