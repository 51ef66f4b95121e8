"""Time to quality: FD-3D and validation flow-matching loss of each model after the same wall-clock budget.

    python benchmarks/time_to_quality.py                         # 3 minutes of training per model
    python benchmarks/time_to_quality.py --minutes 10 --models mariofm diffusers
    python benchmarks/time_to_quality.py --steps 200              # the same number of steps instead of time
    python benchmarks/time_to_quality.py --quick                  # 5 s per model, 6 videos: checks the script

Every model of benchmarks/peers.py (the ones installed) trains on the cpu preset's clips of the same recorded data
(MarioClips.from_config(preset("cpu"), --data)), in the same batch order, with the same noise and times, loss,
AdamW and learning-rate warmup, from the same seed, until the budget runs out (data loading included, evaluation
not). Then, from its raw weights (an EMA with a half-life of ~140 steps would still mostly hold the
initialisation of a model that took fewer steps):

    val FM loss  mariofm.flow.validation_loss on `--num` held-out clips: a fixed t grid and fixed noise
    FD-3D        Fréchet distance of mariofm.features.VideoFeatures between `--num` generated clips (the same
                 noise for every model, `--solver`, `--sample-steps`) and `--num` held-out real clips

The last row is real footage scored the same way (`--num` training clips against the held-out ones): the floor a
perfect model would reach at this N. FD is biased at small N, so only compare numbers of the same N.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import header, make_optimizer, pick_device, sync, table, train_step
from peers import MODELS, QUICK, build, installed, skipped_note
from tqdm.auto import tqdm

from mariofm.config import Config, preset
from mariofm.data import MarioClips, collate
from mariofm.evaluate import held_out_sets
from mariofm.features import VideoFeatures, frechet_distance
from mariofm.flow import sample_t, validation_loss
from mariofm.recordings import find_videos
from mariofm.sample import SOLVERS, nfe, noise_for, sample_videos
from mariofm.schedule import epoch_batches
from mariofm.unet import count_parameters
from mariofm.video import from_uint8


def train_for(model: torch.nn.Module, cfg: Config, data: MarioClips, seconds: float, max_steps: int | None,
              device: torch.device, desc: str) -> dict:
    """Train until `seconds` of wall clock (or `max_steps`) have passed, the mariofm recipe for every model:
    batches in mariofm.train's order, ε and t from one generator seeded cfg.seed + 1, AdamW, linear warmup
    over cfg.warmup_steps then a constant learning rate (a cosine needs the step count in advance)."""
    opt = make_optimizer(model, cfg)
    sched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=1e-3, total_iters=cfg.warmup_steps)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    model.train()
    steps, losses, epoch, begin = 0, [], 0, time.perf_counter()
    bar = tqdm(desc=desc, unit="step", leave=False, total=max_steps, disable=None)  # None: only on a terminal
    while True:
        for batch in epoch_batches(len(data), cfg.batch_size, cfg.seed, epoch):
            x0 = collate([data[i] for i in batch])["video"].to(device)
            noise = torch.randn(shape, generator=gen).to(device)
            t = sample_t(cfg.batch_size, cfg.time_sampling, generator=gen).to(device)
            losses.append(train_step(model, opt, x0, noise, t, cfg.grad_clip))
            sched.step()
            steps += 1
            bar.update(1)
            sync(device)
            elapsed = time.perf_counter() - begin
            if (max_steps and steps >= max_steps) or (not max_steps and elapsed >= seconds):
                bar.close()
                tail = losses[-20:]
                return dict(steps=steps, train_s=elapsed, s_step=elapsed / steps, train_loss=sum(tail) / len(tail))
        epoch += 1


@torch.no_grad()
def quality(model: torch.nn.Module, cfg: Config, real, args, device: torch.device, features: VideoFeatures,
            real_feats) -> dict:
    """Validation FM loss and FD-3D of the model's samples against the held-out clips `real` (uint8)."""
    model.eval()
    begin = time.perf_counter()
    clips = from_uint8(real).split(args.batch)  # in pieces: a peer's attention on all clips at once may not fit
    val_loss = sum(validation_loss(model, c.to(device), seed=cfg.seed) * len(c) for c in clips) / len(real)
    fake = sample_videos(model, noise_for(cfg, args.num, cfg.seed + 1), args.sample_steps, args.solver,
                         device=device, batch_size=args.batch)
    fd = frechet_distance(features(fake), real_feats)
    return dict(val_loss=val_loss, fd3d=fd, eval_s=time.perf_counter() - begin)


