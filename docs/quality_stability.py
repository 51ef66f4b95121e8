"""Do the scores measure the model or the real set? Score one model's samples against several recordings.

    python docs/quality_stability.py --checkpoint runs/cpu/video_model.pt --num 64 --steps 10 --solver euler \
        data_video/fresh1 data_video/fresh2

The same `num` generated clips (one noise seed) are compared, as `python -m mariofm evaluate --data DIR` compares
them, with `num` held-out clips of each folder's stratified val split and `num` of its training split as the
real-vs-real floor (`--val-fraction`: the split's held-out share; evaluate uses recordings.VAL_FRACTION). Recorded
with other seeds, the folders are disjoint samples of the same game: a stable metric gives the model the same
score, relative to each folder's floor, on every one. Prints one row per folder and the largest relative
difference between folders per metric.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mariofm.checkpoint import load_model
from mariofm.data import MarioClips
from mariofm.metrics import compare
from mariofm.recordings import VAL_FRACTION
from mariofm.sample import noise_for, sample_videos


def real_windows(cfg, folder: str, split: str, n: int, seed: int, val_fraction: float) -> np.ndarray:
    """n windows of `split` at the model's size, chosen as mariofm.data.real_clips chooses them."""
    ds = MarioClips.from_config(cfg, folder, split, val_fraction=val_fraction, progress=False)
    chosen = np.sort(np.random.default_rng(seed).choice(len(ds), size=min(n, len(ds)), replace=False))
    return np.stack([ds.window(int(i)) for i in chosen])


KEYS = ("video_fd", "video_fd_floor", "video_kid", "frame_fd", "frame_fd_floor", "frame_kid", "in_palette_ratio",
        "residual_ratio", "scroll_w1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", nargs="+", help="folders of recorded clips")
    parser.add_argument("--checkpoint", default=None, help="default: the shipped model")
    parser.add_argument("--num", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--solver", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION)
    parser.add_argument("--samples", type=Path, default=None, help=".npy: reuse the generated clips saved here")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    model, cfg = load_model(args.checkpoint)
    if args.samples and args.samples.exists():
        fake = np.load(args.samples)
    else:
        fake = sample_videos(model, noise_for(cfg, args.num, args.seed + 1), args.steps or cfg.sample_steps,
                             args.solver or cfg.solver)
        if args.samples:
            np.save(args.samples, fake)
    scores = {}
    for folder in args.data:
        real, floor = (real_windows(cfg, folder, split, len(fake), args.seed, args.val_fraction)
                       for split in ("val", "train"))
        m = compare(fake, real, real_floor=floor, bootstrap=200)
        for key in ("video_fd", "frame_fd"):  # the score relative to this folder's real-vs-real floor
            m[f"{key}_ratio"] = m[key] / m[f"{key}_floor"]
        scores[folder] = m
        print(folder, " ".join(f"{k}={m[k]:.3g}" for k in (*KEYS, "video_fd_ratio", "frame_fd_ratio")), flush=True)
    print("\nlargest difference between folders, relative to their mean:")
    for key in (*KEYS, "video_fd_ratio", "frame_fd_ratio", "video_fd_lo", "video_fd_hi"):
        values = [m[key] for m in scores.values()]
        mean = sum(values) / len(values)
        print(f"  {key:<18} {' / '.join(f'{v:.3g}' for v in values):<30} {(max(values) - min(values)) / abs(mean):.1%}")
    if args.out:
        args.out.write_text(json.dumps(dict(checkpoint=str(args.checkpoint or "shipped"), num=len(fake),
                                            val_fraction=args.val_fraction, scores=scores), indent=2))


if __name__ == "__main__":
    main()
