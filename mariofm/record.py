"""`python -m mariofm record`: play the real game and save gameplay clips to train on.

The NES emulator (cynes) runs the original Super Mario Bros. ROM; a scripted, stochastic player reads the
game's RAM and presses buttons. Each clip is three files next to each other:

    <stem>.avi           lossless video (MPNG), 240x256 RGB, fps = 60 / frame_skip
    <stem>.actions.npy   uint8 (T,): the controller byte held while each recorded frame was emulated
    <stem>.json          level, seed, fps, Mario's x per frame, events, why the clip ended, ROM hash, ...

    python -m mariofm record --out data_video/mario --clips 40 --frames 300 --seed 0

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
import hashlib
import importlib.util
import json
import multiprocessing as mp
import re
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
from mariofm.video import AviWriter

ROM_PACKAGE = "fragile-gym-super-mario-bros==7.4.1"
ROM_SHA256 = "ec299b990e8bfee8ba46e3f61d63b2e1ae5b8a2e431de84e2e4bbd692dc53586"
CODEC = "MPNG"
NES_FPS = 60  # the NES draws ~60.1 frames per second; we round

# the first stage of every world, plus a few that look different (underground 1-2 and 4-2, night 3-2).
# Left out: water levels and castles (this player can't swim or dodge fire bars) and the tree tops of
# 1-3 (its jumps are too precise for it).
DEFAULT_LEVELS = ("1-1", "2-1", "3-1", "4-1", "5-1", "6-1", "7-1", "8-1", "1-2", "3-2", "4-2")

# --- controller byte (player 1): one bit per button -------------------------------------------------
RIGHT, LEFT, DOWN, UP, START, SELECT, B, A = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# --- RAM addresses (verified on this ROM) ------------------------------------------------------------
GAME_MODE, MODE_TASK = 0x0770, 0x0772  # gameplay when mode = 1 and task = 3
PLAYER_STATE = 0x000E  # 8 normal, 7 entering the level, 4 flagpole slide, 0x0B dying, 6 dead
ON_GROUND_FLAG = 0x001D  # 0 on the ground, 1 airborne, 3 climbing the flagpole
X_PAGE, X_PIXEL, Y_PIXEL, Y_PAGE = 0x006D, 0x0086, 0x00CE, 0x00B5  # Mario's position; Y_PAGE > 1: in a pit
WORLD, STAGE, AREA = 0x075F, 0x075C, 0x0760  # 0-based
POWER, SMALL = 0x0756, 0x0754  # 0 small, 1 big, 2 fiery; 1 if small
HALFWAY_PAGE = 0x075B  # the level page a (re)start begins on
INTRO_TIMER = 0x07A0  # frames the "WORLD x-y" screen stays up
ENEMY_ACTIVE, ENEMY_KIND, ENEMY_PAGE, ENEMY_X, ENEMY_Y = 0x000F, 0x0016, 0x006E, 0x0087, 0x00CF  # 5 slots each
METATILES = 0x0500  # the collision map: 2 pages x 13 rows x 16 columns, one byte per 16x16 block
COINS = (0xC2, 0xC3)  # metatiles Mario passes through
NORMAL, DYING, FLAGPOLE = 8, 0x0B, 4
PIRANHA, PIRANHA_DOWN_Y = 0x0D, 0x0434  # the Piranha Plant's kind, and its y when hidden (one per slot)
HOPPERS = (0x0E, 0x0F, 0x10)  # Koopa Paratroopas: they hop or fly, so they are often above Mario
# kinds the player ignores: Lakitu (stays up in his cloud), lifts and platforms, flags, the jump spring
HARMLESS = frozenset([0x11, *range(0x24, 0x2D), 0x30, 0x31, 0x32, 0x34, 0x35])


class RomError(RuntimeError):
    """The ROM package is missing or holds a different ROM."""


def find_rom() -> Path:
    """Path of the Super Mario Bros. ROM shipped by the `fragile-gym-super-mario-bros` package.

    find_spec locates the package without importing it: its __init__ needs nes_py, which we don't use.
    """
    spec = importlib.util.find_spec("gym_super_mario_bros")
    if spec is None or not spec.submodule_search_locations:
        raise RomError(f"the Super Mario Bros. ROM is missing: install it with `pip install {ROM_PACKAGE}`")
    rom = Path(list(spec.submodule_search_locations)[0]) / "_roms" / "super-mario-bros.nes"
    if not rom.is_file():
        raise RomError(f"{rom} not found: reinstall the ROM with `pip install --force-reinstall {ROM_PACKAGE}`")
    digest = hashlib.sha256(rom.read_bytes()).hexdigest()
    if digest != ROM_SHA256:
        raise RomError(f"{rom} has sha256 {digest}, expected {ROM_SHA256}: a different dump of the game. "
                       f"Install the expected one with `pip install --force-reinstall {ROM_PACKAGE}` (and "
                       "uninstall gym-super-mario-bros, which ships another ROM in the same folder)")
    return rom


def parse_levels(text: str | list[str] | tuple[str, ...] | None) -> list[tuple[int, int]]:
    """'1-1,4-2' -> [(1, 1), (4, 2)]: (world, stage), both 1-based. None -> DEFAULT_LEVELS."""
    names = DEFAULT_LEVELS if text is None else text.split(",") if isinstance(text, str) else text
    levels = []
    for name in names:
        match = re.fullmatch(r"\s*([1-8])-([1-4])\s*", name)
        if match is None:
            raise ValueError(f"bad level name {name.strip()!r}: write levels as world-stage separated by commas, "
                             "e.g. `1-1,4-2`, with worlds 1-8 and stages 1-4")
        levels.append((int(match[1]), int(match[2])))
    if not levels:
        raise ValueError("no levels given: write them as world-stage separated by commas, e.g. `1-1,4-2`")
    return levels


# --- the game, seen through RAM ----------------------------------------------------------------------

class Game:
    """The emulator, plus named views of the few RAM bytes the recorder and the player read."""

    def __init__(self, rom: Path) -> None:
        try:  # imported here so that `import mariofm.record` works without the emulator
            from cynes import NES
        except ImportError as err:
            raise ImportError("the NES emulator is missing: `pip install cynes==0.1.2` (wheels for Linux x86-64, "
                              "macOS arm64 and Windows amd64, Python 3.11-3.13)") from err
        self.nes = NES(str(rom))
        # the emulator leaves one PPU flag (byte 24 of its save state) uninitialised; without zeroing
        # it, about 1 clip in 10 came out shifted by one frame between runs.
        state = self.nes.save()
        state[24] = 0
        self.nes.load(state)

    def step(self, buttons: int, frames: int = 1) -> np.ndarray:
        """Hold `buttons` for `frames` emulated frames; return the last one, (240, 256, 3) uint8 RGB.

        The array is the emulator's own buffer, overwritten by the next step: copy it to keep it.
        """
        self.nes.controller = buttons
        return self.nes.step(frames=frames)

    def start(self, world: int, stage: int, power: int = 0, page: int = 0) -> bool:
        """From power-on, start world-stage (1-based) and run until Mario can move; False if he never can.

        power: Mario small (0), big (1) or fiery (2). page: the 256-pixel page of the level Mario
        starts on. The game itself uses this when it restarts a level at its halfway point after a
        death; any page works, but on some Mario lands in a pit or a wall.
        """
        self.step(0, 40)  # the title screen accepts START from about frame 33
        # the area index counts the intro scene that worlds 1, 2, 4 and 7 have before stage 2
        area = stage - 1 + (world in (1, 2, 4, 7) and stage >= 2)
        self.nes[WORLD], self.nes[STAGE], self.nes[AREA] = world - 1, stage - 1, area
        # written before START, so the level loads Mario's sprite and palette to match
        self.nes[POWER], self.nes[SMALL], self.nes[HALFWAY_PAGE] = power, power == 0, page
        self.step(START)  # one frame only: START held during play would pause
        for _ in range(200):
            self.nes[INTRO_TIMER] = min(self.nes[INTRO_TIMER], 1)  # skip most of the "WORLD x-y" screen
            self.step(0)
            if self.controllable:
                feet = (self.y - 16) // 16
                return any(self.solid(self.x + 8, row) for row in range(feet + 1, 13))  # ground below
        return False

    @property
    def playing(self) -> bool:
        """The level is on screen (not the title, a black transition or the game-over screen)."""
        return self.nes[GAME_MODE] == 1 and self.nes[MODE_TASK] == 3

    @property
    def controllable(self) -> bool:
        return self.playing and self.nes[PLAYER_STATE] == NORMAL

    @property
    def dying(self) -> bool:
        return self.nes[PLAYER_STATE] in (DYING, 6) or self.nes[Y_PAGE] > 1

    @property
    def state(self) -> int:
        return self.nes[PLAYER_STATE]

    @property
    def level(self) -> tuple[int, int, int]:
        """(world, stage, area), 1-based world and stage."""
        return self.nes[WORLD] + 1, self.nes[STAGE] + 1, self.nes[AREA]

    @property
    def x(self) -> int:
        """Mario's x in level pixels (left edge of his 16-pixel-wide sprite)."""
        return self.nes[X_PAGE] * 256 + self.nes[X_PIXEL]

    @property
    def y(self) -> int:
        """Mario's y in screen pixels (top of a small Mario; 176 when standing on the floor)."""
        return self.nes[Y_PIXEL]

    @property
    def on_ground(self) -> bool:
        return self.nes[ON_GROUND_FLAG] == 0

    def solid(self, x: int, row: int) -> bool:
        """Is the 16x16 block at level pixel x, metatile row `row` (0 = y 32, 12 = y 224) solid?"""
        if not 0 <= row < 13:
            return False
        column = (x // 16) % 32  # the map is a ring of two 16-column pages that follows the camera
        tile = self.nes[METATILES + (column // 16) * 208 + row * 16 + column % 16]
        return tile != 0 and tile not in COINS

    def enemies(self) -> list[Enemy]:
        """Every active enemy slot."""
        out = []
        for i in range(5):
            if self.nes[ENEMY_ACTIVE + i]:
                kind, y = self.nes[ENEMY_KIND + i], self.nes[ENEMY_Y + i]
                hidden = kind == PIRANHA and y >= self.nes[PIRANHA_DOWN_Y + i]  # all the way down its pipe
                out.append(Enemy(kind, self.nes[ENEMY_PAGE + i] * 256 + self.nes[ENEMY_X + i], y, hidden))
        return out


class Enemy(NamedTuple):
    kind: int  # RAM 0x0016: 0x06 Goomba, 0x0D Piranha Plant, 0x12 Spiny, 0x33 Bullet Bill, ...
    x: int  # level pixels
    y: int  # screen pixels; 8 more than Mario's y when both stand on the same floor
    hidden: bool  # a Piranha Plant inside its pipe

    @property
    def harmless(self) -> bool:
        """Lifts, springs and flags, Lakitu up in his cloud, a Piranha Plant hiding in its pipe."""
        return self.kind in HARMLESS or self.hidden


# --- the player ---------------------------------------------------------------------------------------

# what the player is in the mood for: buttons held, chance to pick it, how long it lasts (emulated frames)
MOODS = {
    "run": (RIGHT | B, 0.72, (60, 300)),
    "walk": (RIGHT, 0.14, (30, 120)),
    "wait": (0, 0.07, (10, 45)),
    "back": (LEFT, 0.07, (8, 30)),
}


@dataclass
class Player:
    """A scripted, stochastic player that reads RAM, never pixels.

    Mostly it runs right holding B. It jumps at walls, pits and enemies just ahead, holding A for a
    random number of frames (in SMB a longer press makes a higher jump), and lets enemies that fly
    overhead pass. Now and then it walks, waits or steps back for a moment, so the camera does not
    always scroll at full speed, and some jumps are badly timed, so Mario sometimes dies.
    """

    rng: np.random.Generator
    mood: str = "run"
    mood_left: int = 0  # emulated frames until the next mood
    jump_left: int = 0  # emulated frames A stays held
    in_air: bool = False  # has the current jump left the ground yet?
    last: int = 0  # the previous buttons
    stuck: int = 0  # emulated frames spent pushing right without getting further right
    waited: int = 0  # emulated frames spent waiting for something overhead to pass
    best_x: int = 0

    def act(self, game: Game, frames: int) -> int:
        """The buttons to hold for the next `frames` emulated frames."""
        on_ground = game.on_ground
        self.mood_left -= frames
        if self.mood_left <= 0 and on_ground:  # no change of mind in mid-air: that is how Mario falls
            names = list(MOODS)
            self.mood = names[self.rng.choice(len(names), p=[MOODS[n][1] for n in names])]
            low, high = MOODS[self.mood][2]
            self.mood_left = int(self.rng.integers(low, high))
        buttons = MOODS[self.mood][0]

        # enemies just ahead as (kind, dx, dy) from Mario; dy < 0: above him
        ahead = 40 if buttons & B else 24  # look further ahead at running speed
        enemies = [(e.kind, e.x - game.x, e.y - 8 - game.y) for e in game.enemies()
                   if not e.harmless and -16 < e.x - game.x < ahead + 48]
        # wait on the ground while something may come down on Mario (a falling Spiny egg, a Bullet Bill)
        # or a Piranha Plant is out of a pipe ahead (it stays in while Mario stands next to its pipe, so
        # he walks up while it is down) -- but not forever
        overhead = any(kind not in HOPPERS and dx < ahead + 32 and -96 < dy < -24 for kind, dx, dy in enemies)
        piranha_out = any(kind == PIRANHA and dx > 20 for kind, dx, _ in enemies)  # hidden ones are harmless
        self.waited = self.waited + frames if overhead or piranha_out else 0
        if (overhead or piranha_out) and on_ground and self.waited < 90:
            buttons = 0
        # enemies to jump over or onto: about level with Mario, or a Koopa hopping his way
        enemy_ahead = any(dx < ahead + 32 and (abs(dy) <= 40 or kind in HOPPERS and dy > -64)
                          for kind, dx, dy in enemies)

        # a pipe or a wall that short hops don't clear: push right long enough, then jump high
        self.stuck = self.stuck + frames if buttons & RIGHT and game.x <= self.best_x else 0
        self.best_x = max(self.best_x, game.x)

        if self.jump_left > 0:
            self.in_air |= not on_ground
            if self.in_air and on_ground:  # landed: let go of A so the next jump can start
                self.jump_left = 0
            else:
                self.jump_left -= frames
                buttons |= A
        elif not self.last & A and on_ground and buttons:  # SMB jumps when A goes down: up first
            hold = self.jump_hold(game, ahead, enemy_ahead)
            if hold:
                self.jump_left, self.in_air = hold - frames, False
                buttons |= A
        self.last = buttons
        return buttons

    def jump_hold(self, game: Game, ahead: int, enemy_ahead: bool) -> int:
        """How many frames to hold A for a jump that starts now, or 0 for no jump."""
        rng, x = self.rng, game.x
        feet = (game.y - 16) // 16  # the metatile row Mario's feet are in (small Mario on the floor: 10)
        wall = any(game.solid(x + 16 + d, row) for d in (0, ahead // 2) for row in (feet, feet - 1))
        # a pit: nothing to land on in the column ahead, from foot level to the bottom of the screen
        pit = not any(game.solid(x + 8 + ahead, row) for row in range(feet + 1, 13))
        if self.stuck > 30 or (wall or pit) and rng.random() < 0.9:
            return int(rng.integers(24, 36))  # a full jump clears pipes and gaps
        if enemy_ahead and rng.random() < 0.9:
            return int(rng.integers(20, 36))  # a high jump: over the enemy, or onto it
        if rng.random() < 0.004:  # a jump for the fun of it
            return int(rng.integers(4, 30))
        return 0


# --- one clip -----------------------------------------------------------------------------------------

CHECKPOINT_FRAMES = 32  # emulated frames (about 0.5 s) between the save states a rewind can go back to
MAX_CHECKPOINTS = 8  # so a rewind reaches up to about 4 s back
DEATH_TAIL = 30  # emulated frames kept after a dying Mario has left the screen
FLAG_TAIL = 240  # emulated frames kept after Mario grabs the flagpole (slide, walk to the castle)


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
    every = max(1, CHECKPOINT_FRAMES // frame_skip)  # steps between save states
    pending: list[np.ndarray] = []  # recorded frames a rewind may still take back
    checkpoints: list[tuple] = []  # (step, emulator state, player, recorded length, #events), oldest first
    failures, undone_at = 0, -1  # deaths undone in a row near step `undone_at`: each goes back further
    step, dying_at, flag_at, offscreen = 0, None, None, 0
    while len(clip.actions) < frames:
        if step % every == 0 and (not checkpoints or checkpoints[-1][0] < step) \
                and dying_at is None and flag_at is None:
            checkpoints.append((step, game.nes.save(), replace(player), len(clip.actions), len(clip.events)))
            del checkpoints[:-MAX_CHECKPOINTS]
            failures = 0 if step > undone_at else failures
            # frames older than the oldest save state can't be taken back any more
            final = len(pending) - (len(clip.actions) - checkpoints[0][3])
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
                while len(checkpoints) > 1 and checkpoints[-1][0] > back:
                    checkpoints.pop()
                step, state, saved, length, n_events = checkpoints[-1]
                game.nes.load(state)
                player = replace(saved)  # same moods and timers; the shared rng moves on, so the replay differs
                del pending[len(pending) - (len(clip.actions) - length):]
                del clip.actions[length:], clip.xs[length:], clip.events[n_events:]
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
                frame_skip: int, max_preroll: int = 240) -> Path:
    """Record clip `index` of run `seed` into `out`; return its AVI path. Depends only on (seed, index)."""
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
        clip = play_clip(game, Player(rng), frames, frame_skip, preroll, writer.write)
    np.save(out / f"{stem}.actions.npy", np.array(clip.actions, dtype=np.uint8))
    sidecar = {
        "world": world, "stage": stage, "area": area, "power": POWERS[power], "start_x": start_x,
        "seed": seed, "clip_index": index, "fps": NES_FPS / frame_skip, "frame_skip": frame_skip,
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


def _check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".mariofm_write_test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OSError(f"cannot write to the output folder {out} ({err.strerror or err}); "
                      "choose another one with --out") from err


def record_clips(out: str | Path, clips: int, frames: int, seed: int, levels: str | list[str] | None = None,
                 workers: int = 1, frame_skip: int = 2, progress: bool = True) -> list[Path]:
    """Record `clips` clips of up to `frames` frames each into `out`; return the AVI paths in clip order.

    levels: "1-1,4-2" or ["1-1", "4-2"] (None: DEFAULT_LEVELS); each clip draws one. frame_skip K:
    keep every K-th emulated frame, so the video runs at 60 / K fps. Clips are independent of `workers`.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed={seed!r} must be an integer >= 0")
    for name, value in (("clips", clips), ("frames", frames), ("workers", workers), ("frame_skip", frame_skip)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")
    level_list, rom, out = parse_levels(levels), find_rom(), Path(out)
    _check_writable(out)
    jobs = [(rom, out, seed, i, level_list, frames, frame_skip) for i in range(clips)]
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


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= {low}")
    return value


def _positive(text: str) -> int:
    return _integer(text, 1)


def _natural(text: str) -> int:
    return _integer(text, 0)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("record", help="play the real game and record gameplay clips",
                                   description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data_video/mario", help="output folder (default: %(default)s)")
    parser.add_argument("--clips", type=_positive, default=40, help="number of clips (default: %(default)s)")
    parser.add_argument("--frames", type=_positive, default=300,
                        help="recorded frames per clip; clips can end earlier (default: %(default)s)")
    parser.add_argument("--seed", type=_natural, default=0, help="same seed and arguments, same clips")
    parser.add_argument("--levels", type=_levels_arg, default=None,
                        help=f"levels to draw from, e.g. 1-1,4-2 (default: {','.join(DEFAULT_LEVELS)})")
    parser.add_argument("--workers", type=_positive, default=1, help="processes, one emulator each")
    parser.add_argument("--frame-skip", type=_positive, default=2,
                        help="keep every K-th emulated frame: fps = 60 / K (default: %(default)s)")
    parser.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace) -> int:
    try:
        record_clips(args.out, args.clips, args.frames, args.seed, args.levels, args.workers, args.frame_skip)
    except (RomError, OSError, ImportError) as err:
        print(f"mariofm record: error: {err}", file=sys.stderr)
        return 1
    return 0


__all__ = ["find_rom", "record_clips", "record_clip", "parse_levels", "add_cli", "Game", "Player",
           "play_clip", "RomError", "DEFAULT_LEVELS", "ROM_SHA256"]
