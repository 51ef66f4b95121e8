"""`python -m mariofm evaluate`: score a model against held-out real gameplay with weight-free metrics.

    python -m mariofm evaluate --checkpoint runs/cpu/video_model.pt --data data_video/mario --num 64 --out metrics.json
    python -m mariofm evaluate --world --checkpoint runs/world --data data_video/mario   # a world model: world_eval.py

Samples N clips and compares them with N held-out real clips at the model's resolution, with a second, disjoint
real set beside every distance as the real-vs-real floor (what a perfect model would score at this N). Adds the
held-out bits/dim (mariofm.likelihood) on a few validation clips and the validation flow-matching loss at a fixed
t grid with fixed noise.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from mariofm.config import Config


def as_tensor(clips: np.ndarray) -> torch.Tensor:
    """uint8 (N, T, H, W, 3) → float (N, 3, T, H, W) in [-1, 1], the training scaling."""
    return torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1


def held_out_sets(cfg: Config, data: str | Path, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N validation clips (the reference) and N other real clips (the floor), at the model's size."""
    from mariofm.data import real_clips

    kwargs = dict(size=(cfg.video_height, cfg.video_width), sequence_length=cfg.sequence_length,
                  frame_stride=cfg.frame_stride, seed=seed)
    return real_clips(data, num, split="val", **kwargs), real_clips(data, num, split="train", **kwargs)


def evaluate(checkpoint: str | Path | None, data: str | Path, *, num: int = 64, steps: int | None = None,
             solver: str | None = None, seed: int = 0, bpd_clips: int = 2, bpd_steps: int = 8, probes: int = 1,
             device: str | None = None, progress: bool = True) -> dict:
    from mariofm.generate import load_model, noise_for, sample_videos
    from mariofm.likelihood import bits_per_dim
    from mariofm.metrics import compare
    from mariofm.sample import nfe
    from mariofm.train import validation_loss

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = load_model(checkpoint, device=dev)
    if cfg.context_frames:
        raise ValueError(f"{checkpoint} is a world model (context_frames={cfg.context_frames}): evaluate it with "
                         "`python -m mariofm evaluate --world`")
    steps, solver = steps or cfg.sample_steps, solver or cfg.solver
    real, floor = held_out_sets(cfg, data, num, seed)
    num = min(len(real), len(floor))  # a small data set may hold fewer windows than asked for
    real, floor = real[:num], floor[:num]
    begin = time.perf_counter()
    fake = sample_videos(model, noise_for(cfg, num, seed + 1), steps, solver, device=dev, progress=progress)
    report = dict(checkpoint=str(checkpoint or "shipped"), num=num, steps=steps, solver=solver,
                  nfe=nfe(steps, solver), sample_seconds=round(time.perf_counter() - begin, 2))
    report["metrics"] = compare(fake, real, real_floor=floor)  # the feature nets keep their own fixed seed
    report["val_fm_loss"] = validation_loss(model, as_tensor(real[:16]).to(dev), seed=seed)
    if bpd_clips:
        bpd = bits_per_dim(model, torch.from_numpy(real[:bpd_clips]).permute(0, 4, 1, 2, 3).to(dev),
                           steps=bpd_steps, probes=probes, generator=torch.Generator().manual_seed(seed),
                           progress=progress)
        report["bits_per_dim"] = dict(mean=float(bpd.bpd.mean()), clips=bpd_clips, steps=bpd_steps,
                                      nfe=bpd.likelihood.nfe, hutchinson_probes=probes)
    return report


def print_table(report: dict) -> None:
    rows = [(k, v) for k, v in flatten(report["metrics"]).items()]
    rows.append(("val_fm_loss", report["val_fm_loss"]))
    if "bits_per_dim" in report:
        b = report["bits_per_dim"]
        rows.append((f"bits_per_dim ({b['clips']} clips, {b['nfe']} NFE, {b['hutchinson_probes']} probe)", b["mean"]))
    width = max(len(k) for k, _ in rows)
    print(f"{report['num']} generated vs {report['num']} real clips; {report['solver']} {report['steps']} steps "
          f"({report['nfe']} NFE)")
    for key, value in rows:
        print(f"  {key:<{width}}  {value:.4g}" if isinstance(value, float) else f"  {key:<{width}}  {value}")


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="weight-free metrics of a model against held-out real clips",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--checkpoint", default=None, help="run folder, .pt or .safetensors (default: shipped model)")
    p.add_argument("--data", default="data_video/mario")
    p.add_argument("--num", type=int, default=64, help="generated clips, and real clips in each real set")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--solver", choices=("heun", "euler"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpd-clips", type=int, default=2, help="validation clips for bits/dim (0: skip)")
    p.add_argument("--bpd-steps", type=int, default=8, help="Heun steps of the likelihood ODE")
    p.add_argument("--probes", type=int, default=1, help="Hutchinson probes for the divergence")
    p.add_argument("--world", action="store_true",
                   help="evaluate a world model (mariofm.world_eval): horizons, buttons against the real game, "
                        "stability; --num is then the held-out starts")
    p.add_argument("--pairs", type=int, default=32, help="--world: moments of real play for the button test")
    p.add_argument("--long", type=int, default=8, help="--world: 300-frame rollouts for the stability test")
    p.add_argument("--branches", default=None, metavar="NPZ",
                   help="--world: keep the real game's button branches in this file and reuse them")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.world:
        from mariofm.world_eval import evaluate_world, print_world_table, write_report

        report = evaluate_world(args.checkpoint, args.data, num=args.num, pairs=args.pairs, long=args.long,
                                seed=args.seed, steps=args.steps, solver=args.solver, device=args.device,
                                cache=args.branches)
        print_world_table(report)
        if args.out:
            write_report(report, args.out)
            print(f"wrote {args.out}")
        return 0
    report = evaluate(args.checkpoint, args.data, num=args.num, steps=args.steps, solver=args.solver,
                      seed=args.seed, bpd_clips=args.bpd_clips, bpd_steps=args.bpd_steps, probes=args.probes,
                      device=args.device)
    print_table(report)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0
