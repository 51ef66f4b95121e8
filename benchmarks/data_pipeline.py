"""Data pipeline: how fast MarioClips decodes and loads frames, against how fast training consumes them.

    python benchmarks/data_pipeline.py                       # every video in data_video/mario, cpu-preset clips
    python benchmarks/data_pipeline.py --preset colab --workers 0 2
    python benchmarks/data_pipeline.py --quick               # 3 videos, 1 training step: checks the script

Stages, each in frames per second at the preset's frame size:

    decode        first MarioClips(...) on a fresh cache folder: read every video, resize, write the .npy cache
    open cache    MarioClips(...) again: find and memory-map the cached arrays (no decoding)
    load clips    dataset[i] over all windows in a shuffled order: slice the memory map, to float in [-1, 1]
    DataLoader    the loop of mariofm.train: batches of batch_size through a DataLoader with `--workers`
    training      what a training step of the preset's model consumes: batch_size · T frames per step

The last column divides each stage by training's need: above 1, the stage keeps up (decoding happens once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from harness import header, make_optimizer, pick_device, sync, table, train_step
from peers import build
from time_to_quality import quick_data
from torch.utils.data import DataLoader

from mariofm.config import Config, preset
from mariofm.data import MarioClips, collate
from mariofm.schedule import epoch_batches


def training_frames_per_s(cfg: Config, steps: int, device: torch.device) -> float:
    """Frames a training step of the preset's VideoUNet consumes per second (median of `steps` after one
    warm-up step), on random clips: the model's speed alone."""
    model = build("mariofm", cfg).to(device).train()
    opt = make_optimizer(model, cfg)
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    g = torch.Generator().manual_seed(0)
    x0, noise, t = (torch.rand(shape, generator=g) * 2 - 1).to(device), torch.randn(shape, generator=g).to(device), \
        torch.rand(shape[0], generator=g).to(device)
    times = []
    for _ in range(steps + 1):
        begin = time.perf_counter()
        train_step(model, opt, x0, noise, t, cfg.grad_clip)
        sync(device)
        times.append(time.perf_counter() - begin)
    return cfg.batch_size * cfg.sequence_length / statistics.median(times[1:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--data", default="data_video/mario", help="folder of recorded clips")
    parser.add_argument("--preset", default="cpu", help="frame size, clip length and batch size of this preset")
    parser.add_argument("--workers", type=int, nargs="*", default=[0, 2], help="DataLoader worker counts to try")
    parser.add_argument("--train-steps", type=int, default=3, help="timed training steps for the consumption")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None, help="device of the training step (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="3 videos, workers 0 only, 1 training step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev, load0, data, cfg = pick_device(args.device), os.getloadavg(), Path(args.data), preset(args.preset)
    if args.quick:
        data, args.workers, args.train_steps = quick_data(data, keep=3), [0], 1
    frames_per_clip = cfg.sequence_length
    rows = []

    with tempfile.TemporaryDirectory(prefix="mariofm_cache_") as cache:
        begin = time.perf_counter()
        ds = MarioClips.from_config(cfg, data, split="all", cache_dir=cache, progress=False)
        seconds = time.perf_counter() - begin
        frames = sum(len(ds.frames(i)) for i in range(len(ds.files)))
        rows.append(dict(stage=f"decode {ds.decoded} videos at {ds.size}", frames=frames, seconds=seconds))

        begin = time.perf_counter()
        ds = MarioClips.from_config(cfg, data, split="all", cache_dir=cache, progress=False)
        seconds = time.perf_counter() - begin
        rows.append(dict(stage=f"open cache of {len(ds.files)} videos", frames=frames, seconds=seconds))

        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(0)).tolist()
        begin = time.perf_counter()
        for i in order:
            ds[i]
        rows.append(dict(stage=f"load clips: {len(ds)} windows of {frames_per_clip} frames",
                         frames=len(ds) * frames_per_clip, seconds=time.perf_counter() - begin))

        batches = epoch_batches(len(ds), cfg.batch_size, cfg.seed, 0)
        for workers in args.workers:
            begin = time.perf_counter()
            for _ in DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=collate):
                pass
            rows.append(dict(stage=f"DataLoader, batch {cfg.batch_size}, {workers} workers",
                             frames=len(batches) * cfg.batch_size * frames_per_clip,
                             seconds=time.perf_counter() - begin))

    need = training_frames_per_s(cfg, args.train_steps, dev)
    rows.append(dict(stage=f"training step of the {args.preset} preset's model ({dev.type})", fps=need))
    for row in rows:
        row.setdefault("fps", row["frames"] / row["seconds"] if row.get("seconds") else None)
        row["headroom"] = row["fps"] / need

    print("\n" + header("Data pipeline", dev, load0,
                        f"Preset {args.preset}: frames {cfg.video_height}x{cfg.video_width}, clips of "
                        f"{cfg.sequence_length} frames (stride {cfg.frame_stride}), batch {cfg.batch_size}; data "
                        f"{args.data}" + (" (first 3 videos)" if args.quick else "")))
    print(table(rows, [("stage", "stage", "s"), ("frames", "frames", "d"), ("seconds", "seconds", ".2f"),
                       ("fps", "frames/s", ",.0f"), ("headroom", "x training's need", ".1f")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
