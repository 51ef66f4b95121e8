"""`python -m mariofm record`: play the real game and save gameplay clips to train on.

The NES emulator (cynes) runs the original Super Mario Bros. ROM; a scripted, stochastic player reads the
game's RAM and presses buttons. Each clip is three files next to each other:

    <stem>.avi           lossless video (MPNG), 240x256 RGB, fps = 60 / frame_skip
    <stem>.actions.npy   uint8 (T,): the controller byte held while each recorded frame was emulated
    <stem>.json          level, seed, fps, Mario's x per frame, events, why the clip ended, ROM hash, ...

    python -m mariofm record --out data_video/mario --clips 40 --frames 300 --seed 0
    python -m mariofm record --out data_video/push --clips 80 --frames 300 --seed 1 --push 0.3   # walls too

A clip starts at a random point of a random level: the game starts on a random page of the level (as it
does after a death at the halfway point), then the player plays an unrecorded pre-roll of random length.
The clip ends after `frames` frames, or earlier: when Mario dies (the death animation is kept, then the
clip stops before the black "lives" screen), or after he grabs the flagpole or leaves the area through a
pipe, again before the screen goes black. Most deaths are undone like a player with save states would
(see play_clip), so deaths stay occasional. Every recorded frame is real, continuous gameplay. Clip i's
randomness comes only from (seed, i), so the files are pixel-identical whatever the number of workers.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

import mariofm
from mariofm.cli import non_negative_int, positive_int
from mariofm.nes import (
    DEFAULT_LEVELS,
    DOWN,
    FLAGPOLE,
    LEFT,
    NES_FPS,
    RIGHT,
    ROM_SHA256,
    SELECT,
    START,
    UP,
    Y_PAGE,
    A,
    B,
    Game,
    RomError,
    find_rom,
    parse_levels,
)
from mariofm.player import Player
from mariofm.runfolder import writable_folder
from mariofm.video import AviWriter

CODEC = "MPNG"

# --- one clip -----------------------------------------------------------------------------------------

SAVE_EVERY = 32  # emulated frames (about 0.5 s) between the save states a rewind can go back to
MAX_SAVES = 8  # so a rewind reaches up to about 4 s back
DEATH_TAIL = 30  # emulated frames kept after a dying Mario has left the screen
FLAG_TAIL = 240  # emulated frames kept after Mario grabs the flagpole (slide, walk to the castle)


class SaveState(NamedTuple):
    """What a rewind goes back to: the emulator and the player as they were at `step`, and how much of the
    clip had been recorded then (frames and events after it are taken back)."""

    step: int
    emulator: bytes  # cynes' save state
    player: Player
    recorded: int  # len(clip.actions) at that step
    events: int  # len(clip.events) at that step


@dataclass
class Clip:
    """Everything a clip recorded besides its frames, one entry per recorded frame where it is a list."""

    actions: list[int] = field(default_factory=list)
    xs: list[int] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)  # {"frame": i, "event": "death" | "flagpole" | ...}
    end_reason: str = "frames"
    rewinds: int = 0  # deaths undone by going back to a save state
    preroll: int = 0  # unrecorded steps played before the first recorded frame
    steps: int = 0  # steps played in all, counting the pre-roll and play undone by rewinds


def play_clip(game: Game, player: Player, frames: int, frame_skip: int, preroll: int,
              write: Callable[[np.ndarray], None], death_chance: float = 0.15, max_rewinds: int = 8) -> Clip:
    """Play `preroll` unrecorded steps, then record up to `frames` frames, one every `frame_skip` emulated frames.

    The player picks buttons once per recorded frame; they stay held for the `frame_skip` emulated
    frames that make it. Finished frames go to `write`, a few seconds late, because of deaths: like a
    human with save states, the player undoes a death by loading a save state from 0.5-1 s earlier
    (further back if Mario dies there again and again) and playing on with fresh random choices; the frames
    after that state are dropped, never written. A clip keeps its first death with probability
    `death_chance` (or once `max_rewinds` deaths were undone), so deaths stay occasional and every
    written frame still follows from the one before it.
    """
    clip, rng, area = Clip(), player.rng, game.level
    keep_death = rng.random() < death_chance
    every = max(1, SAVE_EVERY // frame_skip)  # steps between save states
    pending: list[np.ndarray] = []  # recorded frames a rewind may still take back
    saves: list[SaveState] = []  # oldest first
    failures, undone_at = 0, -1  # deaths undone in a row near step `undone_at`: each goes back further
    step, dying_at, flag_at, offscreen = 0, None, None, 0
    while len(clip.actions) < frames:
        if step % every == 0 and (not saves or saves[-1].step < step) and dying_at is None and flag_at is None:
            saves.append(SaveState(step, game.nes.save(), replace(player), len(clip.actions), len(clip.events)))
            del saves[:-MAX_SAVES]
            failures = 0 if step > undone_at else failures
            # frames older than the oldest save state can't be taken back any more
            final = len(pending) - (len(clip.actions) - saves[0].recorded)
            for frame in pending[:final]:
                write(frame)
            del pending[:final]

        buttons = player.act(game, frame_skip)
        frame = game.step(buttons, frame_skip)
        step += 1
        clip.steps += 1
        i = len(clip.actions)  # the index this frame gets if it is recorded

        if not game.playing or game.level != area:  # the screen goes black: stop before that
            if dying_at is None and flag_at is None:
                clip.events.append({"frame": i, "event": "level_change"})
            clip.end_reason = "death" if dying_at is not None else "flagpole" if flag_at is not None \
                else "level_change"
            break
        if game.dying and dying_at is None:
            in_preroll = step <= preroll  # a death there is always undone: the clip hasn't started
            if in_preroll or not keep_death and clip.rewinds < max_rewinds:
                failures, undone_at = failures + 1, max(undone_at, step)
                back = step - every * (1 + (failures - 1) // 2)  # 0.5-1 s back; further every 2nd time
                while len(saves) > 1 and saves[-1].step > back:
                    saves.pop()
                save = saves[-1]
                step = save.step
                game.nes.load(save.emulator)
                player = replace(save.player)  # same moods and timers; the shared rng moves on: the replay differs
                del pending[len(pending) - (len(clip.actions) - save.recorded):]
                del clip.actions[save.recorded:], clip.xs[save.recorded:], clip.events[save.events:]
                clip.rewinds += 1
                if in_preroll and clip.rewinds >= max_rewinds:
                    preroll = step  # this stretch keeps killing Mario: record from here instead
                continue
            dying_at = step
            clip.events.append({"frame": i, "event": "death"})
        if game.state == FLAGPOLE and flag_at is None:
            flag_at = step
            clip.events.append({"frame": i, "event": "flagpole"})

        if step > preroll:
            pending.append(frame.copy())  # copy: the emulator reuses its frame buffer
            clip.actions.append(buttons)
            clip.xs.append(game.x)

        offscreen = offscreen + frame_skip if game.nes[Y_PAGE] > 1 else 0
        if dying_at is not None and offscreen >= DEATH_TAIL:
            clip.end_reason = "death"
            break
        if flag_at is not None and (step - flag_at) * frame_skip >= FLAG_TAIL:
            clip.end_reason = "flagpole"
            break
    for frame in pending:
        write(frame)
    clip.preroll = preroll
    return clip


# --- many clips -----------------------------------------------------------------------------------------

POWERS = ("small", "big", "fire")
MAX_START_PAGE = 9  # every default level is longer than 10 pages of 256 pixels


def record_clip(rom: Path, out: Path, seed: int, index: int, levels: list[tuple[int, int]], frames: int,
                frame_skip: int, push: float = 0.0, max_preroll: int = 240) -> Path:
    """Record clip `index` of run `seed` into `out`; return its AVI path. Depends only on (seed, index, push):
    `push` is the player's chance to pick the mood that runs into walls without jumping (mariofm.player.PUSH)."""
    rng = np.random.default_rng([seed, index])  # an independent stream per clip, whatever the worker
    world, stage = levels[rng.integers(len(levels))]
    power = int(rng.choice(3, p=[0.5, 0.3, 0.2]))
    preroll = int(rng.integers(0, max_preroll // frame_skip + 1))  # in recorded steps
    stem = f"clip_s{seed}_{index:04d}_{world}-{stage}"

    # a random start page, then a random pre-roll: clips begin anywhere in the level
    game = Game(rom)
    if not game.start(world, stage, power, page=int(rng.integers(0, MAX_START_PAGE + 1))):
        game = Game(rom)  # that page drops Mario into a pit: start at the beginning instead
        if not game.start(world, stage, power):
            raise RuntimeError(f"level {world}-{stage} did not start")
    area, start_x = game.level[2], game.x
    with AviWriter(out / f"{stem}.avi", NES_FPS / frame_skip, (240, 256)) as writer:
        clip = play_clip(game, Player(rng, push=push), frames, frame_skip, preroll, writer.write)
    np.save(out / f"{stem}.actions.npy", np.array(clip.actions, dtype=np.uint8))
    sidecar = {
        "world": world, "stage": stage, "area": area, "power": POWERS[power], "start_x": start_x,
        "seed": seed, "clip_index": index, "push": push, "fps": NES_FPS / frame_skip, "frame_skip": frame_skip,
        "frames": len(clip.actions), "preroll_frames": clip.preroll * frame_skip, "rewinds": clip.rewinds,
        "emulated_frames": clip.steps * frame_skip,
        "end_reason": clip.end_reason, "events": clip.events, "mario_x": clip.xs,
        "size": [240, 256], "codec": CODEC, "rom_sha256": ROM_SHA256, "mariofm_version": mariofm.__version__,
        "controller_bits": {"right": RIGHT, "left": LEFT, "down": DOWN, "up": UP, "start": START,
                            "select": SELECT, "b": B, "a": A},
    }
    (out / f"{stem}.json").write_text(json.dumps(sidecar, indent=1))
    return writer.path


def _worker_init() -> None:
    import cv2

    cv2.setNumThreads(1)  # one emulator per process; OpenCV's own threads would only compete with it


def _record_job(job: tuple) -> tuple[int, Path, int, str]:
    """record_clip(*job) -> (clip index, AVI path, frames recorded, end reason)."""
    path = record_clip(*job)
    meta = json.loads(path.with_suffix(".json").read_text())
    return meta["clip_index"], path, meta["frames"], meta["end_reason"]


def record_clips(out: str | Path, clips: int, frames: int, seed: int, levels: str | list[str] | None = None,
                 workers: int = 1, frame_skip: int = 2, progress: bool = True, push: float = 0.0) -> list[Path]:
    """Record `clips` clips of up to `frames` frames each into `out`; return the AVI paths in clip order.

    levels: "1-1,4-2" or ["1-1", "4-2"] (None: DEFAULT_LEVELS); each clip draws one. frame_skip K:
    keep every K-th emulated frame, so the video runs at 60 / K fps. push: the player's chance per mood to run
    right without jumping, into walls (mariofm.player.PUSH; 0 = the recordings as before). Clips are independent
    of `workers`.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    for name, value in (("clips", clips), ("frames", frames), ("workers", workers), ("frame_skip", frame_skip)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    if not 0 <= push <= 1:
        raise ValueError(f"push={push!r} must lie in [0, 1]: the player's chance per mood to run right without "
                         "jumping (e.g. 0.25; 0 = off)")
    level_list, rom, out = parse_levels(levels), find_rom(), Path(out)
    writable_folder(out)
    jobs = [(rom, out, seed, i, level_list, frames, frame_skip, push) for i in range(clips)]
    bar = tqdm(total=clips * frames, unit="frame", desc="recording", disable=not progress)
    start, results, workers = time.perf_counter(), [], min(workers, clips)
    # spawn: a fresh interpreter per worker, the same on Linux, macOS and Windows
    pool = mp.get_context("spawn").Pool(workers, initializer=_worker_init) if workers > 1 else None
    try:
        for result in pool.imap_unordered(_record_job, jobs) if pool else map(_record_job, jobs):
            results.append(result)
            bar.update(frames)  # the bar counts requested frames; the summary counts recorded ones
    finally:
        if pool is not None:
            pool.terminate()
        bar.close()
    results.sort()  # clip order
    seconds = time.perf_counter() - start
    total = sum(n for _, _, n, _ in results)
    if progress:
        reasons = Counter(reason for *_, reason in results)
        ends = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items()))
        print(f"recorded {clips} clips, {total} frames in {seconds:.1f} s ({total / seconds:.0f} frames/s, "
              f"{workers} worker{'s' * (workers > 1)}) into {out}; clip ends: {ends}")
    return [path for _, path, _, _ in results]


# --- command line ---------------------------------------------------------------------------------------

def _levels_arg(text: str) -> str:
    try:
        parse_levels(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("record", help="play the real game and record gameplay clips",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data_video/mario", help="output folder (default: %(default)s)")
    parser.add_argument("--clips", type=positive_int, default=40, help="number of clips (default: %(default)s)")
    parser.add_argument("--frames", type=positive_int, default=300,
                        help="recorded frames per clip; clips can end earlier (default: %(default)s)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="same seed and arguments, same clips")
    parser.add_argument("--levels", type=_levels_arg, default=None,
                        help=f"levels to draw from, e.g. 1-1,4-2 (default: {','.join(DEFAULT_LEVELS)})")
    parser.add_argument("--workers", type=positive_int, default=1, help="processes, one emulator each")
    parser.add_argument("--frame-skip", type=positive_int, default=2,
                        help="keep every K-th emulated frame: fps = 60 / K (default: %(default)s)")
    parser.add_argument("--push", type=float, default=0.0,
                        help="the player's chance per mood to run right without jumping, so that walls stop Mario "
                             "(e.g. 0.25 for a world model's data; default: %(default)s)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    try:
        record_clips(args.out, args.clips, args.frames, args.seed, args.levels, args.workers, args.frame_skip,
                     push=args.push)
    except (RomError, OSError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2  # the CLI's convention for bad input or a missing ROM/emulator (mariofm.cli)
    return 0


__all__ = ["record_clips", "record_clip", "play_clip", "add_cli", "Clip", "SaveState"]
