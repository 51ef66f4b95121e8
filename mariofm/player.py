"""The scripted player that plays the real game for the recorder: it reads RAM (mariofm.nes), never pixels.

It has moods (run, walk, wait, step back, run back) that last a random while, so the recordings hold every
button combination a learner can press in the play notebook, each often enough for a world model to learn what
it does; and it jumps at walls, pits and enemies just ahead, holding A for a random number of frames (a longer
press makes a higher jump in Super Mario Bros.), plus now and then a jump of random height for no reason. On
request (`record --push`) it also has a mood that runs right without ever jumping, into walls (PUSH).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mariofm.nes import HOPPERS, LEFT, PIRANHA, RIGHT, A, B, Game

# what the player is in the mood for: buttons held, chance to pick it, how long it lasts (emulated frames)
# The shares are set for a world model (notebook 06): it only learns what a button does if the recordings show
# it often, and for long enough that the camera visibly stops or Mario turns round (runs last 1-5 s, waits up to
# 1.5 s). Running right still dominates, so that clips move through the levels.
MOODS = {
    "run": (RIGHT | B, 0.48, (60, 300)),
    "walk": (RIGHT, 0.18, (30, 150)),
    "wait": (0, 0.16, (20, 90)),
    "back": (LEFT, 0.12, (10, 45)),
    "run back": (LEFT | B, 0.06, (10, 30)),
}
FUN_JUMP = 0.02  # chance per decision of a jump of random height for no reason (also while standing)
# "push" (Player.push, `record --push`): run right and never jump, as a learner who holds right + B without A does.
# In the game a pipe or a wall then stops Mario and the camera. The other moods jump at most walls within half a
# second: in the default recordings 17% of the frames with right + B held without A leave Mario where he was, with
# `--push 0.3` 52%, and a world model trained on them runs on through fewer walls (docs/benchmarks.md section 6).
PUSH = (RIGHT | B, (60, 240))


@dataclass
class Player:
    """A scripted, stochastic player that reads RAM, never pixels.

    Mostly it runs right holding B. It jumps at walls, pits and enemies just ahead, holding A for a
    random number of frames (in SMB a longer press makes a higher jump), and lets enemies that fly
    overhead pass. Often it walks, waits, steps or runs back for a while (MOODS), so the camera does not
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
    push: float = 0.0  # chance that a new mood is "push" (PUSH); 0 draws nothing extra: recordings as before

    def act(self, game: Game, frames: int) -> int:
        """The buttons to hold for the next `frames` emulated frames."""
        on_ground = game.on_ground
        self.mood_left -= frames
        if self.mood_left <= 0 and on_ground:  # no change of mind in mid-air: that is how Mario falls
            names = list(MOODS)
            if self.push and self.rng.random() < self.push:
                self.mood, (low, high) = "push", PUSH[1]
            else:
                self.mood = names[self.rng.choice(len(names), p=[MOODS[n][1] for n in names])]
                low, high = MOODS[self.mood][2]
            self.mood_left = int(self.rng.integers(low, high))
        buttons = PUSH[0] if self.mood == "push" else MOODS[self.mood][0]

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
        elif not self.last & A and on_ground and self.mood != "push":  # SMB jumps when A goes down: up first
            hold = self.jump_hold(game, ahead, enemy_ahead) if buttons & RIGHT else self.fun_jump()
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
        return self.fun_jump()

    def fun_jump(self) -> int:
        """Now and then a jump of random height (A held 4-30 frames) for no reason, else 0."""
        return int(self.rng.integers(4, 30)) if self.rng.random() < FUN_JUMP else 0


__all__ = ["Player", "MOODS", "PUSH"]
