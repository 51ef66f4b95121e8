"""GPU: training clips/s and MFU of the colab and seed presets in bf16, and generated frames/s.

    python benchmarks/gpu.py                                   # colab and seed presets, first CUDA device
    python benchmarks/gpu.py --peak-tflops 312                 # a GPU missing from PEAK_TFLOPS
    python benchmarks/gpu.py --quick                           # 2 timed steps, 2 sampling steps
    python benchmarks/gpu.py --device cpu --presets smoke --quick   # exercise the script without a GPU

Without CUDA (and without --device) it says so and exits 0.

    training   AdamW steps of the preset (its batch size, activation recomputation as configured) under autocast: bf16
               where the GPU supports it, else fp16 (as mariofm.train picks); median of `--steps` after warm-up
    MFU        model FLOP/s over the GPU's dense bf16 peak. Model FLOPs: forward + backward counted by torch's
               FlopCounterMode on the meta device, without the forward that recomputing activations repeats
    generate   `--gen-batch` clips from noise with the preset's solver and steps (sample_steps), as
               `mariofm generate` does (fp32) and under bf16 autocast; frames/s = clips x T / seconds.
               The seed preset's frames are full NES frames, 240x256.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch
from harness import header, make_optimizer, peak_memory_mb, pick_device, sync, table, train_step
from torch.utils.flop_counter import FlopCounterMode

from mariofm.config import Config, preset
from mariofm.device import autocast_dtype
from mariofm.flow import fm_loss
from mariofm.sample import nfe, sample
from mariofm.unet import VideoUNet, count_parameters

# dense (no sparsity) bf16 tensor-core peak in TFLOP/s, from the vendors' data sheets; first match in the name
PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1,
               "L4": 121.0, "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override or device.type != "cuda":
        return override
    name = torch.cuda.get_device_name(device)
    return next((tf for key, tf in PEAK_TFLOPS.items() if key in name), None)


def model_gflop(cfg: Config) -> float:
    """GFLOP of one training forward + backward, counted on shapes alone (meta device), without recomputation."""
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    with torch.device("meta"):
        model = VideoUNet(cfg.replace(recompute_activations=False))
        with FlopCounterMode(display=False) as counter:
            fm_loss(model, torch.empty(shape), t=torch.full(shape[:1], 0.5), noise=torch.empty(shape))[0].backward()
    return counter.get_total_flops() / 1e9


def bench_training(cfg: Config, device: torch.device, steps: int, warmup: int) -> dict:
    torch.manual_seed(cfg.seed)
    model = VideoUNet(cfg).to(device).train()
    opt, dtype = make_optimizer(model, cfg), autocast_dtype(device, cfg) or torch.bfloat16
    shape = (cfg.batch_size, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width)
    g = torch.Generator().manual_seed(0)
    x0, noise = (torch.rand(shape, generator=g) * 2 - 1).to(device), torch.randn(shape, generator=g).to(device)
    t = torch.rand(shape[0], generator=g).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        begin = time.perf_counter()
        train_step(model, opt, x0, noise, t, cfg.grad_clip, amp_dtype=dtype)
        sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - begin)
    s_step = statistics.median(times)
    return dict(params=count_parameters(model) / 1e6, dtype=str(dtype).removeprefix("torch."), s_step=s_step,
                clips_s=cfg.batch_size / s_step, peak_mb=peak_memory_mb(device))


@torch.no_grad()
def bench_generation(cfg: Config, device: torch.device, batch: int, steps: int, dtype: torch.dtype | None) -> dict:
    torch.manual_seed(cfg.seed)
    model = VideoUNet(cfg).to(device).eval()  # untrained weights cost the same time as trained ones
    x1 = torch.randn(batch, cfg.video_channels, cfg.sequence_length, cfg.video_height, cfg.video_width,
                     generator=torch.Generator().manual_seed(0)).to(device)
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        sample(model, x1, 1, cfg.solver)  # warm-up: kernel selection, allocator
        sync(device)
        begin = time.perf_counter()
        sample(model, x1, steps, cfg.solver)
        sync(device)
    seconds = time.perf_counter() - begin
    return dict(seconds=seconds, frames_s=batch * cfg.sequence_length / seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--presets", nargs="*", default=["colab", "seed"])
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps first (cuDNN autotuning)")
    parser.add_argument("--gen-batch", type=int, default=4, help="clips generated at once")
    parser.add_argument("--gen-steps", type=int, default=None, help="sampling steps (default: the preset's)")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--device", default=None, help="default: cuda; cpu only to exercise the script")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads (--device cpu)")
    parser.add_argument("--quick", action="store_true", help="2 timed steps, 1 warm-up, 2 sampling steps")
    args = parser.parse_args()
    if args.device is None and not torch.cuda.is_available():
        print(f"Skipped: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False). Run this "
              "on a GPU machine; to exercise the script on the CPU: "
              "python benchmarks/gpu.py --device cpu --presets smoke --quick")
        return 0
    if args.quick:
        args.steps, args.warmup, args.gen_steps = 2, 1, 2
    torch.set_num_threads(args.threads)
    dev, load0 = pick_device(args.device), os.getloadavg()
    peak = peak_tflops(dev, args.peak_tflops)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels

    train_rows, gen_rows = [], []
    for name in args.presets:
        cfg = preset(name)
        print(f"{name}: training ...", file=sys.stderr, flush=True)
        row = dict(preset=name, batch=cfg.batch_size, gflop=model_gflop(cfg))
        row |= bench_training(cfg, dev, args.steps, args.warmup)
        row["mfu"] = row["gflop"] / row["s_step"] / (peak * 1e3) if peak else None
        train_rows.append(row)
        steps = args.gen_steps or cfg.sample_steps
        for label, dtype in (("fp32", None), ("bf16 autocast", torch.bfloat16)):
            print(f"{name}: generating ({label}) ...", file=sys.stderr, flush=True)
            gen_rows.append(dict(preset=name, size=f"{cfg.video_height}x{cfg.video_width}", frames=cfg.sequence_length,
                                 precision=label, solver=f"{cfg.solver} {steps} steps ({nfe(steps, cfg.solver)} NFE)")
                            | bench_generation(cfg, dev, args.gen_batch, steps, dtype))
        if dev.type == "cuda":
            torch.cuda.empty_cache()

    peak_text = f"{peak:g} TFLOP/s dense bf16" if peak else "unknown (pass --peak-tflops)"
    print("\n" + header("GPU training and generation", dev, load0,
                        f"Peak used for MFU: {peak_text}; {args.warmup} warm-up + {args.steps} timed training steps"))
    print(table(train_rows, [("preset", "preset", "s"), ("params", "params (M)", ".1f"), ("batch", "batch", "d"),
                             ("dtype", "autocast", "s"), ("gflop", "GFLOP/step", ",.0f"), ("s_step", "s/step", ".3f"),
                             ("clips_s", "clips/s", ".2f"), ("mfu", "MFU", ".1%"), ("peak_mb", "peak MB", ",.0f")]))
    print()
    print(table(gen_rows, [("preset", "preset", "s"), ("size", "H x W", "s"), ("frames", "frames/clip", "d"),
                           ("precision", "precision", "s"), ("solver", "solver", "s"), ("seconds", "seconds", ".2f"),
                           ("frames_s", "generated frames/s", ".1f")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
