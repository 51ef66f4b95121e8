"""Sampler efficiency: FD-3D and bits/dim of one checkpoint against NFE, for the Euler and Heun solvers.

    python benchmarks/sampler_nfe.py                                   # the shipped model, if there is one
    python benchmarks/sampler_nfe.py --checkpoint runs/cpu/video_model.pt --num 64
    python benchmarks/sampler_nfe.py --quick                           # a tiny net trained for 10 steps

NFE (network evaluations) is the cost of sampling. For each solver and step count, from the same noise:

    FD-3D      Fréchet distance of mariofm.features.VideoFeatures between `--num` samples and `--num` held-out clips
    RMS error  root-mean-square distance of the samples (floats in [-1, 1]) to a reference solution of the same
               ODE from the same noise (Heun with `--ref-steps` steps): the solver's own error, without the noise
               of a finite-N FD, which it drives
    bits/dim   of `--bpd-clips` held-out clips (mariofm.likelihood), the likelihood ODE solved with that solver
               and step count; the same dequantisation noise and Hutchinson probes in every row

Heun costs 2 NFE per step (2·steps − 1 when sampling: the last step is Euler, see mariofm.sample). The summary
names the smallest NFE at which Heun is at least as good as Euler's best in the grid.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from harness import header, pick_device, table
from peers import QUICK, build
from time_to_quality import quick_data, train_for

from mariofm.checkpoint import SHIPPED, load_model
from mariofm.data import MarioClips
from mariofm.evaluate import held_out_sets
from mariofm.features import VideoFeatures, frechet_distance
from mariofm.likelihood import bits_per_dim
from mariofm.sample import SOLVERS, nfe, noise_for, sample
from mariofm.video import to_uint8


@torch.no_grad()
def sample_floats(model: torch.nn.Module, noise: torch.Tensor, steps: int, solver: str, batch: int,
                  device: torch.device) -> torch.Tensor:
    """Samples as floats (N, C, T, H, W) on the CPU, integrated in batches of `batch` clips."""
    return torch.cat([sample(model, x.to(device), steps, solver).float().cpu() for x in noise.split(batch)])


def first_match(rows: list[dict], key: str, best: float) -> dict | None:
    """The row of least NFE whose `key` is at most `best`, or None."""
    hits = [row for row in rows if row[key] <= best]
    return min(hits, key=lambda row: row["nfe"]) if hits else None


def summary(euler: list[dict], heun: list[dict], key: str, label: str) -> str:
    best = min(euler, key=lambda row: row[key])
    match = first_match(heun, key, best[key])
    found = f"Heun matches it at {match['nfe']} NFE ({match[key]:.4g})" if match else \
        "Heun does not reach it within the grid"
    return f"- {label}: Euler's best is {best[key]:.4g} at {best['nfe']} NFE; {found}."


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--checkpoint", default=None, help=f"run folder, .pt or .safetensors (default: {SHIPPED})")
    parser.add_argument("--data", default="data_video/mario", help="folder of recorded clips (held-out split)")
    parser.add_argument("--num", type=int, default=32, help="generated and real clips for FD-3D")
    parser.add_argument("--euler-steps", type=int, nargs="*", default=[1, 2, 4, 8, 16, 32, 64])
    parser.add_argument("--heun-steps", type=int, nargs="*", default=[2, 3, 4, 6, 8, 12, 16, 24, 32])
    parser.add_argument("--ref-steps", type=int, default=64, help="Heun steps of the reference solution")
    parser.add_argument("--bpd-clips", type=int, default=2, help="held-out clips for bits/dim (0: skip)")
    parser.add_argument("--bpd-steps", type=int, nargs="*", default=[1, 2, 4, 8, 16],
                        help="steps of the likelihood ODE, for each solver")
    parser.add_argument("--batch", type=int, default=8, help="clips per forward pass when sampling")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--quick", action="store_true", help="a smoke-sized net trained 10 steps, 4 clips, short grids")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dev, load0, data = pick_device(args.device), os.getloadavg(), Path(args.data)

    if args.quick and args.checkpoint is None:  # the pipeline, not a result: an almost untrained net
        data = quick_data(data)
        cfg = QUICK
        model = build("mariofm", cfg).to(dev)
        train_for(model, cfg, MarioClips.from_config(cfg, data, progress=False), 0, 10, dev, "quick training")
        source = "a smoke-sized net trained for 10 steps (--quick: the numbers mean nothing)"
    else:
        if args.checkpoint is None and not SHIPPED.exists():
            parser.error(f"no shipped model at {SHIPPED}; pass --checkpoint RUN/video_model.pt (train one with "
                         "`python -m mariofm train --preset cpu`)")
        model, cfg = load_model(args.checkpoint, device=dev)
        source = str(args.checkpoint or SHIPPED)
    if args.quick:
        args.num, args.euler_steps, args.heun_steps, args.ref_steps = 4, [1, 2, 4], [2, 3], 8
        args.bpd_clips, args.bpd_steps = min(args.bpd_clips, 1), [1, 2]
    model.eval()

    real, _ = held_out_sets(cfg, data, args.num, args.seed)
    features = VideoFeatures(args.seed)
    real_feats = features(real)
    noise = noise_for(cfg, len(real), args.seed + 1)
    reference = sample_floats(model, noise, args.ref_steps, "heun", args.batch, dev)

    grids = {"euler": args.euler_steps, "heun": args.heun_steps}
    rows: dict[str, list[dict]] = {"euler": [], "heun": []}
    for solver, grid in grids.items():
        for steps in grid:
            begin = time.perf_counter()
            x = sample_floats(model, noise, steps, solver, args.batch, dev)
            rows[solver].append(dict(solver=solver, steps=steps, nfe=nfe(steps, solver),
                                     fd3d=frechet_distance(features(to_uint8(x)), real_feats),
                                     rms=(x - reference).square().mean().sqrt().item(),
                                     seconds=time.perf_counter() - begin))
            print(f"sampling {solver} {steps} steps: FD-3D {rows[solver][-1]['fd3d']:.3f}", file=sys.stderr)
    ref_fd = frechet_distance(features(to_uint8(reference)), real_feats)

    bpd_rows = []
    if args.bpd_clips:
        clips = torch.from_numpy(real[:args.bpd_clips]).permute(0, 4, 1, 2, 3).to(dev)  # uint8 (B, C, T, H, W)
        for solver in SOLVERS:
            for steps in args.bpd_steps:
                begin = time.perf_counter()
                # the same generator state in every row: the same dequantisation noise and probes
                out = bits_per_dim(model, clips, steps, solver, generator=torch.Generator().manual_seed(args.seed))
                bpd_rows.append(dict(solver=solver, steps=steps, nfe=out.likelihood.nfe,
                                     bpd=float(out.bpd.mean()), seconds=time.perf_counter() - begin))
                print(f"bits/dim {solver} {steps} steps: {bpd_rows[-1]['bpd']:.4f}", file=sys.stderr)

    shape = (cfg.sequence_length, cfg.video_height, cfg.video_width)
    print("\n" + header("Sampler efficiency", dev, load0,
                        f"Model: {source}; clips {shape} (T, H, W); {len(real)} samples vs {len(real)} held-out clips "
                        f"of {args.data}; reference: Heun {args.ref_steps} steps ({nfe(args.ref_steps, 'heun')} "
                        f"NFE), whose own FD-3D is {ref_fd:.4g}"))
    print(table(rows["euler"] + rows["heun"], [
        ("solver", "solver", "s"), ("steps", "steps", "d"), ("nfe", "NFE", "d"), ("fd3d", "FD-3D", ".4g"),
        ("rms", "RMS error vs reference", ".4f"), ("seconds", "seconds", ".1f")]))
    print()
    print(summary(rows["euler"], rows["heun"], "fd3d", "FD-3D"))
    print(summary(rows["euler"], rows["heun"], "rms", "RMS error vs reference"))
    if bpd_rows:
        print(f"\nBits/dim of {args.bpd_clips} held-out clip(s), 1 Hutchinson probe (NFE counts forward passes; "
              "each also takes one vector-Jacobian product):\n")
        # the solver's error moves bits/dim either way: score each row by its distance to the most accurate one
        ref = max((row for row in bpd_rows if row["solver"] == "heun"), key=lambda row: row["steps"])
        for row in bpd_rows:
            row["bpd_err"] = abs(row["bpd"] - ref["bpd"])
        print(table(bpd_rows, [("solver", "solver", "s"), ("steps", "steps", "d"), ("nfe", "NFE", "d"),
                               ("bpd", "bits/dim", ".4f"), ("bpd_err", "distance to Heun's at most steps", ".4f"),
                               ("seconds", "seconds", ".1f")]))
        print()
        print(summary([row for row in bpd_rows if row["solver"] == "euler"],
                      [row for row in bpd_rows if row["solver"] == "heun" and row is not ref], "bpd_err",
                      f"bits/dim error (vs Heun {ref['steps']} steps, {ref['nfe']} NFE)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
