"""The real game's answer to "what if these buttons were held from here?": ground truth for a world model.

The recorder's emulator is deterministic and can save and load its state (mariofm.nes), so from any moment of real
play the game itself can be asked what each button set does. `game_branches` makes N such moments:

    start a random level (DEFAULT_LEVELS) on a random page, as the recorder does; let the scripted player
    (mariofm.player) play a random 10-60 recorded frames; record K more kept frames and their buttons (the context);
    save the state; then for each button set: load the state and hold the set for `horizon` kept frames.

Frames are recorded as `mariofm record` does (frame_skip 2: 30 fps), kept every frame_stride-th, and resized with
the data pipeline's `resize_frame`, so they match the training frames pixel for pixel. The camera's position is read
from RAM as well (level pixels), to check the frame-based scroll estimate against.

    branches = game_branches(16, context_frames=4, size=(60, 64), frame_stride=2, horizon=32,
                             buttons=("right+b", "none"), seed=0)
    branches.context          uint8 (N, K, H, W, 3)      branches.context_actions  float (N, K, 8) button shares
    branches.frames           uint8 (N, S, horizon, H, W, 3): the real frames with button set s held
    branches.camera           int (N, S, horizon + 1): the camera's x in the level, from the last context frame on
    branches.mario            int (N, S, horizon + 1): Mario's x in the level, the same frames (RAM, mariofm.nes)
    branches.dies             bool (N, S): Mario died (or fell into a pit) within the horizon

Why the camera stops is a question of Mario, whom a world model must keep on the screen to answer it: a wall holds
him (his x stays), he dies, or he walks on left of the screen's middle, where the camera does not follow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from mariofm.conditioning import buttons_byte
from mariofm.data import resize_frame
from mariofm.nes import DEFAULT_LEVELS, Game, find_rom, parse_levels
from mariofm.player import Player
from mariofm.record import MAX_START_PAGE
from mariofm.world_data import held_bits

FRAME_SKIP = 2  # emulated frames per recorded frame, as `mariofm record` records
CAMERA_PAGE, CAMERA_X = 0x071A, 0x071C  # the left edge of the screen in the level: page·256 + x


class Branches(NamedTuple):
    context: np.ndarray
    context_actions: torch.Tensor
    frames: np.ndarray
    camera: np.ndarray
    buttons: tuple[str, ...]
    levels: list[str]
    mario: np.ndarray
    dies: np.ndarray


def save_branches(branches: Branches, path) -> None:
    """Keep branches in an .npz (they take minutes to play): arrays only, loaded without unpickling."""
    np.savez_compressed(path, context=branches.context, context_actions=branches.context_actions.numpy(),
                        frames=branches.frames, camera=branches.camera, buttons=np.array(branches.buttons),
                        levels=np.array(branches.levels), mario=branches.mario, dies=branches.dies)


def load_branches(path) -> Branches | None:
    """The branches kept in `path`, or None for a file from before Mario's x was kept (it is played again)."""
    with np.load(path, allow_pickle=False) as f:
        if "mario" not in f:
            return None
        return Branches(f["context"], torch.from_numpy(f["context_actions"]), f["frames"], f["camera"],
                        tuple(f["buttons"].tolist()), f["levels"].tolist(), f["mario"], f["dies"])


def camera_x(game: Game) -> int:
    """The left edge of the screen in level pixels (RAM 0x071A page, 0x071C pixel)."""
    return game.nes[CAMERA_PAGE] * 256 + game.nes[CAMERA_X]


def _one_start(rom, rng: np.random.Generator, levels, context_frames: int, size, stride: int):
    """Play to a random moment; return (game, K context frames, their button shares) or None if Mario died."""
    world, stage = levels[rng.integers(len(levels))]
    game = Game(rom)
    if not game.start(world, stage, int(rng.choice(3, p=[0.5, 0.3, 0.2])), page=int(rng.integers(MAX_START_PAGE + 1))):
        return None
    player = Player(rng)
    for _ in range(int(rng.integers(10, 61))):  # warm up: Mario moving as in the recordings
        game.step(player.act(game, FRAME_SKIP), FRAME_SKIP)
    frames, actions = [], []
    for _ in range(context_frames * stride):
        buttons = player.act(game, FRAME_SKIP)
        frames.append(np.array(resize_frame(game.step(buttons, FRAME_SKIP), size)))  # a copy: step reuses it
        actions.append(buttons)
        if game.dying or not game.controllable:
            return None
    kept = np.arange(stride - 1, len(frames), stride)  # the last recorded frame of each stride group
    return game, np.stack([frames[i] for i in kept]), held_bits(np.array(actions, np.uint8), kept, stride), \
        f"{world}-{stage}"


