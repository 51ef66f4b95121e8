"""The README's main job: real gameplay in, generated gameplay out, on a laptop CPU in about a quarter hour.

    python -m mariofm demo                 # record (if needed) → preview → train 10 min → generate
    python -m mariofm demo --no-train      # generate with the shipped model instead of training

1. records a small data set into `data_video/mario` when it holds no clips yet (seeded, so reproducible),
2. writes a preview of the real clips (GIF + contact sheet) to `outputs/`,
3. trains the `cpu` preset for a wall-clock budget (`--minutes`),
4. generates a grid GIF and MP4 from the trained (EMA) model, and prints where everything is,
5. scores it beside the shipped model and real footage on held-out clips (`score_table`, under a minute).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mariofm.cli import positive_int
from mariofm.config import preset


def contact_sheet(clips: np.ndarray, frames_per_clip: int = 6) -> np.ndarray:
    """(N, T, H, W, 3) clips → one image: a row per clip, `frames_per_clip` evenly spaced frames across."""
    from mariofm.video import video_grid

    idx = np.linspace(0, clips.shape[1] - 1, frames_per_clip).round().astype(int)
    frames = clips[:, idx]  # (N, k, H, W, 3)
    return video_grid(frames.reshape(-1, 1, *frames.shape[2:]), ncols=frames_per_clip)[0]


def preview_real(data: Path, out: Path, fps: int) -> list[Path]:
    from PIL import Image

    from mariofm.data import real_clips
    from mariofm.video import video_grid, write_gif

    # one half-size decode for both: a full-size frame cache of every clip would take ~2 GB of disk
    clips = real_clips(data, n=6, size=(120, 128), sequence_length=48, frame_stride=1, split="all", seed=0)
    sheet, gif = out / "real_contact_sheet.png", out / "real_preview.gif"
    Image.fromarray(contact_sheet(clips)).save(sheet)
    write_gif(gif, video_grid(clips[:4], ncols=2), fps)
    return [sheet, gif]


SCORES = (("FD-3D (video)", "video_fd"), ("FD (frames)", "frame_fd"), ("palette fidelity, x real", "in_palette"),
          ("scroll residual, x real", "residual_ratio"))


def score_table(models: dict[str, str | Path | None], data: str | Path, num: int = 16, seed: int = 0) -> str:
    """`evaluate` each model (None: the shipped one) on the same `num` held-out clips with the same noise, and
    lay the scores out beside the real-vs-real floor: what real footage scores on each metric at this N."""
    from mariofm.evaluate import evaluate

    reports = {name: evaluate(ckpt, data, num=num, seed=seed, bpd_clips=0, bootstrap=0, progress=False)["metrics"]
               for name, ckpt in models.items()}
    floor = next(iter(reports.values()))  # the floor depends on the data and N only, not on the model
    columns = {**reports, "real clips (floor)": {"video_fd": floor["video_fd_floor"],
                                                 "frame_fd": floor["frame_fd_floor"], "in_palette": 1.0,
                                                 "residual_ratio": floor["residual_ratio_floor"]}}
    for name, m in reports.items():  # palette fidelity as a ratio to the real floor set's
        columns[name] = {**m, "in_palette": m["in_palette_ratio"]}
    width = max(len(label) for label, _ in SCORES)
    lines = [f"{'':<{width}}  " + "  ".join(f"{name:>18}" for name in columns)]
    lines += [f"{label:<{width}}  " + "  ".join(f"{col[key]:>18.3g}" for col in columns.values())
              for label, key in SCORES]
    return "\n".join(lines)


def run_demo(data: str | Path = "data_video/mario", out: str | Path = "outputs", *, minutes: float = 10.0,
             train_model: bool = True, clips: int = 40, frames: int = 300, seed: int = 0, num: int = 8,
             steps: int | None = None) -> dict:
    from mariofm.checkpoint import MODEL
    from mariofm.generate import generate
    from mariofm.record import record_clips
    from mariofm.train import train

    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    begin = time.perf_counter()
    if not any(data.glob("*.avi")):
        print(f"[1/4] recording {clips} clips of {frames} frames of real gameplay into {data}")
        record_clips(data, clips=clips, frames=frames, seed=seed, workers=2)
    else:
        print(f"[1/4] using the {len(list(data.glob('*.avi')))} clips already in {data}")
    print("[2/4] previewing real clips")
    made = preview_real(data, out, fps=30)
    checkpoint = None
    if train_model:
        print(f"[3/4] training the cpu preset for {minutes:g} minutes")
        # the demo's own run folder: a second demo replaces the first one's run (train says what it removes)
        run = train(preset("cpu"), data, out / "run", minutes=minutes, checkpoint_every=100, overwrite=True)
        checkpoint = run / MODEL
        made += [run / "loss_curve.png", run / "metrics.jsonl"]
    else:
        print("[3/4] skipping training: using the shipped model")
    print("[4/4] generating videos")
    info = generate(checkpoint, out / "generated", num=num, steps=steps, seed=seed, mp4=True)
    made += [Path(f) for f in info["files"] if "grid" in f]
    print(f"\ndone in {(time.perf_counter() - begin) / 60:.1f} min; "
          f"sampling took {info['seconds']:.1f} s at {info['nfe']} NFE. Look at:")
    for path in made:
        print(f"  {path}")
    print("\nscores on 16 held-out clips, same noise (lower is better but for palette fidelity; `python -m mariofm "
          "evaluate` scores more):")
    models = {"this demo's model": checkpoint, "shipped model": None} if checkpoint else {"shipped model": None}
    table = score_table(models, data, num=16, seed=seed)
    print(table)
    return dict(files=[str(p) for p in made], generate=info, scores=table)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser("demo", help="record, preview, train and generate in one go (the README's main job)",
                              formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default="data_video/mario")
    p.add_argument("--out", default="outputs")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget")
    p.add_argument("--no-train", dest="train_model", action="store_false", help="use the shipped model")
    p.add_argument("--clips", type=positive_int, default=40, help="clips to record when the data folder is empty")
    p.add_argument("--frames", type=positive_int, default=300, help="frames per recorded clip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num", type=int, default=8, help="videos to generate")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's sample_steps)")
    p.set_defaults(func=_cli)


def _cli(args) -> int:
    run_demo(args.data, args.out, minutes=args.minutes, train_model=args.train_model, clips=args.clips,
             frames=args.frames, seed=args.seed, num=args.num, steps=args.steps)
    return 0
