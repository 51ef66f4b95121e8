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

from mariofm.checkpoint import load_model
from mariofm.cli import non_negative_int, positive_int
from mariofm.config import Config
from mariofm.data import real_clips
from mariofm.device import default_device
from mariofm.flow import validation_loss
from mariofm.likelihood import bits_per_dim
from mariofm.metrics import compare
from mariofm.runfolder import writable_file
from mariofm.sample import SOLVERS, nfe, noise_for, sample_videos
from mariofm.video import from_uint8


def held_out_sets(cfg: Config, data: str | Path, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """N validation clips (the reference) and N other real clips (the floor), at the model's size."""
    kwargs = dict(size=(cfg.video_height, cfg.video_width), sequence_length=cfg.sequence_length,
                  frame_stride=cfg.frame_stride, seed=seed)
    return real_clips(data, num, split="val", **kwargs), real_clips(data, num, split="train", **kwargs)


def evaluate(checkpoint: str | Path | None, data: str | Path, *, num: int = 64, steps: int | None = None,
             solver: str | None = None, seed: int = 0, bpd_clips: int = 2, bpd_steps: int = 8, probes: int = 1,
             device: str | None = None, progress: bool = True, bootstrap: int = 200) -> dict:
    """Sample `num` clips and score them against held-out real clips; return the report (also what
    `--out` writes). `bpd_clips` of the real clips get the bits/dim; the report gives the numbers used."""
    for name, value, least in (("num", num, 1), ("steps", steps, 1), ("bpd-clips", bpd_clips, 0),
                               ("bpd-steps", bpd_steps, 1), ("probes", probes, 1)):
        if value is not None and value < least:
            raise ValueError(f"--{name} {value}: must be at least {least}")
    if bpd_clips > num:
        raise ValueError(f"--bpd-clips {bpd_clips} is more than --num {num}: bits/dim is measured on the "
                         f"evaluation's own real clips; lower --bpd-clips or raise --num")
    dev = default_device(device)
    model, cfg = load_model(checkpoint, device=dev)
    if cfg.context_frames:
        raise ValueError(f"{checkpoint} is a world model (context_frames={cfg.context_frames}): evaluate it with "
                         "`python -m mariofm evaluate --world`")
    steps, solver = steps or cfg.sample_steps, solver or cfg.solver
    real, floor = held_out_sets(cfg, data, num, seed)
    num = min(len(real), len(floor))  # a small data set may hold fewer windows than asked for (it warns)
    bpd_clips = min(bpd_clips, num)  # ... and so fewer clips for bits/dim: the report says how many
    real, floor = real[:num], floor[:num]
    begin = time.perf_counter()
    fake = sample_videos(model, noise_for(cfg, num, seed + 1), steps, solver, device=dev, progress=progress)
    report = dict(checkpoint=str(checkpoint or "shipped"), num=num, steps=steps, solver=solver,
                  nfe=nfe(steps, solver), sample_seconds=round(time.perf_counter() - begin, 2))
    # the feature nets keep their own fixed seed; FD and KID get a 95% bootstrap interval over clips
    report["metrics"] = compare(fake, real, real_floor=floor, bootstrap=bootstrap)
    report["val_fm_loss"] = validation_loss(model, from_uint8(real[:16]).to(dev), seed=seed)
    if bpd_clips:
        bpd = bits_per_dim(model, torch.from_numpy(real[:bpd_clips]).permute(0, 4, 1, 2, 3).to(dev),
                           steps=bpd_steps, probes=probes, generator=torch.Generator().manual_seed(seed),
                           progress=progress)
        report["bits_per_dim"] = dict(mean=float(bpd.bpd.mean()), clips=bpd_clips, steps=bpd_steps,
                                      nfe=bpd.likelihood.nfe, hutchinson_probes=probes)
    return report


def print_table(report: dict) -> None:
    metrics = flatten(report["metrics"])
    rows = [(k, v if f"{k}_lo" not in metrics else f"{v:.4g}  [{metrics[k + '_lo']:.4g}, {metrics[k + '_hi']:.4g}]")
            for k, v in metrics.items() if not k.endswith(("_lo", "_hi"))]
    rows.append(("val_fm_loss", report["val_fm_loss"]))
    if "bits_per_dim" in report:
        b = report["bits_per_dim"]
        rows.append((f"bits_per_dim ({b['clips']} clips, {b['nfe']} NFE, {b['hutchinson_probes']} probe)", b["mean"]))
    width = max(len(k) for k, _ in rows)
    print(f"{report['num']} generated vs {report['num']} real clips; {report['solver']} {report['steps']} steps "
          f"({report['nfe']} NFE); [95% bootstrap interval over clips]")
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
    p.add_argument("--num", type=positive_int, default=64, help="generated clips, and real clips in each real set")
    p.add_argument("--steps", type=positive_int, default=None, help="ODE steps (default: the config's)")
    p.add_argument("--solver", choices=SOLVERS, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--bpd-clips", type=non_negative_int, default=2,
                   help="validation clips for bits/dim, at most --num (0: skip)")
    p.add_argument("--bpd-steps", type=positive_int, default=8, help="Heun steps of the likelihood ODE")
    p.add_argument("--probes", type=positive_int, default=1, help="Hutchinson probes for the divergence")
    p.add_argument("--bootstrap", type=non_negative_int, default=200,
                   help="redraws for the 95%% interval of FD and KID (0: none)")
    p.add_argument("--world", action="store_true",
                   help="evaluate a world model (mariofm.world_eval): horizons, buttons against the real game, "
                        "stability; --num is then the held-out starts")
    p.add_argument("--pairs", type=int, default=32, help="--world: moments of real play for the button test (a "
                   "speed ratio over 32 is only a rough reading: its printed 95%% interval is wide; the card uses 128)")
    p.add_argument("--long", type=int, default=8, help="--world: 300-frame rollouts for the stability test")
    p.add_argument("--branches", default=None, metavar="NPZ",
                   help="--world: keep the real game's button branches in this file and reuse them")
    p.add_argument("--guidance", type=float, default=None,
                   help="--world: button guidance w (default: the model's action_guidance; mariofm.conditioning)")
    p.add_argument("--shift", type=float, default=None,
                   help="--world: the sampler's time grid shift (default: the model's sample_shift; sample.time_grid)")
    p.add_argument("--own-mark", type=float, default=None,
                   help="--world: the mark of each frame a marked model makes (default: the model's own_mark; 1 as "
                   "trained, 0 read as real; rollout.made_by_model)")
    p.add_argument("--renoise", type=float, default=None,
                   help="--world: the share of fresh noise each Euler step puts back (default: the model's "
                   "sample_renoise; 0 = the ODE; sample.sample_renoised)")
    p.add_argument("--against", default=None, metavar="JSON",
                   help="--world: a report of the same --seed and --pairs to set the speed ratios beside, moment by "
                        "moment (mariofm.world_report.against)")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    p.add_argument("--device", default=None)
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    if args.out:
        writable_file(args.out)  # a folder or a read-only place fails now, not after the sampling
    if args.world:
        from mariofm.world_eval import evaluate_world
        from mariofm.world_report import against, print_against, print_world_table, read_world_report, write_report

        # a bad base report fails now, not after the rollouts
        base = read_world_report(args.against, args.seed, args.pairs) if args.against else None
        report = evaluate_world(args.checkpoint, args.data, num=args.num, pairs=args.pairs, long=args.long,
                                seed=args.seed, steps=args.steps, solver=args.solver, guidance=args.guidance,
                                shift=args.shift, own_mark=args.own_mark, renoise=args.renoise, device=args.device,
                                cache=args.branches)
        print_world_table(report)
        try:
            if base is not None:
                report["against"] = dict(base=args.against, **against(report, base))
                print_against(report["against"], args.against)
        finally:  # the report is kept even when the base turns out to hold other moments
            if args.out:
                write_report(report, args.out)
                print(f"wrote {args.out}")
        return 0
    report = evaluate(args.checkpoint, args.data, num=args.num, steps=args.steps, solver=args.solver,
                      seed=args.seed, bpd_clips=args.bpd_clips, bpd_steps=args.bpd_steps, probes=args.probes,
                      device=args.device, bootstrap=args.bootstrap)
    print_table(report)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.out}")
    return 0
