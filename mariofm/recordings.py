"""The folder of recordings: which video files it holds, the level each shows, the held-out split, the
actions sidecars, and where the notebooks find their data (recorded when missing).

    find_videos(root)                  the video files under a folder, sorted (hidden folders skipped)
    level_of(path)                     "world-stage" from the JSON sidecar `mariofm record` writes, or the name
    split_files(names, "val")          the held-out files: VAL_FRACTION = 0.2 of each level's files
    load_actions(sidecar)              a clip's <stem>.actions.npy, checked: one controller byte per frame
    find_or_record(root, smoke)        the notebooks' data folder, recorded first when it holds no video

Train and val are split by file, never by window, so that no validation frame was seen in training, and by level,
so the real-clip floors of `evaluate` see every level the model trains on. Nothing here decodes video: that is
`mariofm.data`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ogv")
RECORD_COMMAND = "python -m mariofm record --out {root} --clips 40 --frames 300 --seed 0"


# --- which files, which level, which split --------------------------------------------------------------

class NoDataError(FileNotFoundError):
    """No usable video in the data folder; the message says how to record some."""

    def __init__(self, root: str | Path, problem: str) -> None:
        super().__init__(f"{problem}\nRecord gameplay clips with:\n    {RECORD_COMMAND.format(root=root)}")


def find_videos(root: Path) -> list[Path]:
    """Video files under root (sorted; hidden folders such as .cache are skipped)."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def _unit_hash(text: str) -> float:
    """A number in [0, 1) fixed by `text` alone, the same in every process and Python version."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16) / 16**12


VAL_FRACTION = 0.2  # held-out share of the files: 24 of 120 recorded clips, ~2,000 real windows for the floors
_LEVEL_NAME = re.compile(r"_(\d+)-(\d+)$")  # clip_s{seed}_{i}_{world}-{stage}, as `mariofm record` names files


def level_of(path: str | Path) -> str | None:
    """The level "world-stage" a recording shows: read from its JSON sidecar (`mariofm record` writes one),
    else from a `..._{world}-{stage}` file name; None when neither says."""
    path = Path(path)
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text())
            if "world" in meta and "stage" in meta:
                return f"{int(meta['world'])}-{int(meta['stage'])}"
        except (OSError, ValueError, TypeError):
            pass  # an unreadable sidecar: fall back to the name
    match = _LEVEL_NAME.search(path.stem)
    return f"{int(match[1])}-{int(match[2])}" if match else None


def split_files(names: list[str], split: str, val_fraction: float = VAL_FRACTION, seed: int = 0,
                root: str | Path | None = None) -> list[str]:
    """The names in `split`: whole files, held out per level in proportion, fixed by `seed`.

    Files are grouped by level (`level_of`, looked up under `root`; files without a level form one group of
    their own). The number of val files is k = round(f·N), at least 1 and at most N-1 when N >= 2. Group g of
    n_g files has quota f·n_g; it gets floor(f·n_g) files, and the k - Σ floor left over go to the groups with
    the largest remainders f·n_g - floor(f·n_g) (ties: the larger group, then the level name) — Hamilton's
    largest-remainder method, so every level is held out in proportion up to rounding. Within a group the
    files with the lowest hash(seed, name) are held out. The split depends only on the names, their levels,
    f and the seed (not on the order of `names`, the machine or the Python version); adding files can move
    others, because the quotas change.
    """
    if split not in ("train", "val", "all"):
        raise ValueError(f"split={split!r} must be 'train', 'val' or 'all'")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction={val_fraction!r} must lie in [0, 1), e.g. {VAL_FRACTION}")
    if split == "all":
        return list(names)
    groups: dict[str, list[str]] = {}
    for name in names:
        level = level_of(Path(root) / name if root is not None else name)
        groups.setdefault("" if level is None else level, []).append(name)
    k = round(val_fraction * len(names))
    if len(names) >= 2:
        k = min(max(k, 1), len(names) - 1)
    quota = {g: val_fraction * len(members) for g, members in groups.items()}
    count = {g: int(q) for g, q in quota.items()}
    by_remainder = sorted(groups, key=lambda g: (-(quota[g] - count[g]), -len(groups[g]), g))
    for g in by_remainder[:max(0, k - sum(count.values()))]:
        count[g] += 1
    val = set()
    for g, members in groups.items():
        ranked = sorted(members, key=lambda name: (_unit_hash(f"{seed}:{name}"), name))
        val.update(ranked[:min(count[g], len(members))])
    return [name for name in names if (name in val) == (split == "val")]



# --- the actions sidecar --------------------------------------------------------------------------------

class ActionsError(ValueError):
    """An .actions.npy sidecar that cannot be read, or whose values are not one controller byte per frame."""


def load_actions(sidecar: str | Path, n_frames: int | None = None) -> np.ndarray:
    """A clip's actions from its `<stem>.actions.npy`: uint8 (T,), one controller byte (0..255) per frame.

    Refused with an ActionsError naming the file: a file numpy cannot read (or an object array, which would
    need unpickling), an array that is not 1-D, values that are not whole numbers in 0..255 (a plain cast to
    uint8 would wrap 1579 to 43 without a word), and, given `n_frames`, a length other than n_frames."""
    sidecar = Path(sidecar)
    try:
        actions = np.load(sidecar, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:  # garbage, truncated, or an object array (needs pickle)
        raise ActionsError(f"{sidecar} is not a readable numeric .npy array ({err})") from None
    if not isinstance(actions, np.ndarray) or actions.dtype.kind not in "biuf":
        kind = getattr(actions, "dtype", type(actions).__name__)
        raise ActionsError(f"{sidecar} holds {kind} values; actions are controller bytes, integers 0..255")
    if actions.ndim != 1:
        raise ActionsError(f"{sidecar} holds an array of shape {actions.shape}; actions are one controller byte "
                           f"per frame, shape ({n_frames if n_frames is not None else 'frames'},)")
    bad = ~np.isfinite(actions) | (actions != np.round(actions)) | (actions < 0) | (actions > 255) \
        if actions.dtype.kind == "f" else (actions < 0) | (actions > 255)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ActionsError(f"{sidecar} holds {actions[i].item()!r} at frame {i} ({int(bad.sum())} bad value(s)); "
                           f"actions are controller bytes, integers 0..255")
    if n_frames is not None and len(actions) != n_frames:
        raise ActionsError(f"{sidecar} holds {len(actions)} actions for a video of {n_frames} frames")
    return actions.astype(np.uint8)


# --- the notebooks' data --------------------------------------------------------------------------------

DATA_ENV = "MARIOFM_DATA"  # names the data folder, for the notebooks and `make notebooks`
FULL_RECORDING = dict(clips=40, frames=300, seed=0, workers=2)  # as RECORD_COMMAND, with 2 processes
SMOKE_RECORDING = dict(clips=4, frames=48, seed=0, levels="1-1,1-2,3-2", progress=False)  # seconds to record


def find_or_record(root: str | Path = ".", smoke: bool = False) -> Path:
    """The folder of recordings the notebooks read, recorded first when it holds no video; prints which.

    Which folder: $MARIOFM_DATA when set, else <root>/data_video/mario (root: the repository). A smoke run
    (`smoke=True`, as MARIOFM_SMOKE=1 sets in the notebooks) without MARIOFM_DATA and without any video in
    data_video/mario uses <root>/outputs/clips_smoke, so that CI never records into the real data folder.
    When that folder holds no video, it is recorded once with `mariofm.record.record_clips`: FULL_RECORDING
    (40 clips of 300 frames, seed 0: the README's data set, minutes with 2 workers), or in a smoke run
    SMOKE_RECORDING (4 clips of 48 frames on levels 1-1, 1-2 and 3-2, seconds). Later calls, from any
    notebook, find the files and record nothing.
    """
    root = Path(root)
    if DATA_ENV in os.environ:
        data, why = Path(os.environ[DATA_ENV]), f"${DATA_ENV}"
    else:
        data, why = root / "data_video" / "mario", "the default folder"
        if smoke and not (data.is_dir() and find_videos(data)):
            data, why = root / "outputs" / "clips_smoke", "a smoke run's own clips: data_video/mario has none"
    if not (data.is_dir() and find_videos(data)):
        # imported here: only the path that records needs the emulator (cynes and its ROM)
        from mariofm.record import record_clips

        recording = SMOKE_RECORDING if smoke else FULL_RECORDING
        print(f"recording real gameplay into {data}: {recording['clips']} clips of {recording['frames']} frames "
              f"(once: later runs and the other notebooks reuse them)")
        record_clips(data, **recording)
    print(f"data: {data} ({why}) holds {len(find_videos(data))} clips")
    return data


__all__ = ["find_videos", "level_of", "split_files", "load_actions", "find_or_record", "NoDataError",
           "ActionsError", "VAL_FRACTION", "VIDEO_SUFFIXES", "RECORD_COMMAND"]
