"""The world model's training data: the next frame, the K frames before it, and the buttons held over all of them.

    ds = NextFrames("data_video/mario", context_frames=4, size=(60, 64), frame_stride=2)
    item = ds[0]
    item["video"]    # float32 (3, 1, 60, 64) in [-1, 1]: the next frame (what the flow model learns to make)
    item["context"]  # float32 (3, 4, 60, 64): the 4 frames before it, oldest first
    item["actions"]  # float32 (5, 8): the button bits over each context frame and over the next frame

A window is K + 1 frames, every frame_stride-th recorded frame, cut by MarioClips (mariofm.data: same decoding,
cache and train/val split by file). Window starts are 1 recorded frame apart, so every frame is a target once.

The buttons of kept frame f are the share of the frame_stride recorded frames (f − stride, f] during which each
button was held: with stride 2 a tap of A that lasts one recorded frame shows as 0.5, not lost between kept frames.
At play time a button held for a whole generated frame is 1. A recorded frame's byte is the button state held while
the emulator made it (`<stem>.actions.npy`, mariofm.record).

With own_frames = R > 0 (training on the model's own frames, cfg.own_frames) a window is K + R + 1 frames: the
context holds K + R real frames, the actions K + R + 1 rows, and the trainer lets the model make the last R of
them from the first K (mariofm.own_frames.own_context). `training_data` asks for R only for the training split.

With wall_share = s > 0 (cfg.wall_share) the windows whose next frame is the moment a wall holds Mario
(`wall_windows`: right pressed and left not over the next frame, Mario's x in the level rose over the context and
does not rise into the next frame, before he dies or reaches the flagpole; from the recording's RAM log, `mario_x`
and `events` in its JSON sidecar) are drawn again: s/(1 − s)·N items are added after the N windows, spread evenly
over the walled ones, so that they make a share s of each shuffled epoch beside their own share among the N. In the
shipped world model's training folder 2.6% of the windows are such moments (4.5% of the longer windows with 4 own
frames): a world model that runs on at walls may have seen too few of them. (Measured: drawing them again with
s = 0.25 or 0.5 did not make the shipped model stop at walls; docs/benchmarks.md, section 6, twelfth.) An epoch
grows by 1/(1 − s): compare runs by --minutes or --steps, not by epochs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mariofm.conditioning import BUTTONS, action_bits
from mariofm.data import MarioClips
from mariofm.recordings import NoDataError, find_videos


class NoActionsError(NoDataError):
    """Video files without the `<stem>.actions.npy` sidecar that a world model needs."""


def held_bits(actions: np.ndarray, frames: np.ndarray, stride: int) -> torch.Tensor:
    """Button shares (len(frames), 8): for kept frame f, the mean of the bits of recorded frames f−stride+1 .. f
    (those that exist)."""
    bits = action_bits(actions)  # (N, 8)
    rows = [bits[max(0, f - stride + 1):f + 1].mean(0) for f in frames.tolist()]
    return torch.stack(rows)


def _ram_log(video: Path) -> tuple[np.ndarray, int]:
    """A recording's RAM log: Mario's x in the level per recorded frame, and the first frame on which he dies or
    reaches the flagpole (where his x stops too, with no wall), or the end."""
    sidecar = video.with_suffix(".json")
    try:
        meta = json.loads(sidecar.read_text())
        x = np.asarray(meta["mario_x"], np.int64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise NoDataError(video.parent, f"wall_share needs Mario's x from {sidecar.name} (its 'mario_x', written by "
                                        f"mariofm record), which could not be read ({err!r}): record the folder "
                                        "again with mariofm, or set wall_share=0") from None
    ends = [e["frame"] for e in meta.get("events", []) if e.get("event") in ("death", "flagpole")]
    return x, min(ends, default=len(x))


def wall_windows(clips: MarioClips, context_frames: int) -> np.ndarray:
    """Indices of the windows of `clips` whose next frame is the moment a wall holds Mario (module docstring)."""
    stride, right, left = clips.frame_stride, BUTTONS.index("right"), BUTTONS.index("left")
    logs, out = {}, []
    for i, (index, start) in enumerate(clips.windows):
        if index not in logs:  # read and converted once per file
            logs[index] = (*_ram_log(clips.files[index]), action_bits(clips.actions[index]))
        x, end, file_bits = logs[index]
        target = start + stride * context_frames
        bits = file_bits[target - stride + 1:target + 1]
        if target < min(end, len(x)) and bits[:, right].all() and not bits[:, left].any() \
                and x[target] <= x[target - stride] and x[target - stride] > x[start]:
            out.append(i)
    return np.array(out, np.int64)


class NextFrames(Dataset):
    """Windows of K + 1 frames as (next frame, K context frames, K + 1 button-bit rows); see the module docstring.

    Every video under `root` needs its actions sidecar: a folder without them raises NoActionsError naming the
    files. `len(ds)` windows; `ds.clips` is the MarioClips underneath (files, windows, frames).
    """

    def __init__(self, root: str | Path, context_frames: int, size: tuple[int, int] = (240, 256),
                 frame_stride: int = 1, split: str = "train", hop: int = 1, own_frames: int = 0,
                 wall_share: float = 0.0, **kwargs) -> None:
        if not isinstance(context_frames, int) or context_frames < 1:
            raise ValueError(f"context_frames={context_frames!r} must be a positive integer, e.g. 4")
        if not 0 <= wall_share < 1 or (wall_share and context_frames + own_frames < 2):
            raise ValueError(f"wall_share={wall_share!r} must lie in [0, 1) (e.g. 0.25), and needs two frames before "
                             "the next one (context_frames + own_frames >= 2) to see Mario move")
        self.context_frames = context_frames + own_frames  # frames before the target that the item holds
        videos = find_videos(Path(root)) if Path(root).is_dir() else []
        missing = [str(v) for v in videos if not v.with_name(v.stem + ".actions.npy").is_file()]
        if missing:  # all of them named at once (MarioClips would stop at the first)
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise NoActionsError(root, f"a world model needs the buttons behind every frame, but {len(missing)} "
                                       f"video file(s) have no <stem>.actions.npy beside them: {shown}. Record "
                                       f"clips with mariofm's recorder, which writes them")
        try:  # require_actions: a damaged sidecar is an error too (mariofm.recordings.load_actions)
            self.clips = MarioClips(root, self.context_frames + 1, size, frame_stride, split, hop=hop,
                                    require_actions=True, **kwargs)
        except NoDataError as err:
            if " frames < " not in str(err):  # not a matter of clip length
                raise
            span = self.context_frames * frame_stride + 1
            asked = f"context_frames={context_frames}" + (f" with own_frames={own_frames}" if own_frames else "")
            raise NoDataError(root, f"{asked} at frame_stride={frame_stride} needs clips of at least {span} "
                                    f"recorded frames (K context frames, the own frames in training, the next one). "
                                    f"{str(err).splitlines()[0]}") from None
        self.walled, self.extra = np.zeros(0, np.int64), 0  # indices into clips.windows; items added after them
        if wall_share:
            self.walled = wall_windows(self.clips, self.context_frames)
            if not len(self.walled):
                raise NoDataError(root, f"wall_share={wall_share} draws again the windows where a wall holds Mario, "
                                        "but these recordings have none: record more (record --push 0.3 runs into "
                                        "walls) or set wall_share=0")
            self.extra = round(wall_share / (1 - wall_share) * len(self.clips))

    @classmethod
    def from_config(cls, cfg, root: str | Path, split: str = "train", **kwargs) -> NextFrames:
        """The data a world Config trains on: its frame size, context_frames and frame_stride."""
        if not cfg.context_frames:
            raise ValueError("NextFrames is for world models: set context_frames > 0 (e.g. preset 'world-cpu')")
        if cfg.video_channels != 3:
            raise ValueError(f"recordings are RGB; set video_channels=3 (got {cfg.video_channels})")
        return cls(root, cfg.context_frames, (cfg.video_height, cfg.video_width), cfg.frame_stride, split, **kwargs)

    def __len__(self) -> int:
        return len(self.clips) + self.extra

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {i} out of range for {len(self)} windows")
        i %= len(self)
        if i >= len(self.clips):  # an added item: a walled window again, spread evenly over them
            i = int(self.walled[(i - len(self.clips)) * len(self.walled) // self.extra])
        item = self.clips[i]
        index, start = self.clips.windows[i]
        stride, k = self.clips.frame_stride, self.context_frames
        frames = start + stride * np.arange(k + 1)
        video = item["video"]  # (3, K + 1, H, W)
        return {"video": video[:, k:], "context": video[:, :k],
                "actions": held_bits(self.clips.actions[index], frames, stride)}

    def __repr__(self) -> str:
        return f"NextFrames(K={self.context_frames}, {self.clips!r})"


def training_data(cfg, root: str | Path, split: str = "train", **kwargs) -> Dataset:
    """The data set a Config trains on: MarioClips for a video model; NextFrames (the next frame, K context frames
    and the buttons) for a world model (cfg.context_frames > 0)."""
    if cfg.context_frames:  # the model's own frames only where it learns: a validation loss stays comparable
        own, wall = (cfg.own_frames, cfg.wall_share) if split == "train" else (0, 0.0)
        return NextFrames.from_config(cfg, root, split=split, own_frames=own, wall_share=wall, **kwargs)
    return MarioClips.from_config(cfg, root, split=split, **kwargs)


def recording_start(data: str | Path, cfg, clip: int = 0, start: int = 0,
                    split: str = "val") -> tuple[np.ndarray, torch.Tensor]:
    """From recording `clip` of `split` (MarioClips' split) at recorded frame `start`: its K frames at the model's
    size and stride, uint8 (K, H, W, 3), and the real buttons (as bits (M, 8)) of those K frames and every later
    kept frame of the clip (M − K more)."""
    clips = NextFrames.from_config(cfg, data, split=split, progress=False).clips
    if not 0 <= clip < len(clips.files):
        raise ValueError(f"clip={clip}: the {split!r} split of {data} has {len(clips.files)} recordings")
    frames, k, stride = clips.frames(clip), cfg.context_frames, cfg.frame_stride
    kept = np.arange(start, len(frames), stride)
    if len(kept) <= k:
        raise ValueError(f"start={start} leaves {len(kept)} frames in {clips.files[clip].name}; need more than "
                         f"K={k}")
    return np.array(frames[kept[:k]]), held_bits(clips.actions[clip], kept, stride)


__all__ = ["NextFrames", "NoActionsError", "held_bits", "recording_start", "training_data", "wall_windows"]
