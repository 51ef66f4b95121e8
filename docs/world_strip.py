"""Figure: world models side by side, one row each, playing the same real start with right + B held.

    OMP_NUM_THREADS=1 python docs/world_strip.py --data /work/data/mario --split val --clip 7 --start 40 \
        --row before=<the model before's .safetensors> \
        --row "marks 0.9=mariofm/checkpoints/mariofm_world.safetensors:0.9" \
        --row shipped=mariofm/checkpoints/mariofm_world.safetensors --out docs/media/world-wider.png

(the model before: `git show e1e4ea7:mariofm/checkpoints/mariofm_world.safetensors > before.safetensors`)

Each --row is LABEL=CHECKPOINT, or LABEL=CHECKPOINT:MARK to play with another own_mark (mariofm.rollout
.made_by_model); every other play setting is the checkpoint's own. Columns: the last real context frame, then
the generated frames given by --shown (1-based), enlarged --zoom times, nearest neighbour. The rollouts are those
of `python -m mariofm rollout --policy right+b` with the same start and seed, at the same thread count: the same
seed gives the same frames on a CPU with the same number of threads, while another number sums in another order,
and over a few hundred frames the difference grows into another picture (here from about frame 100 at 2 threads
against 1).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from mariofm.checkpoint import load_model
from mariofm.conditioning import action_bits, buttons_byte
from mariofm.rollout import rollout
from mariofm.world_data import recording_start


def play(spec: str, args) -> tuple[str, np.ndarray]:
    """(label, frames): the last real context frame, then the rollout's frames (index j is frame j)."""
    label, _, source = spec.partition("=")
    path, _, mark = source.partition(":")
    model, cfg = load_model(path, device="cpu")
    context, real = recording_start(args.data, cfg, args.clip, args.start, args.split)
    k = cfg.context_frames
    held = action_bits(np.full(max(args.shown), buttons_byte("right+b"), np.uint8))
    frames = rollout(model, context, torch.cat([real[:k], held]), seed=args.seed,
                     own_mark=float(mark) if mark else None)
    return label, np.concatenate([context[-1:], frames])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", action="append", required=True, help="LABEL=CHECKPOINT[:OWN_MARK], one per row")
    p.add_argument("--data", default="data_video/mario")
    p.add_argument("--split", default="val", choices=("train", "val", "all"))
    p.add_argument("--clip", type=int, default=0)
    p.add_argument("--start", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shown", type=int, nargs="+", default=[1, 5, 13, 37, 97, 197, 300])
    p.add_argument("--zoom", type=int, default=3)
    p.add_argument("--out", default="world-strip.png")
    args = p.parse_args()
    rows = [play(spec, args) for spec in args.row]
    h, w = rows[0][1].shape[1:3]
    cell_w, cell_h, gap, left, top = w * args.zoom, h * args.zoom, 6, 95, 22
    columns = [0, *args.shown]
    sheet = Image.new("RGB", (left + len(columns) * (cell_w + gap), top + len(rows) * (cell_h + gap)), "white")
    draw, font = ImageDraw.Draw(sheet), ImageFont.load_default(size=15)
    for j, n in enumerate(columns):
        draw.text((left + j * (cell_w + gap) + 2, 2), f"frame {n}" if n else "real", fill="black", font=font)
    for i, (label, frames) in enumerate(rows):
        y = top + i * (cell_h + gap)
        draw.text((4, y + cell_h // 2 - 8), label, fill="black", font=font)
        for j, n in enumerate(columns):
            cell = Image.fromarray(frames[n]).resize((cell_w, cell_h), Image.NEAREST)
            sheet.paste(cell, (left + j * (cell_w + gap), y))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
