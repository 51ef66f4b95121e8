"""Build the teaching notebooks from this script, then (optionally) run them top to bottom and store the outputs.

    python notebooks/build_notebooks.py                  # write all five notebooks WITHOUT outputs
    python notebooks/build_notebooks.py 03 --execute     # rebuild 03_flow_matching, run it, strip metadata

The notebooks are data, this file is their source: edit cells here, never in the .ipynb. `--execute` runs each
notebook in a fresh kernel from `notebooks/` (the full settings unless MARIOFM_SMOKE=1 is set) with nbclient,
then cleans it with `nbstripout --keep-output --keep-count`, so a committed notebook always carries the outputs
of one clean top-to-bottom run. Cells tagged `nbval-check-output` must print the same thing under the `cpu`
and the `smoke` preset: CI (`pytest --nbval-lax`) compares them with the stored outputs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from textwrap import dedent

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent
COLAB = "https://colab.research.google.com/github/mariofm/mariofm/blob/main/notebooks/{name}.ipynb"
BADGE = "[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](" + COLAB + ")"
CHECK = "nbval-check-output"  # nbval --nbval-lax compares this cell's output with the stored one


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(dedent(text).strip())


def code(source: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(dedent(source).strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def header(name: str, title: str, intro: str, goals: list[str], parameters: str) -> list:
    """Title, badge and goals; the setup cell (pip install on Colab only); the parameters cell."""
    goal_lines = "\n".join(f"- {g}" for g in goals)
    return [
        md(f"# {title}\n\n{BADGE.format(name=name)}\n\n{dedent(intro).strip()}\n\n**You will learn**\n\n{goal_lines}"),
        code(r'''
            import subprocess
            import sys
            from pathlib import Path

            if "google.colab" in sys.modules:  # on Colab: install mariofm (locally it is installed already)
                subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+https://github.com/mariofm/mariofm"],
                               check=True)
            # the repository root when this runs from notebooks/, else (Colab) the current folder
            ROOT = Path("..") if Path("../mariofm/__init__.py").is_file() else Path(".")
            OUT = ROOT / "outputs" / "notebooks"  # everything these notebooks write goes here (git ignores outputs/)
            %matplotlib inline
        '''),
        md("**Parameters.** `MARIOFM_SMOKE=1` in the environment (CI sets it) switches to the tiny `smoke` preset "
           "and tiny budgets, so that every cell runs in seconds; unset, the notebook uses the `cpu` preset."),
        code(dedent(r'''
            import os

            SMOKE = os.environ.get("MARIOFM_SMOKE") == "1"
        ''') + dedent(parameters), "parameters"),
    ]


DATA_CELL = r'''
    from mariofm.data import find_videos
    from mariofm.record import record_clips

    # the data set, as recorded by `python -m mariofm record --out data_video/mario --clips 40 --frames 300 --seed 0`
    DATA = ROOT / "data_video" / "mario"
    if SMOKE and not (DATA.is_dir() and find_videos(DATA)):
        DATA = ROOT / "outputs" / "clips_smoke"  # smoke runs (CI) bring their own: 4 short clips
    if not (DATA.is_dir() and find_videos(DATA)):
        print(f"recording real gameplay into {DATA} (once: later runs and the other notebooks reuse it)")
        if SMOKE:
            record_clips(DATA, clips=4, frames=48, seed=0, levels="1-1,1-2,3-2", progress=False)
        else:
            record_clips(DATA, clips=40, frames=300, seed=0, workers=2)
    print(f"data: {DATA} holds {len(find_videos(DATA))} clips")
'''


# ===================================================================================================== 01
def nb01() -> list:
    return header(
        "01_data", "01 · The data: real Super Mario Bros. gameplay",
        """
        A generative model can only be as good as what it learns from, and the fastest way to understand a data
        set is to look at it. mariofm records its own data: the original game runs in the `cynes` NES emulator,
        a small scripted player presses the buttons, and every frame is saved losslessly. This notebook opens
        those recordings and asks what a model will have to learn.
        """,
        ["what one recorded clip is: a lossless AVI, the buttons pressed and a JSON sidecar",
         "how the levels, the buttons and the NES palette shape the data",
         "how the screen moves: frame differences, Mario's x and the scrolling camera",
         "what resizing and the frame stride keep, and what they throw away",
         "what one training sample looks like as a tensor"],
        r'''
        PRESET = "smoke" if SMOKE else "cpu"  # the training-sample section uses this preset's frame size and stride
        ''',
    ) + [
        code(r'''
            import json
            from collections import Counter

            import matplotlib.pyplot as plt
            import numpy as np
            from IPython.display import Image, display

            from mariofm.config import PRESETS, preset
            from mariofm.data import MarioClips, resize_frame
            from mariofm.metrics import palette_usage, real_palette, scroll_stats
            from mariofm.video import gif_bytes, read_frames, to_uint8

            cfg = preset(PRESET)
        '''),
        md("""
            ## Where the clips come from

            `python -m mariofm record` starts each clip at a random point of a random level, lets the player play
            an unrecorded pre-roll, then records until it has enough frames, Mario dies, or he leaves the area. Each
            clip is three files:

            | file | holds |
            |---|---|
            | `<stem>.avi` | lossless video (PNG-compressed frames), 240×256 RGB, 30 fps |
            | `<stem>.actions.npy` | uint8 `(T,)`: the controller byte held while each frame was emulated |
            | `<stem>.json` | the level, Mario's x in every frame, why the clip ended, the seed, the ROM hash … |

            The next cell uses the full data set in `data_video/mario` when it is there, and records it when it is
            not (a smoke run records four short clips instead).
        """),
        code(DATA_CELL),
        code(r'''
            videos = [p for p in find_videos(DATA) if p.with_suffix(".json").is_file()]
            assert videos, f"no clip in {DATA} has the JSON sidecar `mariofm record` writes; this notebook reads it"
            metas = {p: json.loads(p.with_suffix(".json").read_text()) for p in videos}
            fps = metas[videos[0]]["fps"]
            lengths = [m["frames"] for m in metas.values()]
            print(f"{len(metas)} clips, {sum(lengths)} frames = {sum(lengths) / fps / 60:.1f} minutes of gameplay "
                  f"at {fps:g} fps")
            print(f"clip length: min {min(lengths)}, median {int(np.median(lengths))}, max {max(lengths)} frames")
            per_level = Counter(f"{m['world']}-{m['stage']}" for m in metas.values())
            print("clips per level:", dict(sorted(per_level.items())))
            print("how clips end:  ", dict(Counter(m["end_reason"] for m in metas.values())))
            print("sidecar fields: ", ", ".join(sorted(metas[videos[0]])))
        '''),
        md("""
            ## One clip, frame by frame

            `read_frames` decodes a whole file into uint8 `(T, H, W, 3)` RGB, the layout of every array on disk and
            on screen. We pick the clip in which Mario gets furthest, so that there is something to see.
        """),
        code(r'''
            path = max(metas, key=lambda p: metas[p]["mario_x"][-1] - metas[p]["mario_x"][0])
            meta, frames = metas[path], read_frames(path)
            print(path.name, "->", frames.dtype, frames.shape, f"world {meta['world']}-{meta['stage']}, "
                  f"ends by {meta['end_reason']}")

            fig, axes = plt.subplots(1, 6, figsize=(16, 3))
            for ax, i in zip(axes, np.linspace(0, len(frames) - 1, 6).astype(int)):
                ax.imshow(frames[i])
                ax.set_title(f"frame {i} ({i / fps:.1f} s)")
                ax.axis("off")
            plt.show()
        '''),
        md("The same clip as a video: 4 seconds, every 2nd frame, at half size (GIFs stay small this way)."),
        code(r'''
            half = np.stack([resize_frame(f, (120, 128)) for f in frames[:4 * int(fps):2]])
            display(Image(data=gif_bytes(half, fps / 2)))
        '''),
        md("""
            ## Every level looks different

            One frame from a clip of every level in the data. Overworld, underground, night and castle levels use
            different colours and tiles: a model must learn all of them, and a clip never mixes them.
        """),
        code(r'''
            by_level = {}  # "world-stage" -> every 10th frame of its first clip
            for p, m in metas.items():
                level = f"{m['world']}-{m['stage']}"
                if level not in by_level:
                    by_level[level] = read_frames(p)[::10]
            ncols = 4
            fig, axes = plt.subplots(-(-len(by_level) // ncols), ncols, figsize=(14, 3.3 * -(-len(by_level) // ncols)),
                                     squeeze=False)
            for ax in axes.flat:
                ax.axis("off")
            for ax, (level, shots) in zip(axes.flat, sorted(by_level.items())):
                ax.imshow(shots[len(shots) // 2])
                ax.set_title(f"world {level}")
            plt.show()
        '''),
        md("""
            ## What the player presses

            The NES controller is one byte, one bit per button; the sidecar names the bits. Every frame stores the
            byte held while it was emulated. The model in this repository does not use the actions (it generates
            unconditional video), but they tell us what kind of play the clips show.
        """),
        code(r'''
            bits = meta["controller_bits"]  # e.g. {"right": 1, "left": 2, ..., "b": 64, "a": 128}
            actions = np.concatenate([np.load(p.with_name(p.stem + ".actions.npy")) for p in metas])


            def button_names(byte: int) -> str:
                """A controller byte as the buttons it holds, e.g. 0xC1 -> 'right+b+a'."""
                return "+".join(name for name, bit in bits.items() if byte & bit) or "(none)"


            held = {name: float(np.mean((actions & bit) > 0)) for name, bit in bits.items()}
            combos = Counter(button_names(int(a)) for a in actions).most_common(8)
            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 3.5))
            ax1.bar(list(held), list(held.values()))
            ax1.set(ylabel="share of frames held", title=f"each button, over {len(actions)} frames")
            ax2.barh([c for c, _ in combos][::-1], [n / len(actions) for _, n in combos][::-1])
            ax2.set(xlabel="share of frames", title="the most common button combinations")
            plt.tight_layout()
            plt.show()
        '''),
        md("""
            B makes Mario run, A jumps: the scripted player holds right and B most of the time and jumps often;
            left, up, down, start and select are (almost) never pressed. The videos will mostly scroll right.

            ## Colours: the NES palette

            The NES draws every pixel from a fixed palette of 54 colours, and a Super Mario Bros. screen uses about a
            dozen of them. `mariofm.metrics.real_palette` lists the colours that cover at least 0.1% of the pixels.
        """),
        code(r'''
            shots = np.concatenate(list(by_level.values()))[None]  # (1, N, 240, 256, 3): frames from every level
            palette = real_palette(shots)
            usage = palette_usage(shots, palette)
            per_frame = [len(np.unique(f.reshape(-1, 3), axis=0)) for f in shots[0][::4]]
            print(f"{len(palette)} colours cover {1 - usage[-1]:.1%} of {shots[0].shape[0]} frames; "
                  f"one frame uses {min(per_frame)} to {max(per_frame)} distinct colours")

            fig, ax = plt.subplots(figsize=(14, 2.8))
            ax.bar(range(len(palette)), usage[:-1], color=palette / 255, edgecolor="black")
            ax.set(xlabel="palette entry (most frequent first)", ylabel="share of pixels", yscale="log",
                   title="the colours of real footage, each bar in its own colour")
            plt.show()
        '''),
        md("""
            A handful of colours and large flat areas: the data lives on a tiny, spiky subset of RGB space. Shrinking
            the frames (next sections) averages neighbouring pixels, so blends of palette colours appear at edges;
            notebook 05 and `mariofm evaluate` compare generated colours with this palette.

            ## Motion: what changes from one frame to the next

            Three views of the clip above: how many pixels change per frame, where Mario is in the level (the
            sidecar's `mario_x`), and how far the camera has scrolled (`mariofm.metrics.scroll_stats` finds the
            horizontal shift that best maps each frame onto the next; the HUD rows are masked).
        """),
        code(r'''
            change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
            mario_x = np.array(meta["mario_x"])
            shift = scroll_stats(frames[None])["shift"][0]  # camera move per frame, pixels, positive = right
            camera = np.concatenate([[0], np.cumsum(shift)])

            fig, axes = plt.subplots(3, 1, figsize=(12, 7), sharex=True)
            axes[0].plot(change)
            axes[0].set(ylabel="mean |frame diff|", title=f"{path.name}")
            axes[1].plot(mario_x - mario_x[0], label="Mario's x in the level")
            axes[1].plot(camera, label="camera (sum of scroll shifts)")
            axes[1].set(ylabel="pixels moved")
            axes[1].legend()
            axes[2].plot(mario_x - mario_x[0] - camera)
            axes[2].set(ylabel="Mario on screen\n(relative)", xlabel="frame")
            plt.tight_layout()
            plt.show()
            print(f"camera: {np.mean(shift > 0):.0%} of frames scroll right, {np.mean(shift < 0):.0%} left, "
                  f"at most {shift.max()} px per frame")
        '''),
        md("""
            Where the first two lines lie on top of each other, Mario is at the scroll point (the middle of the
            screen) and the camera moves exactly as he does; where they part, he has stopped, fallen back on screen,
            or the game has frozen (Super Mario Bros. freezes the screen for a moment when Mario is hit or powers
            up: the frame difference drops to zero). The camera never scrolls left. Frame differences are large
            when the whole background scrolls and small when only the sprites move. Over all clips, Mario's speed in
            the level:
        """),
        code(r'''
            speed = np.concatenate([np.diff(m["mario_x"]) for m in metas.values()])
            fig, ax = plt.subplots(figsize=(8, 3))
            ax.hist(speed, bins=np.arange(speed.min() - 0.5, speed.max() + 1.5))
            ax.set(xlabel="Mario's dx per frame (pixels)", ylabel="frames", yscale="log")
            plt.show()
            print(f"mean {speed.mean():.2f} px/frame; standing {np.mean(speed == 0):.0%}, "
                  f"backwards {np.mean(speed < 0):.1%}")
        '''),
        md("""
            A difference image shows *where* things move: sprites, and everything when the screen scrolls.
        """),
        code(r'''
            k = int(np.argmax(shift > 0)) if np.any(shift > 0) else 0  # the first frame pair where the camera moves
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
            axes[0].imshow(frames[k])
            axes[1].imshow(frames[k + 1])
            axes[2].imshow(np.abs(frames[k + 1].astype(int) - frames[k]).sum(-1) > 0, cmap="gray")
            for ax, title in zip(axes, [f"frame {k}", f"frame {k + 1}", "pixels that changed"]):
                ax.set_title(title)
                ax.axis("off")
            plt.show()
        '''),
        md("""
            ## What resizing and stride do

            A 240×256 frame has 61,440 pixels; a clip of 60 of them is 11 million numbers. The presets shrink the
            frames (`resize_frame` uses area averaging, no aliasing) and keep every k-th frame (`frame_stride`), so
            that a short clip still spans a useful amount of time.
        """),
        code(r'''
            frame = frames[k]
            sizes = [(240, 256), (120, 128), (60, 64), (32, 32)]
            fig, axes = plt.subplots(1, len(sizes), figsize=(16, 3.8))
            for ax, size in zip(axes, sizes):
                ax.imshow(resize_frame(frame, size), interpolation="nearest")
                ax.set_title(f"{size[0]}x{size[1]}: {size[0] * size[1] / (240 * 256):.1%} of the pixels")
                ax.axis("off")
            plt.show()
        '''),
        md("What each preset trains on (recordings run at 30 fps: the NES's 60, keeping every 2nd frame):"),
        code(r'''
            RECORD_FPS = 30
            print(f"{'preset':<7} {'frame':>8} {'frames':>7} {'stride':>7} {'source frames':>14} {'seconds':>8} "
                  f"{'numbers per clip':>17}")
            for name in PRESETS:
                c = preset(name)
                span = (c.sequence_length - 1) * c.frame_stride + 1  # source frames under one window
                numbers = c.video_channels * c.sequence_length * c.video_height * c.video_width
                print(f"{name:<7} {c.video_height:>4}x{c.video_width:<3} {c.sequence_length:>7} {c.frame_stride:>7} "
                      f"{span:>14} {span / RECORD_FPS:>8.2f} {numbers:>17,}")
        ''', CHECK),
        md("""
            A larger stride makes each step of the clip a bigger move (easier to see motion in few frames, harder
            to keep it smooth). Eight frames of the same moment at strides 1, 2 and 4:
        """),
        code(r'''
            strides = (1, 2, 4)
            start = max(0, min(k, len(frames) - 7 * max(strides) - 1))
            fig, axes = plt.subplots(len(strides), 8, figsize=(16, 1.9 * len(strides)))
            for row, s in zip(axes, strides):
                for j, ax in enumerate(row):
                    ax.imshow(resize_frame(frames[start + j * s], (60, 64)), interpolation="nearest")
                    ax.set_xticks([])
                    ax.set_yticks([])
                    if j == 0:
                        ax.set_ylabel(f"stride {s}")
                    ax.set_title(f"+{j * s / fps:.2f} s", fontsize=8)
            plt.show()
        '''),
        md("""
            ## One training sample

            `MarioClips` cuts fixed-length windows out of every file (train and validation are split by *file*, so
            no validation frame is ever trained on), caches the decoded frames at the preset's size, and hands the
            model float tensors `(C, T, H, W)` in [-1, 1].
        """),
        code(r'''
            ds = MarioClips.from_config(cfg, DATA, split="train", progress=False)
            item = ds[0]
            print(ds)
            print({key: tuple(value.shape) if hasattr(value, "shape") else value for key, value in item.items()})
        '''),
        md("These properties hold for every preset and every clip (this cell's output is checked in CI):"),
        code(r'''
            video = item["video"]
            print("dtype:", video.dtype, "| layout (C, T, H, W):",
                  tuple(video.shape) == (3, cfg.sequence_length, cfg.video_height, cfg.video_width))
            print("values in [-1, 1]:", bool(video.min() >= -1 and video.max() <= 1))
            print("to_uint8 gives back the exact frames:", np.array_equal(to_uint8(video), ds.window(0)))
            actions = item["actions"]
            print("actions:", actions.dtype, "one per frame:", tuple(actions.shape) == (cfg.sequence_length,))
        ''', CHECK),
        md("What the model sees, enlarged 4× (nearest neighbour), and how its values are distributed:"),
        code(r'''
            big = ds.window(0).repeat(4, axis=1).repeat(4, axis=2)  # (T, 4H, 4W, 3): enlarge to look at it
            display(Image(data=gif_bytes(big, fps / cfg.frame_stride)))

            fig, ax = plt.subplots(figsize=(8, 3))
            for c, colour in enumerate("rgb"):
                ax.hist(video[c].flatten().numpy(), bins=101, range=(-1, 1), histtype="step", color=colour)
            ax.set(xlabel="value in [-1, 1]", ylabel="count", yscale="log", title="a few palette colours dominate")
            plt.show()
        '''),
        md("""
            ## Summary

            - A clip is real, continuous gameplay: mostly running right, a few colours, large flat areas, a camera
              that only scrolls right.
            - The model sees short windows of small frames, scaled to [-1, 1]; resizing blends colours at edges,
              the stride trades smoothness for time covered.
            - Next: [02_architecture](02_architecture.ipynb), the network that will learn to generate these clips.
        """),
    ]


# ===================================================================================================== 02
def nb02() -> list:
    return header(
        "02_architecture", "02 · The architecture: a 3D UNet for video",
        """
        The model is a function v_θ(x_t, t): a noisy clip and a time in, a velocity of the same shape out
        (notebook 03 says why). mariofm uses a UNet that convolves over time as well as space, conditioned on t
        through a sinusoidal embedding. This notebook takes it apart: sizes, shapes, costs and what each output
        pixel can see.
        """,
        ["how big each preset's network is, and where its parameters sit",
         "how a clip's shape changes on its way through the UNet (forward hooks)",
         "how the time t enters the network",
         "full 3D versus factorised (2+1)D convolutions: parameters, FLOPs and measured speed",
         "the receptive field in frames and in pixels"],
        r'''
        PRESET = "smoke" if SMOKE else "cpu"  # the preset whose speed we measure
        REPEATS = 2 if SMOKE else 5  # timing repetitions (the median is reported)
        ''',
    ) + [
        code(r'''
            import statistics
            import time

            import matplotlib.pyplot as plt
            import torch
            from torch import nn
            from torch.utils.flop_counter import FlopCounterMode

            from mariofm.config import PRESETS, preset
            from mariofm.unet import (Down3D, Residual3DBlock, TemporalAttention, Up3D, VideoUNet, count_parameters,
                                      make_conv, sinusoidal_embedding)

            cfg = preset(PRESET)


            def forward_flops(module: nn.Module, *inputs) -> int:
                """Floating-point operations of one forward pass, counted by torch (2 per multiply-add)."""
                with FlopCounterMode(display=False) as counter:
                    module(*inputs)
                return counter.get_total_flops()
        '''),
        md("""
            ## The presets

            Four sizes of the same design. We build each on PyTorch's `meta` device: tensors there have shapes but
            no memory and no values, so even the 22M-parameter `seed` network and its FLOPs are counted instantly.
        """),
        code(r'''
            print(f"{'preset':<7} {'input (C, T, H, W)':<20} {'conv':<5} {'patch':>5} {'widths':<16} {'attn':<5} "
                  f"{'parameters':>11} {'GFLOPs/clip':>11}")
            for name in PRESETS:
                c = preset(name)
                with torch.device("meta"):  # shapes only: nothing is allocated or computed
                    model = VideoUNet(c)
                    x = torch.empty(1, c.video_channels, c.sequence_length, c.video_height, c.video_width)
                    gflops = forward_flops(model, x, torch.zeros(1)) / 1e9
                widths = str([c.base_ch * m for m in c.channel_mults])
                shape = str((c.video_channels, c.sequence_length, c.video_height, c.video_width))
                attention = str(c.temporal_attention)
                print(f"{name:<7} {shape:<20} {c.conv:<5} {c.patch_size:>5} {widths:<16} {attention:<5} "
                      f"{count_parameters(model):>11,} {gflops:>11.2f}")
        ''', CHECK),
        md("""
            GFLOPs are for one forward pass of one clip; a training step costs about three (forward, and backward
            through activations and weights). The `seed` design is 4000× the `cpu` one: that is why the `cpu`
            preset shrinks the frames, folds 2×2 pixels into channels (`patch_size=2`) and factorises its convs.

            Where the parameters of the `cpu` network are:
        """),
        code(r'''
            with torch.device("meta"):
                model = VideoUNet(preset("cpu"))
            total = count_parameters(model)
            for name, child in model.named_children():
                n = count_parameters(child)
                if n:
                    print(f"{name:<12} {type(child).__name__:<12} {n:>9,}  {n / total:6.1%}")
            print(f"{'total':<25} {total:>9,}")
        ''', CHECK),
        md("""
            The time MLP is small, the down and up paths hold most weights, and the up path is the wider one: its
            first block of every level reads the upsampled features *and* the skip connection (2× the channels).

            ## Shapes through the UNet

            Forward hooks run after a module's forward and see its input and output. We hang one on every block of
            the `cpu` network and push one clip through (on `meta` again: shapes only).
        """),
        code(r'''
            c = preset("cpu")
            with torch.device("meta"):
                model = VideoUNet(c)
            flow = []


            def log_shapes(name: str):
                def hook(module, inputs, output):
                    flow.append((name, type(module).__name__, tuple(inputs[0].shape), tuple(output.shape)))
                return hook


            watched = (Residual3DBlock, Down3D, Up3D, TemporalAttention)
            handles = [m.register_forward_hook(log_shapes(n)) for n, m in model.named_modules()
                       if isinstance(m, watched) or n in ("stem", "head")]
            with torch.device("meta"):
                out = model(torch.empty(1, 3, c.sequence_length, c.video_height, c.video_width), torch.zeros(1))
            for h in handles:
                h.remove()
            for name, kind, shape_in, shape_out in flow:
                print(f"{name:<16} {kind:<16} {str(shape_in):<24} -> {shape_out}")
            print("output:", tuple(out.shape))
        ''', CHECK),
        md("""
            Read it top to bottom: `patchify` turns the (3, 8, 60, 64) clip into (12, 8, 30, 32) before the stem
            (2×2 pixels folded into channels); every level but the last halves H and W and keeps all 8 frames; the
            up path mirrors the down path and concatenates each level's skip; the head maps back to 12 channels and
            `unpatchify` restores (3, 8, 60, 64). Time is never downsampled, so any number of frames works.

            ## How t enters the network

            t is a single number per clip. `sinusoidal_embedding` spreads it over `time_dim` features
            sin(s·t·ω_k), cos(s·t·ω_k) with frequencies ω_k from 1 down to 1/10000, and a small MLP turns them into
            the embedding every residual block uses to scale and shift its channels (FiLM). The scale s = 1000
            matters: t lives in [0, 1], and without it even the fastest feature turns less than a radian.
        """),
        code(r'''
            t = torch.linspace(0, 1, 101)
            fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
            axes[0].imshow(sinusoidal_embedding(t, 128).T, aspect="auto", cmap="RdBu", extent=(0, 1, 128, 0),
                           interpolation="nearest")
            axes[0].set(xlabel="t", ylabel="feature", title="sinusoidal_embedding(t, 128), scale 1000")
            for ax, scale in zip(axes[1:], (1000.0, 1.0)):
                e = nn.functional.normalize(sinusoidal_embedding(t, 128, scale=scale), dim=1)
                ax.imshow(e @ e.T, extent=(0, 1, 1, 0), vmin=-1, vmax=1, cmap="RdBu", interpolation="nearest")
                ax.set(xlabel="t", ylabel="t'", title=f"cosine similarity of embeddings, scale {scale:g}")
            plt.tight_layout()
            plt.show()
        '''),
        code(r'''
            for scale in (1.0, 1000.0):
                t = torch.tensor([0.50, 0.51, 0.0, 1.0])
                e = nn.functional.normalize(sinusoidal_embedding(t, 128, scale=scale), dim=1)
                print(f"scale {scale:>6g}: similarity(t=0.50, t=0.51) = {float(e[0] @ e[1]):.3f}, "
                      f"similarity(t=0, t=1) = {float(e[2] @ e[3]):.3f}")
        ''', CHECK),
        md("""
            With scale 1 every t looks alike (similarity 0.97 even between t = 0 and t = 1); with scale 1000,
            t = 0.50 and t = 0.51 are already told apart and far-apart times are nearly unrelated.

            ## 3D versus (2+1)D convolutions

            A full 3×3×3 convolution mixes space and time at once: 27·C_in·C_out weights. The factorised "(2+1)D"
            version (`make_conv(..., "2+1d")`) does a 1×3×3 convolution over space, then a 3×1×1 one over time:
            9·C_in·C_out + 3·C_out·C_out. Both see a 3×3×3 neighbourhood, and stacked layers reach equally far.
        """),
        code(r'''
            C, shape = 64, (1, 64, 8, 30, 32)  # 64 channels, 8 frames of 30x32, as in the cpu net's second level
            print(f"one conv, {C} -> {C} channels, on a {shape[1:]} input:")
            for kind in ("3d", "2+1d"):
                with torch.device("meta"):
                    conv = make_conv(C, C, kind)
                    flops = forward_flops(conv, torch.empty(shape))
                print(f"  {kind:<5} {count_parameters(conv):>7,} parameters  {flops / 1e6:>7.1f} MFLOPs")
        ''', CHECK),
        md("""
            Fewer FLOPs do not always mean faster: speed depends on how well each kernel is implemented for the
            hardware. So we measure, forward and backward, the way training runs them (timings from a shared
            machine are noisy; what matters is the ratio):
        """),
        code(r'''
            def seconds(fn, repeats: int = REPEATS) -> float:
                """Median wall-clock time of fn() over `repeats` runs, after one warm-up run."""
                fn()
                times = []
                for _ in range(repeats):
                    begin = time.perf_counter()
                    fn()
                    times.append(time.perf_counter() - begin)
                return statistics.median(times)


            torch.manual_seed(0)
            results = {}
            x = torch.randn(4, cfg.base_ch, cfg.sequence_length, cfg.video_height // cfg.patch_size,
                            cfg.video_width // cfg.patch_size)
            for kind in ("3d", "2+1d"):
                conv = make_conv(cfg.base_ch, cfg.base_ch, kind)
                results[f"one conv, {kind}"] = seconds(lambda: conv(x).sum().backward())
            clips = torch.randn(cfg.batch_size, 3, cfg.sequence_length, cfg.video_height, cfg.video_width)
            times = torch.rand(cfg.batch_size)
            for kind in ("3d", "2+1d"):
                net = VideoUNet(cfg.replace(conv=kind))
                results[f"{PRESET} UNet, {kind}"] = seconds(lambda: net(clips, times).square().mean().backward())
            for name, s in results.items():
                print(f"{name:<18} forward+backward {s * 1000:8.1f} ms")
        '''),
        md("""
            ## The receptive field

            Which input pixels can change one output pixel? Take the gradient of one output position with respect
            to the input: it is nonzero exactly where the input matters. Two things would blur the answer, so the
            probe removes them: GroupNorm (its mean and variance are taken over *every* position, so through them
            everything sees everything a little) and the zero-initialised head (no gradient at all); the weights are
            random. Widths do not change the receptive field, so a narrow copy of the `cpu` design does, fast.
        """),
        code(r'''
            def without_norms(module: nn.Module) -> nn.Module:
                """Replace every GroupNorm by the identity, in place: what is left is purely local."""
                for name, child in module.named_children():
                    if isinstance(child, nn.GroupNorm):
                        setattr(module, name, nn.Identity())
                    else:
                        without_norms(child)
                return module


            def input_gradient(c, size: tuple[int, int, int]) -> torch.Tensor:
                """|d output(centre) / d input| summed over channels: (T, H, W)."""
                torch.manual_seed(0)
                net = without_norms(VideoUNet(c))
                for p in net.parameters():
                    nn.init.normal_(p, std=0.05)
                x = torch.zeros(1, 3, *size, requires_grad=True)
                net(x, 0.5)[0, :, size[0] // 2, size[1] // 2, size[2] // 2].sum().backward()
                return x.grad[0].abs().sum(0)


            def extent(g: torch.Tensor) -> list[int]:
                """Size of the box (T, H, W) that holds every nonzero entry."""
                seen = g.nonzero()
                return (seen.max(0).values - seen.min(0).values + 1).tolist()


            grads = {}
            for name, c in [("cpu, 2+1d", preset("cpu", base_ch=8, time_dim=32)),
                            ("cpu, 3d", preset("cpu", base_ch=8, time_dim=32, conv="3d")),
                            ("smoke", preset("smoke"))]:
                # time and space separately: a long clip of small frames, then a short clip of large frames
                grads[name] = in_time, in_space = input_gradient(c, (32, 32, 32)), input_gradient(c, (4, 112, 112))
                print(f"{name:<10} sees {extent(in_time)[0]} frames and {extent(in_space)[1]} x {extent(in_space)[2]} "
                      "pixels")
        ''', CHECK),
        code(r'''
            in_time, in_space = grads["cpu, 2+1d"]
            fig, axes = plt.subplots(1, 2, figsize=(13, 4))
            axes[0].bar(range(len(in_time)), in_time.sum((1, 2)).clamp_min(1e-30), log=True)
            axes[0].set(xlabel="input frame", ylabel="|gradient| (log)", title="cpu design: which frames matter")
            axes[1].imshow((in_space[len(in_space) // 2] + 1e-12).log10(), cmap="magma", interpolation="nearest")
            axes[1].set(title="log10 |gradient| in the centre frame")
            plt.show()
        '''),
        md("""
            Each conv layer along the deepest path adds ±1 frame, so one output frame sees 27 input frames: more
            than the 8 the `cpu` preset trains on, so every frame of a training clip can influence every other. In
            space, the 2×2 patches and the downsampling let one output pixel see 98×98 input pixels: larger than a
            60×64 training frame. The gradient is strongest in the middle: the *effective* receptive field is
            smaller than the theoretical one. The `colab` preset adds temporal attention at the lowest resolution,
            which sees all frames at once.

            ## Summary

            - The same UNet scales from 40k to 22M parameters; patches, small frames and factorised convs make the
              `cpu` preset ~4000× cheaper than the seed design.
            - t enters through a scaled sinusoidal embedding and per-channel scale and shift in every block.
            - (2+1)D convs have ~2.5× fewer weights and FLOPs than 3×3×3 ones and the same receptive field.
            - Next: [03_flow_matching](03_flow_matching.ipynb), what this network is trained to output.
        """),
    ]


# ===================================================================================================== 03
def nb03() -> list:
    return header(
        "03_flow_matching", "03 · Flow matching: from noise to Mario, in a straight line",
        r"""
        Flow matching learns a velocity field that carries noise to data. Pick a data clip $x_0$ and noise
        $\varepsilon \sim \mathcal N(0, I)$ and join them with a straight line,
        $$x_t = (1 - t)\,x_0 + t\,\varepsilon, \qquad t \in [0, 1],$$
        whose velocity is $v^* = \mathrm{d}x_t/\mathrm{d}t = \varepsilon - x_0$. The network learns to predict
        $v^*$ from $x_t$ and $t$ alone; generating a clip then means integrating its velocity from $t=1$
        (noise) to $t=0$ (data). This notebook looks at each piece on a real clip, and checks the samplers on a
        problem whose exact answer is known.
        """,
        ["what the path x_t looks like on real gameplay, and what the target velocity is",
         "why the loss is a plain MSE, and why it never reaches zero",
         "Euler versus Heun: error against cost (NFE) on an exactly solvable Gaussian problem",
         "uniform versus logit-normal sampling of t"],
        r'''
        PRESET = "smoke" if SMOKE else "cpu"  # the clip is cut at this preset's size
        ''',
    ) + [
        code(r'''
            import math

            import matplotlib.pyplot as plt
            import numpy as np
            import torch
            from IPython.display import Image, display

            from mariofm.analytic import gaussian_flow, gaussian_marginal, gaussian_velocity
            from mariofm.config import preset
            from mariofm.data import MarioClips
            from mariofm.flow import fm_loss, interpolate, loss_by_t, sample_t, target_velocity
            from mariofm.sample import nfe, sample
            from mariofm.unet import VideoUNet
            from mariofm.video import gif_bytes, to_uint8, video_grid

            cfg = preset(PRESET)
        '''),
        code(DATA_CELL),
        md("""
            ## The path from a clip to noise

            One validation clip at the preset's size, and one draw of noise. The same ε at five times t:
        """),
        code(r'''
            clips = MarioClips.from_config(cfg, DATA, split="val", progress=False)
            x0 = clips[len(clips) // 2]["video"][None]  # (1, 3, T, H, W) in [-1, 1]
            noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
            ts = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
            path = interpolate(x0.expand(5, -1, -1, -1, -1), noise.expand(5, -1, -1, -1, -1), ts)
            frames = to_uint8(path)  # (5, T, H, W, 3); values beyond [-1, 1] are clipped for display
            zoom = max(1, 128 // cfg.video_width)  # enlarge small frames to look at them
            grid = video_grid(frames.repeat(zoom, axis=2).repeat(zoom, axis=3), ncols=5)
            print("t = " + "   ".join(f"{float(t):.2f}" for t in ts) + "   (left to right)")
            display(Image(data=gif_bytes(grid, cfg.fps)))
        '''),
        md("""
            At t = 0.25 the level is plain to see, at 0.5 it is a ghost, at 0.75 only the large bright areas are
            left. Coarse structure survives more noise than fine detail, so a sampler (going 1 → 0) decides the
            layout first and the details last. Per pixel, across t:
        """),
        code(r'''
            fig, axes = plt.subplots(1, 2, figsize=(14, 3.5))
            ts_fine = torch.linspace(0, 1, 101)
            pixels = [(0, 0, cfg.video_height // 2, w) for w in (0, cfg.video_width // 3, 2 * cfg.video_width // 3)]
            for c, t_, h, w in pixels:
                a, b = float(x0[0, c, t_, h, w]), float(noise[0, c, t_, h, w])
                axes[0].plot(ts_fine, (1 - ts_fine) * a + ts_fine * b)
            axes[0].set(xlabel="t", ylabel="x_t", title="three pixels: straight lines from x0 (t=0) to noise (t=1)")
            many = interpolate(x0.expand(101, -1, -1, -1, -1), noise.expand(101, -1, -1, -1, -1), ts_fine)
            axes[1].plot(ts_fine, many.flatten(1).std(1))
            axes[1].set(xlabel="t", ylabel="std of x_t", title="the spread dips in the middle: x0 and ε partly cancel")
            plt.show()
        '''),
        md("""
            ## The target velocity

            Along the line, $\\mathrm d x_t / \\mathrm d t = \\varepsilon - x_0$ at every t: `target_velocity` is that
            difference, and a finite difference of `interpolate` agrees:
        """),
        code(r'''
            x0d, nd = x0.double(), noise.double()
            v_star = target_velocity(x0d, nd)
            for t in (0.1, 0.5, 0.9):
                h = 1e-6
                finite = (interpolate(x0d, nd, torch.tensor([t + h], dtype=torch.float64)) -
                          interpolate(x0d, nd, torch.tensor([t], dtype=torch.float64))) / h
                print(f"t = {t}: (x_(t+h) - x_t) / h equals eps - x0:", torch.allclose(finite, v_star, atol=1e-6))
        ''', CHECK),
        code(r'''
            fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
            for ax, img, title in zip(axes, [x0[0, :, 0], noise[0, :, 0], (noise - x0)[0, :, 0]],
                                      ["x0 (first frame)", "noise ε", "target v* = ε − x0"]):
                ax.imshow(((img.permute(1, 2, 0) / img.abs().max() + 1) / 2).clamp(0, 1), interpolation="nearest")
                ax.set_title(title)
                ax.axis("off")
            plt.show()
        '''),
        md(r"""
            ## Why the loss is a plain MSE, and why it never reaches zero

            The loss is $\mathbb E_{t, x_0, \varepsilon}\,\|v_\theta(x_t, t) - (\varepsilon - x_0)\|^2$. The network
            sees only $x_t$, and many pairs $(x_0, \varepsilon)$ pass through the same $x_t$; the minimiser of a
            squared error is the mean, so the best network predicts
            $v(x, t) = \mathbb E[\varepsilon - x_0 \mid x_t = x]$, the average direction of all lines through x.
            That average field is exactly what carries the noise distribution to the data distribution. What is
            left over, $\mathbb E\,\mathrm{Var}(\varepsilon - x_0 \mid x_t)$, no network can remove.

            For Gaussian data $x_0 \sim \mathcal N(\mu, s^2)$ per dimension, `mariofm.analytic` has the optimal
            field in closed form, and the leftover loss is $\pi s/2$ for uniform t. A network that outputs zero (the
            UNet at initialisation: its head starts at zero) scores $\mathbb E\|\varepsilon - x_0\|^2 = 1 + \mu^2 + s^2$
            per dimension. Monte Carlo agrees:
        """),
        code(r'''
            mu, s = 0.5, 0.3
            g = torch.Generator().manual_seed(0)
            data = mu + s * torch.randn(8192, 64, generator=g, dtype=torch.float64)  # 8192 samples, 64 dimensions
            best, per_sample, t_used = fm_loss(gaussian_velocity(mu, s), data, generator=g)
            zero, _, _ = fm_loss(lambda x, t: torch.zeros_like(x), data, generator=g)
            print(f"optimal field: loss {best.item():.3f}   theory pi*s/2     = {math.pi * s / 2:.3f}")
            print(f"zero field:    loss {zero.item():.3f}   theory 1+mu^2+s^2 = {1 + mu**2 + s**2:.3f}")
        ''', CHECK),
        md(r"""
            The leftover loss depends on t: $s^2/\sigma_t^2$ with $\sigma_t^2 = (1-t)^2 s^2 + t^2$. Near t = 0 the
            network sees the data almost clean but must guess ε; near t = 1 it sees almost pure noise and must guess
            $x_0$. `loss_by_t` bins the per-sample losses by t; a training run logs it too (notebook 04).
        """),
        code(r'''
            centres, mean_loss, _ = loss_by_t(t_used, per_sample, bins=20)
            t_line = torch.linspace(0, 1, 200, dtype=torch.float64)
            fig, ax = plt.subplots(figsize=(8, 3.5))
            ax.plot(t_line, s**2 / gaussian_marginal(mu, s, t_line)[1] ** 2, label="theory s²/σ_t²")
            ax.plot(centres, mean_loss, "o", label="Monte Carlo, loss_by_t")
            ax.set(xlabel="t", ylabel="loss of the optimal field", title="the loss that no model can remove")
            ax.legend()
            plt.show()

            model = VideoUNet(cfg)  # untrained: the head starts at zero, so v = 0
            loss0 = fm_loss(model, x0, generator=torch.Generator().manual_seed(0))[0].item()
            print(f"untrained UNet on the real clip: loss {loss0:.3f}; "
                  f"1 + mean(x0²) = {1 + x0.square().mean().item():.3f}")
        '''),
        md("""
            ## Sampling: Euler versus Heun, on a problem with a known answer

            Generating means solving $\\mathrm dx/\\mathrm dt = v(x, t)$ from t = 1 to 0 (`mariofm.sample`). Euler
            takes one velocity evaluation (NFE) per step; Heun takes two (predict, then average the slopes) but its
            error falls as h² instead of h. For Gaussian data the exact flow is known (`gaussian_flow`): noise z
            lands at μ + s·z. Every sampler run is checked against it.
        """),
        code(r'''
            z = torch.randn(512, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
            exact = gaussian_flow(mu, s, z, torch.zeros(len(z), dtype=torch.float64))  # = mu + s * z
            velocity = gaussian_velocity(mu, s)
            errors = {"euler": [], "heun": []}
            print(f"{'steps':>5} {'solver':<6} {'NFE':>4} {'max |error|':>12}")
            for steps in (1, 2, 4, 8, 16, 32, 64):
                for solver in errors:
                    err = (sample(velocity, z, steps, solver) - exact).abs().max().item()
                    errors[solver].append((nfe(steps, solver), err))
                    print(f"{steps:>5} {solver:<6} {nfe(steps, solver):>4} {err:>12.2e}")
            for solver, rows in errors.items():
                (n1, e1), (n2, e2) = rows[-2], rows[-1]
                print(f"{solver}: error ~ NFE^{math.log(e2 / e1) / math.log(n2 / n1):.1f} at large NFE")
        ''', CHECK),
        code(r'''
            fig, ax = plt.subplots(figsize=(7, 4.5))
            for solver, rows in errors.items():
                ax.loglog(*zip(*rows), "o-", label=solver)
            n = np.array([1, 128])
            ax.loglog(n, 0.3 / n, "k:", label="slope −1")
            ax.loglog(n, 0.3 / n**2, "k--", label="slope −2")
            ax.set(xlabel="velocity evaluations (NFE)", ylabel="max |x − exact|", title="error against cost")
            ax.legend()
            plt.show()
        '''),
        md("""
            Heun reaches a given error with far fewer evaluations, except at the very cheapest end. The paths are
            not straight lines even though each training line is: the flow follows the *average* velocity, and here
            the paths bend as the spread shrinks from 1 (noise) to s. Euler with few steps cuts the bends:
        """),
        code(r'''
            z1 = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
            t_line = torch.linspace(1, 0, 100, dtype=torch.float64)
            fig, ax = plt.subplots(figsize=(8, 4.5))
            for zi in z1:
                ax.plot(t_line, gaussian_flow(mu, s, zi.expand(100, 1), t_line)[:, 0], "C0", lw=1)
            for solver, colour in (("euler", "C1"), ("heun", "C2")):
                states = []
                sample(velocity, z1, 4, solver, callback=lambda i, t, x: states.append((t, x[:, 0].clone())))
                ts_, xs = zip(*states)
                ax.plot(ts_, torch.stack(xs), "o--", color=colour, lw=1)
                ax.plot([], [], "o--", color=colour, label=f"{solver}, 4 steps = {nfe(4, solver)} NFE")
            ax.plot([], [], "C0", label="exact flow")
            ax.set(xlabel="t (sampling runs from 1 to 0)", ylabel="x", title=f"noise N(0, 1) -> data N({mu}, {s}²)")
            ax.invert_xaxis()
            ax.legend()
            plt.show()
        '''),
        md(r"""
            ## Which t to train on

            Each training step draws a t per clip. Uniform t spends as much effort near the ends (where the best
            possible loss is large and the target nearly unpredictable) as in the middle. The logit-normal
            distribution of Stable Diffusion 3 (`time_sampling="logit_normal"`: t = sigmoid(n), n ~ N(0, 1))
            concentrates on the middle.
        """),
        code(r'''
            g = torch.Generator().manual_seed(0)
            draws = {kind: sample_t(100_000, kind, generator=g) for kind in ("uniform", "logit_normal")}
            for kind, t in draws.items():
                q = torch.quantile(t, torch.tensor([0.05, 0.5, 0.95])).tolist()
                print(f"{kind:<13} 5%/50%/95% quantiles {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f};  "
                      f"share in [0.25, 0.75]: {((t > 0.25) & (t < 0.75)).float().mean():.2f}")
        ''', CHECK),
        code(r'''
            fig, axes = plt.subplots(1, 2, figsize=(13, 3.5), sharey=True)
            for ax, (kind, t) in zip(axes, draws.items()):
                ax.hist(t.numpy(), bins=50, range=(0, 1), density=True)
                ax.set(xlabel="t", title=kind)
            tt = np.linspace(0.001, 0.999, 400)
            axes[1].plot(tt, np.exp(-np.log(tt / (1 - tt)) ** 2 / 2) / np.sqrt(2 * np.pi) / (tt * (1 - tt)), "k",
                         label="density")
            axes[1].legend()
            axes[0].set_ylabel("density")
            plt.show()
        '''),
        md("""
            ## Summary

            - The path is a straight line from data (t = 0) to noise (t = 1); the target velocity ε − x0 is the
              same all along it.
            - An MSE regression onto it makes the network learn the *average* velocity through each point, which
              transports noise to data; a leftover loss is unavoidable, largest at the ends.
            - Sampling solves an ODE: Heun's error falls with the square of the step, Euler's only linearly.
            - Next: [04_training](04_training.ipynb), training the UNet on real clips.
        """),
    ]


# ===================================================================================================== 04
def nb04() -> list:
    return header(
        "04_training", "04 · Training: from a loss to a model",
        """
        `mariofm.train.train` runs the whole loop: batches of real clips, the flow-matching loss, AdamW with
        warmup and a cosine schedule, an EMA copy of the weights, mixed precision on a GPU, samples and a
        validation loss after every epoch, and checkpoints that resume exactly. This notebook runs it, stops it
        half way, resumes it, and reads what it logged.
        """,
        ["what mixed precision (bf16/fp16 autocast, GradScaler) does and when the library uses it",
         "reading a run: the loss curve, the loss by t, the samples written during training",
         "why generation uses the EMA weights",
         "checkpoints: stopping a run and resuming it exactly"],
        r'''
        import torch

        GPU = torch.cuda.is_available()
        PRESET = "smoke" if SMOKE else ("colab" if GPU else "cpu")  # colab: one 16 GB GPU with AMP
        if SMOKE:
            STEPS, MINUTES, STOP_AT = 12, None, 6  # a dozen steps: everything runs, nothing is learned
        elif GPU:
            STEPS, MINUTES, STOP_AT = None, 30, 500
        else:
            # the FULL budget of the stored outputs: 6 minutes of the cpu preset on a 2-core CPU. The samples
            # are still mostly noise over a hint of sky and ground; the shipped model (3,000 steps, about half an
            # hour) shows what longer training gives (notebook 05)
            STEPS, MINUTES, STOP_AT = None, 6, 100
        ''',
    ) + [
        code(r'''
            import inspect
            import json
            import shutil

            import matplotlib.pyplot as plt
            import numpy as np
            from IPython.display import Image, display

            from mariofm.config import preset
            from mariofm.data import MarioClips
            from mariofm.generate import load_model, noise_for, sample_videos
            from mariofm.train import autocast_dtype, load_checkpoint, pick_device, stack_videos, train, train_step
            from mariofm.train import validation_loss
            from mariofm.video import gif_bytes, video_grid

            cfg = preset(PRESET)
            device = pick_device()
            print(f"device {device}, preset {PRESET}, autocast dtype {autocast_dtype(device, cfg)}")
        '''),
        md("""
            ## Mixed precision

            On a GPU, matrix multiplies and convolutions run several times faster in 16-bit floats. Under
            `torch.autocast` those operations run in 16 bits while the weights, the optimizer state and the loss
            stay in float32. Two 16-bit formats exist:

            - **bfloat16** keeps float32's 8 exponent bits (same range, down to ~1e-38) with a 7-bit mantissa. It
              needs nothing else; the library picks it where the GPU supports it (Ampere and newer).
            - **float16** has a 10-bit mantissa but only 5 exponent bits: the smallest value is ~6e-8, and small
              gradients *underflow to zero*. A `GradScaler` multiplies the loss by a large factor S before backward
              (so the gradients are S times larger and survive), divides them by S before clipping and the
              optimizer step, skips the step when an inf or NaN appears, and then lowers S (and slowly raises it
              otherwise). Older GPUs such as Colab's T4 use this path.

            On the CPU the library trains in float32, which measured faster there.
        """),
        code(r'''
            tiny = torch.tensor(1e-8)  # a typical small gradient
            print("float16: ", tiny.half().item())
            print("bfloat16:", f"{tiny.bfloat16().item():.3e}")
            print("float16 after scaling by 2**16:", f"{(tiny * 2**16).half().item():.3e}")
        ''', CHECK),
        md("The library's training step, where autocast and the scaler are used (read, not re-implemented):"),
        code(r'''
            print(inspect.getsource(train_step))
        '''),
        code(DATA_CELL),
        md("""
            ## Train, stop, resume

            `train(cfg, data, out, steps=..., minutes=...)` returns the run folder. `stop_at=N` ends this session
            after step N with a checkpoint, exactly as Ctrl-C (or a Colab time-out) would; `resume=True` continues
            from the checkpoint with the same learning-rate schedule, data order and random numbers, so the result
            is the one an uninterrupted run would have reached. The run folder is cleared first, so that this cell
            always starts a fresh run.
        """),
        code(r'''
            RUN = OUT / f"04_{PRESET}"
            shutil.rmtree(RUN, ignore_errors=True)
            train(cfg, DATA, RUN, steps=STEPS, minutes=MINUTES, stop_at=STOP_AT, log_every=2 if SMOKE else 10)
            state = load_checkpoint(RUN / "checkpoint.pt")
            print(f"stopped at step {state['step']} after {state['elapsed']:.0f} s of training; the checkpoint holds:",
                  ", ".join(state))
            for f in sorted(RUN.iterdir()):
                print(f"  {f.name:<16} {f.stat().st_size / 1e6:7.2f} MB")
        '''),
        md("""
            `checkpoint.pt` holds everything needed to continue (weights, EMA weights, optimizer moments, scheduler,
            scaler, random generator states, step, elapsed time); `video_model.pt` only the config and weights,
            all that generation needs. Now continue, from the checkpoint alone (`cfg=None`: the run's own config):
        """),
        code(r'''
            train(None, DATA, RUN, resume=True)
            print(f"finished at step {load_checkpoint(RUN / 'checkpoint.pt')['step']}")
            # train() drew loss_curve.png with matplotlib's file-only backend (Agg); switch back to inline plots
            %matplotlib inline
        '''),
        md("""
            ## The loss curve

            `metrics.jsonl` has one row every few steps (the mean training loss since the last row, the learning
            rate, throughput, the loss by t) and one per evaluation (the validation loss of the EMA model at a fixed
            t grid with fixed noise, comparable between runs). The dotted line is the loss of predicting zero,
            1 + E[x0²]: where an untrained model starts.
        """),
        code(r'''
            rows = [json.loads(line) for line in (RUN / "metrics.jsonl").read_text().splitlines()]
            train_rows = [r for r in rows if "loss" in r]
            val_rows = [r for r in rows if "val_loss" in r]
            val_set = MarioClips.from_config(cfg, DATA, split="val", progress=False)
            val_clips = stack_videos([val_set[i] for i in range(min(16, len(val_set)))])

            fig, ax = plt.subplots(figsize=(9, 4))
            ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train (running mean)")
            ax.plot([r["step"] for r in val_rows], [r["val_loss"] for r in val_rows], "o-", label="validation (EMA)")
            ax.axhline(1 + val_clips.square().mean().item(), color="k", ls=":", label="predict zero: 1 + E[x0²]")
            ax.axvline(STOP_AT, color="gray", ls="--", label=f"stopped and resumed (step {STOP_AT})")
            ax.set(xlabel="step", ylabel="flow-matching loss", yscale="log")
            ax.legend(loc="lower left")
            plt.show()
            print(f"{train_rows[-1]['step']} steps, {train_rows[-1]['elapsed_s'] / 60:.1f} min of training, "
                  f"last training loss {train_rows[-1]['loss']:.4f}")
        '''),
        md("""
            The loss by t (notebook 03 says why it never reaches zero at the ends): early in training against late.
            The middle of the path is where learning happens; near t = 0 the target is mostly the unpredictable
            noise, whatever the model knows.
        """),
        code(r'''
            by_t = np.array([[np.nan if v is None else v for v in r["loss_by_t"]] for r in train_rows])
            centres = (np.arange(by_t.shape[1]) + 0.5) / by_t.shape[1]
            quarter = max(1, len(by_t) // 4)


            def mean_over_rows(values: np.ndarray) -> np.ndarray:
                """Mean of each column over the rows where it is logged (an empty t bin is NaN); NaN if none is."""
                logged = ~np.isnan(values)
                return np.where(logged.any(0), np.nansum(values, 0) / np.maximum(logged.sum(0), 1), np.nan)


            fig, ax = plt.subplots(figsize=(8, 3.5))
            ax.plot(centres, mean_over_rows(by_t[:quarter]), "o-", label=f"first {quarter} log rows")
            ax.plot(centres, mean_over_rows(by_t[-quarter:]), "o-", label=f"last {quarter} log rows")
            ax.set(xlabel="t", ylabel="training loss", yscale="log")
            ax.legend()
            plt.show()
        '''),
        md("""
            ## Samples during training

            After every epoch (and at the end) the run samples the EMA model from the same fixed noise, so the GIFs
            show one set of clips taking shape:
        """),
        code(r'''
            grids = sorted(RUN.glob("grid_epoch*.gif"), key=lambda p: int(p.stem.removeprefix("grid_epoch")))
            for gif in grids[-4:]:
                print(gif.name)
                display(Image(filename=str(gif)))
        '''),
        md("""
            ## EMA versus raw weights

            The raw weights jump around with every noisy gradient step. The EMA keeps a running average
            θ_EMA ← d·θ_EMA + (1 − d)·θ, with d = `ema_decay` (0.995 for the `cpu` preset: an average over the
            last ~200 steps). It pays off late in a long run, when the raw weights only jitter around a good
            solution. In a run as short as this one it still lags behind: it averages in weights from a few hundred
            steps ago, when the model was worse (and with d = 0.999, the `smoke` preset, a dozen steps barely move
            it from where it started). Same noise, both weights:
        """),
        code(r'''
            noise = noise_for(cfg, 4, seed=0)
            rows_of_videos, losses = [], {}
            for ema in (True, False):
                model, _ = load_model(RUN, ema=ema)
                rows_of_videos.append(sample_videos(model, noise, cfg.sample_steps, cfg.solver))
                losses["EMA" if ema else "raw"] = validation_loss(model, val_clips, seed=cfg.seed)
            print("top row: EMA weights, bottom row: raw weights;",
                  ", ".join(f"validation loss {k} {v:.4f}" for k, v in losses.items()))
            zoom = max(1, 128 // cfg.video_width)
            grid = video_grid(np.concatenate(rows_of_videos).repeat(zoom, axis=2).repeat(zoom, axis=3), ncols=4)
            display(Image(data=gif_bytes(grid, cfg.fps)))
        '''),
        md("""
            ## Summary

            - `train()` does the whole loop; AMP (bf16, or fp16 with a GradScaler) switches on by itself on a GPU.
            - The loss falls fastest early and never reaches zero; the loss by t and the epoch GIFs say more.
            - Generate with the EMA weights; stop and resume whenever you like, the result is the same.
            - More training: `python -m mariofm train --preset cpu --minutes 60` (or continue this run with
              `train(None, DATA, RUN, resume=True)` after raising the budget in a new run).
            - Next: [05_generation](05_generation.ipynb) uses this run's `video_model.pt` (or the shipped model).
        """),
    ]


# ===================================================================================================== 05
def nb05() -> list:
    return header(
        "05_generation", "05 · Generation: noise in, gameplay out",
        """
        A trained model turns noise into clips by integrating its velocity from t = 1 to t = 0. Two knobs decide
        what you get: the noise (the seed) decides *which* clip, the solver and its number of steps decide how
        faithfully the ODE is solved, and how long it takes. This notebook lets you turn them.
        """,
        ["loading a model: the shipped one, your own from notebook 04, or a quick one trained on the spot",
         "generating interactively with ipywidgets",
         "the trade-off between network evaluations (NFE) and quality",
         "exporting GIF and MP4"],
        r'''
        STEPS = 4 if SMOKE else 20  # the sampling steps the widget starts with
        NUM = 2 if SMOKE else 4  # videos per click
        TRADE_OFF_STEPS = (1, 2, 4) if SMOKE else (1, 2, 4, 8, 16)  # steps compared in the NFE section
        REFERENCE_STEPS = 8 if SMOKE else 64  # the "exact" solution those are compared with
        ''',
    ) + [
        code(r'''
            import shutil
            import time

            import ipywidgets as widgets
            import matplotlib.pyplot as plt
            import numpy as np
            import torch
            from IPython.display import Image, Video, display

            from mariofm.config import preset
            from mariofm.data import real_clips
            from mariofm.generate import SHIPPED, load_model, noise_for, sample_videos
            from mariofm.metrics import palette_fidelity
            from mariofm.sample import nfe, sample
            from mariofm.train import MODEL, train
            from mariofm.video import gif_bytes, to_uint8, video_grid, write_gif, write_mp4
        '''),
        code(DATA_CELL),
        md("""
            ## Pick a model

            In order of preference: the model shipped with mariofm (`mariofm/checkpoints/mariofm_cpu.safetensors`,
            which `load_model()` loads when given no path), the run you trained in notebook 04, or, when neither
            exists, a tiny `smoke` model trained right here for a few seconds (it will make noise-like clips, but
            every cell works).
        """),
        code(r'''
            DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
            mine = "smoke" if SMOKE else ("colab" if DEVICE == "cuda" else "cpu")  # what notebook 04 trained
            runs = [OUT / f"04_{mine}" / MODEL] + sorted(OUT.glob("04_*/" + MODEL))
            if SHIPPED.is_file():
                model, cfg = load_model(device=DEVICE)
                source = f"the shipped model {SHIPPED.name}"
            elif any(p.is_file() for p in runs):
                checkpoint = next(p for p in runs if p.is_file())
                model, cfg = load_model(checkpoint, device=DEVICE)
                source = f"notebook 04's run {checkpoint.parent.name}"
            else:
                shutil.rmtree(OUT / "05_quick_smoke", ignore_errors=True)
                quick = train(preset("smoke"), DATA, OUT / "05_quick_smoke", steps=30, progress=False)
                get_ipython().run_line_magic("matplotlib", "inline")  # train() switched matplotlib to Agg
                model, cfg = load_model(quick, device=DEVICE)
                source = "a smoke model trained just now (30 steps)"
            print(f"using {source}: {cfg.sequence_length} frames of {cfg.video_height}x{cfg.video_width}, "
                  f"{sum(p.numel() for p in model.parameters()):,} parameters")
            ZOOM = max(1, 128 // cfg.video_width)  # enlarge small frames for display
        '''),
        md("""
            ## Generate interactively

            Move the sliders, then press **Generate**. The seed fixes the starting noise (`noise_for` draws it on the
            CPU, so a seed gives the same clips on every device); the solver and steps fix how the ODE is solved.
        """),
        code(r'''
            steps = widgets.IntSlider(value=STEPS, min=1, max=50, description="steps", continuous_update=False)
            seed = widgets.IntSlider(value=0, min=0, max=999, description="seed", continuous_update=False)
            num = widgets.IntSlider(value=NUM, min=1, max=8, description="videos", continuous_update=False)
            solver = widgets.Dropdown(options=["heun", "euler"], value=cfg.solver, description="solver")
            button = widgets.Button(description="Generate", button_style="success", icon="play")
            image = widgets.Image(format="gif")
            label = widgets.Label()


            def on_generate(_) -> None:
                label.value = "generating ..."
                begin = time.perf_counter()
                videos = sample_videos(model, noise_for(cfg, num.value, seed.value), steps.value, solver.value,
                                       device=DEVICE)
                grid = video_grid(videos).repeat(ZOOM, axis=1).repeat(ZOOM, axis=2)
                image.value = gif_bytes(grid, cfg.fps)
                label.value = (f"{num.value} videos, seed {seed.value}: {solver.value} with {steps.value} steps = "
                               f"{nfe(steps.value, solver.value)} network evaluations, "
                               f"{time.perf_counter() - begin:.1f} s")


            button.on_click(on_generate)
            display(widgets.VBox([widgets.HBox([steps, seed]), widgets.HBox([solver, num]), button, label, image]))
            button.click()  # generate once now, so the cell shows a result even when run without a browser
        '''),
        md("The clips the widget shows last, as a plain image (it stays visible in a saved notebook):"),
        code(r'''
            print(label.value)
            display(Image(data=bytes(image.value)))  # the widget holds a memoryview; Image wants bytes
        '''),
        md("""
            ## Fewer steps or better clips?

            Each step costs one (Euler) or two (Heun) network evaluations, the whole cost of sampling. How many are
            needed? Two measures, for the same noise:

            - **solver error**: the distance to a reference solution with many Heun steps, i.e. how well the ODE is
              solved (it says nothing about whether the model is good);
            - **palette fidelity**: the share of pixels within a small distance of a colour that real footage uses
              (`mariofm.metrics.palette_fidelity`; real clips score a little below 1 at small sizes, where resizing
              blends colours): a noisy or blurry, unfinished sample fails it.
        """),
        code(r'''
            print(f"{'steps':>5} {'euler NFE':>9} {'heun NFE':>9}")
            for n in (1, 2, 4, 8, 16, 32):
                print(f"{n:>5} {nfe(n, 'euler'):>9} {nfe(n, 'heun'):>9}")
        ''', CHECK),
        code(r'''
            noise = noise_for(cfg, 4, seed=123).to(DEVICE)
            reference = sample(model, noise, REFERENCE_STEPS, "heun")
            clip_kwargs = dict(size=(cfg.video_height, cfg.video_width), sequence_length=cfg.sequence_length,
                               frame_stride=cfg.frame_stride)
            real = real_clips(DATA, 8, split="val", **clip_kwargs)  # the palette is read off these
            other_real = real_clips(DATA, 4, split="train", **clip_kwargs)  # scored like samples: the best to hope for
            real_score = palette_fidelity(other_real, real)["in_palette"]
            results = {"euler": [], "heun": []}
            samples = {}
            for solver_name in results:
                for n in TRADE_OFF_STEPS:
                    x = sample(model, noise, n, solver_name)
                    error = (x - reference).square().mean().sqrt().item()
                    colours = palette_fidelity(to_uint8(x), real)["in_palette"]
                    results[solver_name].append((nfe(n, solver_name), error, colours))
                    samples[solver_name, n] = to_uint8(x[:1])[0]
            print(f"reference: heun, {REFERENCE_STEPS} steps = {nfe(REFERENCE_STEPS, 'heun')} NFE, in palette "
                  f"{palette_fidelity(to_uint8(reference), real)['in_palette']:.3f}; real clips: {real_score:.3f}")
            for solver_name, rows in results.items():
                for (n_eval, error, colours), n in zip(rows, TRADE_OFF_STEPS):
                    print(f"{solver_name:<5} {n:>3} steps {n_eval:>4} NFE   RMS to reference {error:.4f}   "
                          f"in palette {colours:.3f}")

            fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 4))
            for solver_name, rows in results.items():
                n_eval, error, colours = zip(*rows)
                ax1.loglog(n_eval, error, "o-", label=solver_name)
                ax2.semilogx(n_eval, colours, "o-", label=solver_name)
            ax1.set(xlabel="NFE", ylabel="RMS distance to the reference", title="how well the ODE is solved")
            ax2.axhline(real_score, color="k", ls=":", label="real clips")
            ax2.set(xlabel="NFE", ylabel="share of pixels in the real palette", title="how Mario-like the colours are")
            ax1.legend()
            ax2.legend()
            plt.show()
        '''),
        md("The first clip at each number of Heun steps, left to right (same noise):"),
        code(r'''
            row = np.stack([samples["heun", n] for n in TRADE_OFF_STEPS])
            print("heun steps:", ", ".join(map(str, TRADE_OFF_STEPS)))
            display(Image(data=gif_bytes(video_grid(row, ncols=len(row)).repeat(ZOOM, axis=1).repeat(ZOOM, axis=2),
                                         cfg.fps)))
        '''),
        md("""
            What the stored run (the shipped model) shows: one step returns x1 − v(x1, 1), the network's one-shot
            guess of the clip, dark and noisy; a few steps lay out the scene, and beyond about 8 steps the clip
            hardly changes to the eye. The solver error keeps falling, slowly, and unlike on the Gaussian problem of
            notebook 03, Heun does *not* beat Euler at equal NFE here: its second-order accuracy assumes a smooth
            velocity field, and a small network trained for half an hour is far less smooth in x and t than the
            exact Gaussian field. The colours improve with NFE but stay far from real footage: better clips need a
            better model, not more steps. The presets' default, 20 Heun steps (39 NFE), is on the safe side.

            Sampling is deterministic: the same seed and settings give the same clips, bit for bit:
        """),
        code(r'''
            a = sample_videos(model, noise_for(cfg, 1, seed=7), 2, "heun", device=DEVICE)
            b = sample_videos(model, noise_for(cfg, 1, seed=7), 2, "heun", device=DEVICE)
            print("same seed, same clip:", np.array_equal(a, b))
        ''', CHECK),
        md("""
            ## Export

            `write_gif` is lossless for NES-like frames; `write_mp4` writes H.264 (lossy, but it plays everywhere
            and is smaller for long clips). The same from the command line:
            `python -m mariofm generate --checkpoint <run or file> --out outputs/gen --num 4 --steps 20 --mp4`.
        """),
        code(r'''
            export = OUT / "05_generation"
            videos = sample_videos(model, noise_for(cfg, 4, seed=seed.value), steps.value, solver.value, device=DEVICE)
            grid = video_grid(videos)  # at the model's size: the player below scales it up
            files = [write_gif(export / "grid.gif", grid, cfg.fps), write_mp4(export / "grid.mp4", grid, cfg.fps)]
            for f in files:
                print(f"{f}  {f.stat().st_size / 1e3:.0f} kB")
            display(Video(str(files[1]), embed=True, width=3 * grid.shape[2],
                          html_attributes="controls loop autoplay muted"))
        '''),
        md("""
            ## Summary

            - The seed picks the clip, the solver and its steps decide how exactly the learned ODE is followed.
            - How many steps a model needs is measured, not assumed: Heun wins on smooth fields (notebook 03), but
              on a small trained network Euler can do as well per evaluation; ~10-20 steps are plenty here.
            - Better clips come from a better model, not from more steps: train longer (notebook 04, `make demo`)
              or on a GPU with the `colab` preset.
        """),
    ]


NOTEBOOKS = {"01_data": nb01, "02_architecture": nb02, "03_flow_matching": nb03, "04_training": nb04,
             "05_generation": nb05}


def build(name: str) -> Path:
    cells = NOTEBOOKS[name]()
    for i, cell in enumerate(cells):
        cell.id = f"{name.split('_')[0]}-{i:02d}"  # stable ids: rebuilding gives a clean diff
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"}})
    path = HERE / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def execute(path: Path, timeout: int) -> None:
    """Run the notebook top to bottom in a fresh kernel from notebooks/, store outputs, strip volatile metadata."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    begin = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(HERE)}}).execute()
    nbformat.write(nb, path)
    subprocess.run([sys.executable, "-m", "nbstripout", "--keep-output", "--keep-count", str(path)], check=True)
    print(f"executed {path.name} in {time.perf_counter() - begin:.0f} s ({path.stat().st_size / 1e6:.2f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="notebook name prefixes, e.g. 01 04 (default: all)")
    parser.add_argument("--execute", action="store_true", help="run each notebook and store its outputs")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell when executing")
    args = parser.parse_args()
    names = [n for n in NOTEBOOKS if not args.only or any(n.startswith(o) for o in args.only)]
    if not names:
        parser.error(f"no notebook matches {args.only}; choose from {list(NOTEBOOKS)}")
    for name in names:
        path = build(name)
        print(f"built {path.name}")
        if args.execute:
            execute(path, args.timeout)


if __name__ == "__main__":
    main()