def game_branches(num: int, context_frames: int, size: tuple[int, int], frame_stride: int, horizon: int,
                  buttons: tuple[str, ...] = ("right+b", "none"), seed: int = 0,
                  levels: str | list[str] | None = None) -> Branches:
    """`num` moments of real play, each continued by the real game with every button set; see the docstring."""
    rom, level_list = find_rom(), parse_levels(levels or list(DEFAULT_LEVELS))
    codes = [buttons_byte(b) for b in buttons]
    ctx, acts, frames, camera, names, mario, dies = [], [], [], [], [], [], []
    attempt = 0
    while len(ctx) < num:
        rng = np.random.default_rng([seed, attempt])
        attempt += 1
        if attempt > 20 * num:
            raise RuntimeError(f"only {len(ctx)} of {num} starts survived their warm-up")
        start = _one_start(rom, rng, level_list, context_frames, size, frame_stride)
        if start is None:
            continue
        game, context, bits, level = start
        state = game.nes.save()
        per_set, cams, xs, died = [], [], [], []
        for code in codes:
            game.nes.load(state)
            kept, cam, x, dead = [], [camera_x(game)], [game.x], False
            for step in range(horizon * frame_stride):
                frame = game.step(code, FRAME_SKIP)
                dead = dead or game.dying
                if (step + 1) % frame_stride == 0:
                    kept.append(np.array(resize_frame(frame, size)))
                    cam.append(camera_x(game))
                    x.append(game.x)
            per_set.append(np.stack(kept))
            cams.append(cam)
            xs.append(x)
            died.append(dead)
        ctx.append(context)
        acts.append(bits)
        frames.append(np.stack(per_set))
        camera.append(cams)
        names.append(level)
        mario.append(xs)
        dies.append(died)
    return Branches(np.stack(ctx), torch.stack(acts), np.stack(frames), np.array(camera), tuple(buttons), names,
                    np.array(mario), np.array(dies))


def cached_branches(cache, num: int, context_frames: int, size: tuple[int, int], frame_stride: int, horizon: int,
                    buttons: tuple[str, ...], seed: int) -> Branches:
    """game_branches, kept in the .npz `cache` (playing them takes minutes) and reused when its shapes and button
    sets match; a file made for other settings is played again and overwritten. `cache` None: always played. A file
    with a longer context serves a model with a shorter one, which reads its last K frames, so that models of
    different K are scored from the same moments (played for each K, the moments would differ: a context spans
    K·frame_stride recorded frames, so a larger K ends later); a note says so."""
    kept = bool(cache) and Path(cache).is_file()
    found = load_branches(cache) if kept else None
    if kept and found is None:
        print(f"{cache}: made before the branches kept Mario's x; playing them again", file=sys.stderr)
    if found is None or found.frames.shape[:3] != (num, len(buttons), horizon) or found.buttons != tuple(buttons) \
            or found.context.shape[1] < context_frames or found.context.shape[2:4] != tuple(size):
        found = game_branches(num, context_frames, size, frame_stride, horizon, buttons, seed)
        if cache:
            save_branches(found, cache)
    first = found.context.shape[1] - context_frames
    if first:
        print(f"{cache}: moments made with {found.context.shape[1]} context frames; the model reads the last "
              f"{context_frames} of them", file=sys.stderr)
    return found._replace(context=found.context[:, first:], context_actions=found.context_actions[:, first:])


__all__ = ["Branches", "game_branches", "cached_branches", "save_branches", "load_branches", "camera_x",
           "FRAME_SKIP"]
