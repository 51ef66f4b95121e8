"""How a training run stops before its budget: asked to (Ctrl-C, SIGTERM), a loss that diverged, a batch that does
not fit in memory. Each ends with a checkpoint a resumed run can start from, or with an error that says what to
change. mariofm.train raises and handles them; they live here so that its loop reads on one screen.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mariofm.checkpoint import CHECKPOINT
from mariofm.config import Config
from mariofm.device import Dist


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: the settings (learning rate, clipping) do not work."""


class OutOfMemory(ValueError):
    """A batch does not fit in the GPU's memory: the settings ask for more than the device has."""


def out_of_memory(cfg: Config, dist: Dist, dev: torch.device) -> OutOfMemory:
    """The error for a micro-batch that did not fit on `dev`, naming the next grad_accum that divides the batch."""
    local = cfg.batch_size // dist.world
    more = next((k for k in range(cfg.grad_accum + 1, local + 1) if local % k == 0), None)
    fix = f"--set grad_accum={more} (micro-batches of {local // more} clips whose gradients add up to the " \
          f"same step), or " if more else ""
    return OutOfMemory(f"{dev} ran out of memory on micro-batches of {local // cfg.grad_accum} clips. Try "
                       f"{fix}a smaller --set batch_size=..., or --set recompute_activations=true")


@contextlib.contextmanager
def stop_requests():
    """While training, Ctrl-C and SIGTERM ask the loop to stop after the current step (so a checkpoint never
    holds half a step); a second Ctrl-C stops at once. Yields a dict whose "stop" turns True when asked."""
    asked = {"stop": False}

    def handler(signum, frame):
        if asked["stop"]:
            raise KeyboardInterrupt
        asked["stop"] = True
        tqdm.write("stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

    try:
        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread (some notebook runners): leave signals alone
        yield asked
        return
    try:
        yield asked
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def diverged(loss: float, step: int, out: Path, last_saved: int | None, every: int) -> TrainingDiverged:
    """The error for a loss that became `loss` at `step`, naming the checkpoint that is left, if any."""
    kept = f"The last checkpoint, {out / CHECKPOINT} at step {last_saved}, is untouched: resuming starts " \
           f"there." if last_saved is not None else f"No checkpoint was written (the first comes at step {every})."
    return TrainingDiverged(f"the loss became {loss} at step {step}; stopping. {kept} Try a lower --set lr=... "
                            f"or --set grad_clip=...")
