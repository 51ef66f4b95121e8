"""Time one training step (forward + backward + AdamW) of the VideoUNet per preset and conv kind, on this CPU.

    python benchmarks/bench_train_step.py                      # all configs, default threads
    python benchmarks/bench_train_step.py --threads 1 --rounds 2 --only cpu

Every config runs in its own subprocess, so its peak memory (getrusage's max RSS) is its own; with --rounds > 1
the configs take turns, so a busy neighbour slows them all alike. Prints a markdown table: median seconds per
step, steps/s and clips/s from that median, CPU seconds per step (less sensitive to a shared machine than the
wall clock), GFLOP per step (counted on the meta device: exact, no noise) and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

# name, preset, overrides, channels_last_3d
CONFIGS = [
    ("smoke 2+1d", "smoke", {}, False),
    ("smoke 3d", "smoke", {"conv": "3d"}, False),
    ("cpu 2+1d", "cpu", {}, False),
    ("cpu 3d", "cpu", {"conv": "3d"}, False),
    ("cpu 2+1d channels_last_3d", "cpu", {}, True),
    ("cpu 3d channels_last_3d", "cpu", {"conv": "3d"}, True),
    ("cpu seed design (3d, no patches)", "cpu", {"conv": "3d", "patch_size": 1}, False),
    ("cpu seed design channels_last_3d", "cpu", {"conv": "3d", "patch_size": 1}, True),
    ("colab 2+1d b=1", "colab", {"batch_size": 1}, False),
]


def channels_last_3d(model):
    """Put every 5-D weight in channels_last_3d (NDHWC); model.to() refuses the 4-D TemporalConv weights."""
    import torch

    for p in model.parameters():
        if p.dim() == 5:
            p.data = p.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def child(spec: dict) -> dict:
    """Build one config, take `warmup` untimed then `steps` timed training steps; return the measurements."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from mariofm.config import preset
    from mariofm.unet import VideoUNet, count_parameters

    torch.set_num_threads(spec["threads"])
    cfg = preset(spec["preset"], **spec["overrides"])
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)

    def loss_fn(model, x0):  # flow matching: x_t = (1 - t)·x0 + t·ε, target v* = ε - x0
        t = torch.rand(x0.shape[0])
        eps = torch.randn_like(x0)
        tt = t.view(-1, 1, 1, 1, 1)
        return F.mse_loss(model((1 - tt) * x0 + tt * eps, t), eps - x0)

    with torch.device("meta"):  # count FLOPs on shapes alone: no compute, no noise
        meta_model = VideoUNet(cfg)
        with FlopCounterMode(display=False) as counter:
            loss_fn(meta_model, torch.empty(shape)).backward()

    torch.manual_seed(cfg.seed)
    model = VideoUNet(cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    x0 = torch.rand(shape) * 2 - 1
    if spec["channels_last"]:
        model, x0 = channels_last_3d(model), x0.contiguous(memory_format=torch.channels_last_3d)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = [], []
    for i in range(spec["warmup"] + spec["steps"]):
        w0, c0 = time.perf_counter(), time.process_time()
        loss = loss_fn(model, x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        if i >= spec["warmup"]:
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return dict(params=count_parameters(model), gflop=counter.get_total_flops() / 1e9, batch=cfg.batch_size,
                conv=cfg.conv, wall=wall, cpu=cpu, rss_mb=rss1 / 1024, train_mb=(rss1 - rss0) / 1024)


def machine() -> str:
    model = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def main() -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads per run")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per config and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (allocator, oneDNN setup)")
    parser.add_argument("--rounds", type=int, default=1, help="run every config this many times, in turn")
    parser.add_argument("--only", nargs="*", default=None, help="run configs whose name contains any of these")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    configs = [c for c in CONFIGS if not args.only or any(s in c[0] for s in args.only)]
    if not configs:
        raise SystemExit(f"--only {args.only} matches none of {[c[0] for c in CONFIGS]}")
    load0 = os.getloadavg()
    results: dict[str, list[dict]] = {}
    for r in range(args.rounds):
        for name, preset_name, overrides, cl in configs:
            spec = dict(preset=preset_name, overrides=overrides, channels_last=cl, threads=args.threads,
                        steps=args.steps, warmup=args.warmup)
            print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True,
                                 text=True, check=True)
            results.setdefault(name, []).append(json.loads(out.stdout.strip().splitlines()[-1]))
    load1 = os.getloadavg()

    print(f"\nMachine: {machine()}; torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}); "
          f"threads {args.threads}; load average {load0[0]:.1f} before, {load1[0]:.1f} after")
    print(f"Command: `python {' '.join(sys.argv)}` ({args.warmup} warm-up + {args.steps} timed steps "
          f"x {args.rounds} round(s) per config)\n")
    print("| config | conv | batch | params | GFLOP/step | s/step (median) | steps/s | clips/s | "
          "CPU s/step | peak RSS MB | RSS grown in steps MB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    medians = {}
    for name, runs in results.items():
        wall = statistics.median(w for run in runs for w in run["wall"])
        cpu = statistics.median(c for run in runs for c in run["cpu"])
        medians[name] = wall
        r = runs[0]
        print(f"| {name} | {r['conv']} | {r['batch']} | {r['params'] / 1e6:.2f}M | {r['gflop']:.1f} | "
              f"{wall:.3f} | {1 / wall:.2f} | {r['batch'] / wall:.2f} | {cpu:.3f} | "
              f"{max(x['rss_mb'] for x in runs):.0f} | {max(x['train_mb'] for x in runs):.0f} |")
    for small in ("smoke", "cpu"):
        a, b = results.get(f"{small} 2+1d"), results.get(f"{small} 3d")
        if a and b:
            print(f"\n{small}: 2+1d runs {medians[f'{small} 3d'] / medians[f'{small} 2+1d']:.2f}x the clips/s of "
                  f"3d (FLOP ratio {b[0]['gflop'] / a[0]['gflop']:.2f}x)")
    seed = {name: wall for name, wall in medians.items() if name.startswith("cpu seed design")}
    if seed and "cpu 2+1d" in medians:  # the seed's design in its faster memory layout
        best = min(seed, key=seed.get)
        print(f"\ncpu: 2+1d with patches runs {seed[best] / medians['cpu 2+1d']:.2f}x the clips/s of {best}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