def quick_data(data: Path, keep: int = 6) -> Path:
    """A temporary folder of links to the first `keep` videos of `data` (and their action files): --quick
    decodes (or finds in data's cache) only these."""
    videos = find_videos(data)[:keep]
    if not videos:
        return data  # MarioClips will say what is missing and how to record it
    folder = Path(tempfile.mkdtemp(prefix="mariofm_ttq_"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the links and their decoded cache
    for video in videos:
        for src in (video, video.with_name(video.stem + ".actions.npy")):
            if src.exists():
                (folder / src.name).symlink_to(src.resolve())
    return folder


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", default="data_video/mario", help="folder of recorded clips")
    parser.add_argument("--models", nargs="*", default=list(MODELS), help=f"any of {list(MODELS)}")
    parser.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget per model")
    parser.add_argument("--steps", type=int, default=None, help="train this many steps instead of --minutes")
    parser.add_argument("--num", type=int, default=16, help="generated and real clips for FD-3D and the val loss")
    parser.add_argument("--sample-steps", type=int, default=8, help="ODE steps when sampling")
    parser.add_argument("--solver", choices=SOLVERS, default="heun")
    parser.add_argument("--batch", type=int, default=8, help="clips per forward pass when sampling")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-preset clips of 6 videos, 5 s per model, 4 clips, 2 Euler steps")
    args = parser.parse_args()
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {list(MODELS)}")
    cfg, data = preset("cpu"), Path(args.data)
    if args.quick:  # the same code paths in seconds: smoke-sized clips and nets
        cfg = QUICK
        args.minutes, args.num, args.sample_steps, args.solver = 5 / 60, 4, 2, "euler"
        data = quick_data(data)
    torch.set_num_threads(args.threads)
    dev, load0 = pick_device(args.device), os.getloadavg()

    train_set = MarioClips.from_config(cfg, data, split="train", progress=False)
    real, floor = held_out_sets(cfg, data, args.num, cfg.seed)
    features = VideoFeatures(cfg.seed)
    real_feats = features(real)
    rows, (names, skipped) = [], installed(args.models)
    for name in names:
        model = build(name, cfg).to(dev)
        row = dict(name=name, params=count_parameters(model) / 1e6)
        row |= train_for(model, cfg, train_set, args.minutes * 60, args.steps, dev, name)
        row |= quality(model, cfg, real, args, dev, features, real_feats)
        row["clips"] = row["steps"] * cfg.batch_size
        rows.append(row)
        print(f"{name}: {row['steps']} steps, val loss {row['val_loss']:.4f}, FD-3D {row['fd3d']:.3f}",
              file=sys.stderr, flush=True)
        del model
    rows.append(dict(name="real clips (floor)", fd3d=frechet_distance(features(floor), real_feats)))

    budget = f"{args.steps} steps" if args.steps else f"{args.minutes:g} min" if args.minutes >= 1 else \
        f"{args.minutes * 60:g} s"
    print("\n" + header("Time to quality", dev, load0,
                        f"Budget {budget} per model; {len(train_set)} training windows of clips "
                        f"{(cfg.sequence_length, cfg.video_height, cfg.video_width)} (T, H, W) from {args.data}"
                        f"{' (its first 6 videos)' if args.quick else ''}; "
                        f"FD-3D of {args.num} clips, {args.solver} {args.sample_steps} steps "
                        f"({nfe(args.sample_steps, args.solver)} NFE), against {len(real)} held-out clips"))
    print(table(rows, [("name", "model", "s"), ("params", "params (M)", ".2f"), ("steps", "steps", "d"),
                       ("clips", "clips seen", "d"), ("s_step", "s/step", ".3f"),
                       ("train_loss", "train loss (last 20)", ".4f"), ("val_loss", "val FM loss", ".4f"),
                       ("fd3d", "FD-3D", ".4g"), ("eval_s", "eval s", ".0f")]))
    print(skipped_note(skipped), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
