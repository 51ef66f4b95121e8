"""Score several models on the same held-out clips with the same noise: the rows of docs/quality.md.

    python docs/quality_ablation.py --data data_video/mario --num 48 --out runs/ablation.json \
        x0=runs/x0/video_model_step500.pt velocity=runs/v/video_model_step500.pt \
        "x0, no EMA=runs/x0/video_model_step500.pt:raw" "x0, 4 Euler steps=runs/x0/video_model.pt@euler4"

A row is NAME=CHECKPOINT, optionally followed by `:raw` (the raw weights instead of the EMA copy) and/or
`@SOLVERSTEPS` (e.g. `@heun10`, `@euler4`; default: the checkpoint's own sampler). Every row is sampled from
`noise_for(cfg, num, seed + 1)` and compared (mariofm.metrics.compare, 95% bootstrap intervals) with the same
`num` held-out clips of the stratified val split and the same `num` training clips as the real-vs-real floor,
as `python -m mariofm evaluate` does. It prints a markdown table, writes the report as JSON, and with
--figure writes frame 4 of the first 6 samples of each row (real clips on top) as one PNG (--scale 2 --colors 256
keeps a dozen rows under ~300 KB).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from mariofm.checkpoint import load_model
from mariofm.evaluate import held_out_sets
from mariofm.metrics import compare
from mariofm.sample import nfe, noise_for, sample_videos


def neighbour_difference(videos: np.ndarray) -> float:
    """Mean |x[..., i+1, :] - x[..., i, :]| over horizontally adjacent pixels (8-bit RGB): the grain measure of
    shared/reference/quality-facts.md (real frames at 60x64: ~8; per-pixel noise pushes it up, blur down)."""
    return float(np.abs(np.diff(videos.astype(np.int16), axis=3)).mean())


def parse_row(spec: str) -> tuple[str, str, bool, str | None, int | None]:
    name, _, rest = spec.partition("=")
    match = re.fullmatch(r"(.+?)(:raw)?(@(heun|euler)(\d+))?", rest)
    if not name or not match:
        raise ValueError(f"bad row {spec!r}: expected NAME=CHECKPOINT[:raw][@heunN|@eulerN]")
    return name, match[1], not match[2], match[4], int(match[5]) if match[5] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="NAME=CHECKPOINT[:raw][@heunN|@eulerN]")
    parser.add_argument("--data", default="data_video/mario")
    parser.add_argument("--num", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--out", type=Path, required=True, help="JSON report")
    parser.add_argument("--figure", type=Path, default=None, help="PNG: frame 4 of 6 samples per row")
    parser.add_argument("--scale", type=int, default=3, help="figure: pixels per frame pixel (2 keeps a PNG of "
                        "many rows under ~300 KB)")
    parser.add_argument("--colors", type=int, default=0, help="figure: save with this many colours, no "
                        "dithering (256 makes it ~3x smaller; 0: full colour)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    report, strips, real = {}, {}, None
    for spec in args.rows:
        name, ckpt, ema, solver, steps = parse_row(spec)
        model, cfg = load_model(ckpt, ema=ema)
        solver, steps = solver or cfg.solver, steps or cfg.sample_steps
        if real is None:
            real, floor = held_out_sets(cfg, args.data, args.num, args.seed)
            n = min(len(real), len(floor), args.num)
            real, floor = real[:n], floor[:n]
            strips["real (held out)"] = real[:6, 4]
            report["real floor"] = dict(grain=neighbour_difference(floor))
        begin = time.perf_counter()
        fake = sample_videos(model, noise_for(cfg, n, args.seed + 1), steps, solver)
        m = compare(fake, real, real_floor=floor, bootstrap=args.bootstrap)
        report[name] = dict(checkpoint=ckpt, ema=ema, solver=solver, steps=steps, nfe=nfe(steps, solver),
                            sample_s=round(time.perf_counter() - begin, 1), grain=neighbour_difference(fake),
                            metrics=m)
        strips[name] = fake[:6, 4]
        print(f"{name}: FD-3D {m['video_fd']:.1f} (floor {m['video_fd_floor']:.1f}), "
              f"palette x{m['in_palette_ratio']:.2f}, residual x{m['residual_ratio']:.2f}, "
              f"grain {report[name]['grain']:.1f}", flush=True)

    rows = [(k, r) for k, r in report.items() if k != "real floor"]
    m0 = rows[0][1]["metrics"]
    print(f"\n{n} generated vs {n} held-out clips; real-vs-real floor: FD-3D {m0['video_fd_floor']:.1f} "
          f"[{m0['video_fd_floor_lo']:.1f}, {m0['video_fd_floor_hi']:.1f}], frame FD {m0['frame_fd_floor']:.2f}, "
          f"residual x{m0['residual_ratio_floor']:.2f}, grain {report['real floor']['grain']:.1f}\n")
    print("| row | sampler | FD-3D [95% CI] | FD-3D / floor | frame FD [95% CI] | KID-3D | palette fidelity / real "
          "| scroll residual / real | scroll W1 | grain |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        m = r["metrics"]
        print(f"| {name} | {r['solver']} {r['steps']} | {m['video_fd']:.1f} [{m['video_fd_lo']:.1f}, "
              f"{m['video_fd_hi']:.1f}] | {m['video_fd'] / m['video_fd_floor']:.2f} | "
              f"{m['frame_fd']:.2f} [{m['frame_fd_lo']:.2f}, "
              f"{m['frame_fd_hi']:.2f}] | {m['video_kid']:.2f} | {m['in_palette_ratio']:.2f} | "
              f"{m['residual_ratio']:.2f} | {m['scroll_w1']:.2f} | {r['grain']:.1f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(num=n, seed=args.seed, data=str(args.data), rows=report), indent=2))
    if args.figure:
        from PIL import Image, ImageDraw

        scale, label_w = args.scale, 190
        h, w = real.shape[2] * scale, real.shape[3] * scale
        sheet = Image.new("RGB", (label_w + 6 * w, h * len(strips)), "white")
        draw = ImageDraw.Draw(sheet)
        for i, (name, frames) in enumerate(strips.items()):
            draw.text((4, i * h + h // 2 - 6), name, fill="black")
            for j, frame in enumerate(frames):
                sheet.paste(Image.fromarray(frame).resize((w, h), Image.NEAREST), (label_w + j * w, i * h))
        args.figure.parent.mkdir(parents=True, exist_ok=True)
        if args.colors:  # no dithering: it would add grain of its own to a figure that shows grain. Max coverage,
            # not median cut: median cut drops rare colours (the real clips' green pipes turned olive)
            sheet = sheet.quantize(args.colors, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        sheet.save(args.figure, optimize=True)
        print(f"wrote {args.figure}")


if __name__ == "__main__":
    main()
